"""Accelerator products: what each is, what it can run, how nodes advertise it. Data lives in
recipes/hardware/gpus.yaml; this module gives it types and answers questions about it.

Most products are GPUs (kind "gpu"): a node advertises them as an extended resource
(amd.com/gpu, nvidia.com/gpu) and a recipe asks for gpu_count of them. A CPU product (kind "cpu")
is a node's processors serving with vLLM's CPU build: no extended resource, one engine per pod,
memory and cores from the node's allocatable (a recipe's gpu_count is 1: the engine instance)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Any, Literal

from aim_engine.domain.errors import InputError
from aim_engine.domain.quantity import MIB

Vendor = Literal["amd", "nvidia", "cpu"]
Kind = Literal["gpu", "cpu"]
GPU_VENDORS: tuple[Vendor, ...] = ("amd", "nvidia")
PRECISIONS: tuple[str, ...] = ("fp16", "bf16", "fp8", "int8", "int4", "mxfp4")

# Bytes per weight. 4-bit formats carry block scales: MXFP4 uses one 8-bit scale per 32 values
# (4.25 bits); group-128 INT4 (AWQ/GPTQ) one 16-bit scale and zero per 128 values (~4.25 bits).
BYTES_PER_PARAM: dict[str, Decimal] = {
    "fp16": Decimal(2),
    "bf16": Decimal(2),
    "fp8": Decimal(1),
    "int8": Decimal(1),
    "int4": Decimal("0.53125"),
    "mxfp4": Decimal("0.53125"),
}

# Lower precision first: AIM's rule "the lowest precision the hardware supports wins".
PRECISION_ORDER: dict[str, int] = {"mxfp4": 0, "int4": 1, "fp8": 2, "int8": 3, "bf16": 4, "fp16": 5}

# Environment vLLM documents for AMD Instinct GPUs (ROCm "vLLM V1 performance optimization").
AMD_DEFAULT_ENV: dict[str, str] = {
    "HIP_FORCE_DEV_KERNARG": "1",
    "TORCH_BLAS_PREFER_HIPBLASLT": "1",
    "SAFETENSORS_FAST_GPU": "1",
    "VLLM_ROCM_USE_AITER": "1",
}
AMD_MULTI_GPU_ENV: dict[str, str] = {"NCCL_MIN_NCHANNELS": "112"}


@dataclass(frozen=True, slots=True)
class Detection:
    pci_device_ids: tuple[str, ...]
    product_name_patterns: tuple[re.Pattern[str], ...]
    gke_accelerators: tuple[str, ...]
    instance_types: tuple[str, ...]
    # CPU products: the node's kubernetes.io/arch, and Node Feature Discovery CPU features the
    # node must have when NFD labels it (feature.node.kubernetes.io/cpu-cpuid.<FEATURE>=true).
    cpu_arch: str = ""
    cpu_features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    """What a partition of a physical GPU is: NVIDIA MIG instance profiles (`3g.40gb`) and AMD
    Instinct compute partition modes (`CPX`). A partition is a device of its own to Kubernetes
    (one `nvidia.com/mig-3g.40gb`, one logical `amd.com/gpu`), with a share of the GPU's compute
    and memory; `max_per_gpu` of them fit on one GPU."""

    kind: Literal["mig", "amd"]
    profile: str  # "3g.40gb" (MIG) or "CPX" (AMD compute mode)
    compute_share: Decimal  # of the whole GPU's compute (SMs, XCDs)
    bandwidth_share: Decimal  # of its memory bandwidth
    max_per_gpu: int
    memory_modes: tuple[str, ...] = ()  # AMD: the NPS modes valid with this compute mode

    @property
    def gpu_share(self) -> Decimal:
        """How much of the GPU one partition uses up: the larger of its compute and memory shares
        (a MIG 3g.40gb takes 3/7 of the compute but half the memory: two fit, not more)."""
        return max(self.compute_share, self.bandwidth_share)

    @property
    def label(self) -> str:
        return f"MIG {self.profile}" if self.kind == "mig" else f"{self.profile} partition"


@dataclass(frozen=True, slots=True, eq=False)
class GpuProduct:
    """Compared and hashed by identity: each product exists once in its HardwareCatalog, which lets
    memory plans be memoised per product.

    A partition product (`parent` set) is one partition profile of a physical GPU, derived from
    gpus.yaml's `partitions`: its memory, compute and bandwidth are the partition's; `resource` is
    the per-profile resource name (the device plugins' "mixed" strategy) and `alt_resources` the
    vendor's plain resource that nodes of the "single" strategy advertise it as; tensor parallelism
    across partitions is bounded by `max_tp` (MIG instances cannot be joined: 1)."""

    name: str
    vendor: Vendor
    resource: str
    memory_mib: int
    bandwidth_gbps: int
    peak_tflops: Mapping[str, int]
    arch: str
    interconnect_kind: str
    interconnect_gbps: int
    native_precisions: frozenset[str]
    weight_only_precisions: frozenset[str]
    detection: Detection = field(repr=False)
    kind: Kind = "gpu"
    parent: GpuProduct | None = field(default=None, repr=False)
    partition: Partition | None = None
    alt_resources: tuple[str, ...] = ()
    max_tp: int = 0  # 0: no bound beyond the GPUs of a node

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def is_partition(self) -> bool:
        return self.partition is not None

    @property
    def resources(self) -> tuple[str, ...]:
        """Every resource name a node may advertise this product as, the canonical one first."""
        return (self.resource, *self.alt_resources)

    def device_resource(self, *resource_maps: Mapping[str, object]) -> str:
        """The resource name a recipe or container requests this product as: the first of its
        names present in the given requests/limits, else the canonical one."""
        for name in self.resources:
            if any(name in m for m in resource_maps):
                return name
        return self.resource

    @property
    def physical(self) -> GpuProduct:
        """The whole GPU (itself, unless a partition)."""
        return self.parent if self.parent is not None else self

    @property
    def gpu_share(self) -> Decimal:
        """How much of one physical GPU one of these devices is (1 for a whole GPU)."""
        return self.partition.gpu_share if self.partition is not None else Decimal(1)

    @property
    def memory_bytes(self) -> Decimal:
        return Decimal(self.memory_mib) * MIB

    def supports(self, precision: str) -> bool:
        return precision in self.native_precisions or precision in self.weight_only_precisions

    def support_kind(self, precision: str) -> str | None:
        if precision in self.native_precisions:
            return "native"
        if precision in self.weight_only_precisions:
            return "weight-only"
        return None

    def compute_precision(self, precision: str) -> str:
        """The precision the matrix units run at for this weight precision."""
        if precision in self.native_precisions and precision in self.peak_tflops:
            return precision
        return "bf16" if "bf16" in self.peak_tflops else "fp16"


@dataclass(frozen=True)
class HardwareCatalog:
    products: tuple[GpuProduct, ...]
    vendor_pci_ids: Mapping[str, Vendor]
    vendor_resources: Mapping[Vendor, str]

    @cached_property
    def _by_norm(self) -> dict[str, GpuProduct]:
        return {_norm(p.name): p for p in self.products}

    def get(self, name: str) -> GpuProduct | None:
        return self._by_norm.get(_norm(name))

    def require(self, name: str) -> GpuProduct:
        product = self.get(name)
        if product is None:
            known = ", ".join(p.name for p in self.products)
            raise InputError(f"unknown GPU product {name!r}; known products: {known}")
        return product

    def supporting(self, precision: str) -> list[str]:
        return [p.name for p in self.products if p.supports(precision)]

    @cached_property
    def gpu_resources(self) -> frozenset[str]:
        """Every device resource name: the vendors' (amd.com/gpu, nvidia.com/gpu) and the
        per-partition ones (nvidia.com/mig-3g.40gb, amd.com/cpx_nps4)."""
        out = set(self.vendor_resources.values())
        for p in self.products:
            if not p.is_cpu:
                out.update(p.resources)
        return frozenset(out)

    def partition_of(self, parent: GpuProduct, kind: str, profile: str) -> GpuProduct | None:
        """The partition product of a physical GPU by profile ("3g.40gb", "cpx"; case-insensitive)."""
        want = profile.strip().lower()
        for p in self.products:
            if (
                p.parent is parent
                and p.partition is not None
                and p.partition.kind == kind
                and p.partition.profile.lower() == want
            ):
                return p
        return None

    def partitions_of(self, parent: GpuProduct) -> tuple[GpuProduct, ...]:
        return tuple(p for p in self.products if p.parent is parent)

    def by_resource(self, resource: str) -> tuple[GpuProduct, ...]:
        """Partition products whose own (mixed-strategy) resource name this is."""
        return tuple(p for p in self.products if p.is_partition and p.resource == resource)

    @cached_property
    def cpu_products(self) -> tuple[GpuProduct, ...]:
        return tuple(p for p in self.products if p.is_cpu)

    @cached_property
    def vendors(self) -> tuple[Vendor, ...]:
        return tuple(dict.fromkeys(p.vendor for p in self.products))

    def by_label_value(self, value: str) -> GpuProduct | None:
        """The GPU product whose name patterns match a label value (a product-name label)."""
        memo = self._label_memo
        if value not in memo:
            norm = re.sub(r"[\s_-]", "", value)
            memo[value] = next(
                (p for p in self.products if any(pat.search(norm) for pat in p.detection.product_name_patterns)), None
            )
            if len(memo) > 4096:
                memo.clear()
                return self.by_label_value(value)
        return memo[value]

    @cached_property
    def _label_memo(self) -> dict[str, GpuProduct | None]:
        return {}


@lru_cache(maxsize=1024)
def _norm(name: str) -> str:
    return re.sub(r"[\s_-]", "", name).upper()


def _as_list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a list")
    return value


MIG_MEMORY_SLICES = 8  # an NVIDIA GPU's memory is cut in 8 MIG slices
_MIG_PROFILE = re.compile(r"^[1-7]g\.[0-9]+gb$")


def _partition_product(
    parent: GpuProduct, part: Partition, *, name: str, memory_mib: int, resource: str, alt: tuple[str, ...], max_tp: int
) -> GpuProduct:
    return GpuProduct(
        name=name,
        vendor=parent.vendor,
        resource=resource,
        memory_mib=memory_mib,
        bandwidth_gbps=int(parent.bandwidth_gbps * part.bandwidth_share),
        peak_tflops={k: int(v * part.compute_share) for k, v in parent.peak_tflops.items()},
        arch=parent.arch,
        interconnect_kind=parent.interconnect_kind if max_tp != 1 else "none",
        interconnect_gbps=parent.interconnect_gbps if max_tp != 1 else 0,
        native_precisions=parent.native_precisions,
        weight_only_precisions=parent.weight_only_precisions,
        detection=Detection(pci_device_ids=(), product_name_patterns=(), gke_accelerators=(), instance_types=()),
        parent=parent,
        partition=part,
        alt_resources=alt,
        max_tp=max_tp,
    )


def _partitions(parent: GpuProduct, raw: Mapping[str, Any], *, where: str) -> list[GpuProduct]:
    """The partition products of one physical GPU (gpus.yaml `partitions`)."""
    out: list[GpuProduct] = []
    try:
        mig = _as_list(raw.get("mig"), where)
        # compute share: the profile's streaming multiprocessors over the whole GPU's (the 7g profile's)
        full_sms = max((int(e["multiprocessors"]) for e in mig), default=1)
        for i, entry in enumerate(mig):
            profile = str(entry["profile"]).lower()
            if parent.vendor != "nvidia" or not _MIG_PROFILE.match(profile):
                raise InputError(f"{where}.mig[{i}]: MIG profiles are NVIDIA's <n>g.<m>gb, got {profile!r} on {parent.name}")
            memory_slices = int(entry["memory_slices"])
            if not 1 <= memory_slices <= MIG_MEMORY_SLICES:
                raise InputError(f"{where}.mig[{i}]: memory_slices is 1 to {MIG_MEMORY_SLICES}")
            part = Partition(
                kind="mig",
                profile=profile,
                compute_share=Decimal(int(entry["multiprocessors"])) / full_sms,
                bandwidth_share=Decimal(memory_slices) / MIG_MEMORY_SLICES,
                max_per_gpu=int(entry["max_per_gpu"]),
            )
            out.append(
                _partition_product(
                    parent,
                    part,
                    name=f"{parent.name}-MIG-{profile}",
                    memory_mib=int(entry["memory_mib"]),
                    resource=f"nvidia.com/mig-{profile}",
                    alt=(parent.resource,),
                    max_tp=1,  # NCCL cannot join MIG instances: one instance per engine
                )
            )
        for i, entry in enumerate(_as_list(raw.get("amd"), where)):
            mode = str(entry["compute_mode"]).upper()
            per_gpu = int(entry["per_gpu"])
            modes = tuple(str(m).upper() for m in _as_list(entry.get("memory_modes"), where))
            if parent.vendor != "amd" or per_gpu < 2 or not modes:
                raise InputError(
                    f"{where}.amd[{i}]: an AMD compute mode splits an AMD GPU in 2 or more and names its memory modes"
                )
            part = Partition(
                kind="amd",
                profile=mode,
                compute_share=Decimal(1) / per_gpu,
                bandwidth_share=Decimal(1) / per_gpu,
                max_per_gpu=per_gpu,
                memory_modes=modes,
            )
            names = tuple(f"amd.com/{mode.lower()}_{m.lower()}" for m in modes)
            out.append(
                _partition_product(
                    parent,
                    part,
                    name=f"{parent.name}-{mode}",
                    memory_mib=parent.memory_mib // per_gpu,
                    resource=names[0],
                    alt=(*names[1:], parent.resource),
                    max_tp=int(entry.get("max_tp", 0)),
                )
            )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: malformed partition entry ({e})") from e
    return out


def parse_hardware(doc: Mapping[str, Any]) -> HardwareCatalog:
    """Build the hardware catalog from the parsed gpus.yaml document."""
    products: list[GpuProduct] = []
    for i, raw in enumerate(_as_list(doc.get("products"), "gpus.yaml products")):
        where = f"gpus.yaml products[{i}]"
        try:
            det = raw.get("detection") or {}
            precisions = raw["precisions"]
            products.append(
                GpuProduct(
                    name=str(raw["name"]),
                    vendor=raw["vendor"],
                    resource=str(raw["resource"]),
                    memory_mib=int(raw["memory_mib"]),
                    bandwidth_gbps=int(raw["bandwidth_gbps"]),
                    peak_tflops={str(k): int(v) for k, v in raw["peak_tflops"].items()},
                    arch=str(raw["arch"]),
                    interconnect_kind=str(raw["interconnect"]["kind"]),
                    interconnect_gbps=int(raw["interconnect"]["gbps"]),
                    native_precisions=frozenset(_as_list(precisions.get("native"), where)),
                    weight_only_precisions=frozenset(_as_list(precisions.get("weight_only"), where)),
                    kind="cpu" if raw.get("kind") == "cpu" else "gpu",
                    alt_resources=tuple(str(x) for x in _as_list(raw.get("alt_resources"), where)),
                    detection=Detection(
                        cpu_arch=str(det.get("cpu_arch") or ""),
                        cpu_features=tuple(str(x) for x in _as_list(det.get("cpu_features"), where)),
                        pci_device_ids=tuple(str(x).lower() for x in _as_list(det.get("pci_device_ids"), where)),
                        product_name_patterns=tuple(
                            re.compile(str(p), re.IGNORECASE) for p in _as_list(det.get("product_name_patterns"), where)
                        ),
                        gke_accelerators=tuple(str(x) for x in _as_list(det.get("gke_accelerators"), where)),
                        instance_types=tuple(str(x) for x in _as_list(det.get("instance_types"), where)),
                    ),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError, re.error) as e:
            raise InputError(f"{where}: malformed product entry ({e})") from e
        product = products[-1]
        if raw.get("kind", "gpu") not in ("gpu", "cpu"):
            raise InputError(f"{where}: kind must be gpu or cpu")
        if product.is_cpu != (product.vendor == "cpu"):
            raise InputError(f"{where}: a CPU product has vendor cpu and kind cpu; a GPU product vendor amd or nvidia")
        if product.vendor not in ("amd", "nvidia", "cpu"):
            raise InputError(f"{where}: vendor must be amd, nvidia or cpu")
        if product.is_cpu and not product.detection.cpu_arch:
            raise InputError(f"{where}: a CPU product needs detection.cpu_arch (the node's kubernetes.io/arch)")
        bad = (products[-1].native_precisions | products[-1].weight_only_precisions) - set(PRECISIONS)
        if bad:
            raise InputError(f"{where}: unknown precisions {sorted(bad)}")
        if raw.get("partitions"):
            products += _partitions(product, raw["partitions"], where=f"{where} partitions")
    vendors = doc.get("vendors") or {}
    pci: dict[str, Vendor] = {}
    resources: dict[Vendor, str] = {}
    for vendor, info in vendors.items():
        pci[str(info["pci_vendor_id"]).lower()] = vendor
        resources[vendor] = str(info["resource"])
    names = [_norm(p.name) for p in products]
    if len(set(names)) != len(names):
        raise InputError("gpus.yaml: duplicate product names")
    return HardwareCatalog(products=tuple(products), vendor_pci_ids=pci, vendor_resources=resources)
