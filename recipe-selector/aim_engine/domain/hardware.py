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


@dataclass(frozen=True, slots=True, eq=False)
class GpuProduct:
    """Compared and hashed by identity: each product exists once in its HardwareCatalog, which lets
    memory plans be memoised per product."""

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

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

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

    @property
    def gpu_resources(self) -> frozenset[str]:
        return frozenset(self.vendor_resources.values())

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
