"""Cluster inventory: per node, which product, how many GPUs allocatable, used and free, and the
node's free CPU and memory.

Capacity is per node: allocatable minus what the node's non-terminated pods request. A Ready node
without GPUs whose architecture (and NFD CPU features, where labelled) match a CPU product counts
as one engine slot of that product (allocatable 1); whether a CPU recipe fits it is decided by its
free CPU and memory.
A node whose GPUs are partitioned (NVIDIA MIG under GPU Feature Discovery's single or mixed
strategy; AMD Instinct compute partition modes) offers its partitions as devices of their own: each
kind of device a node advertises is one pool (a NodeGpus entry; a mixed-strategy node can have
several, one per MIG profile, plus its whole GPUs).
Cordoned and NotReady nodes, nodes with untolerated NoSchedule/NoExecute taints, nodes outside the
workload's nodeSelector and nodes whose product or partition profile is unknown do not count (they
are listed with the reason).
Pure: works on Node and Pod objects as the API server serialises them (dicts)."""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, NamedTuple

from aim_engine.cluster.detect import (
    AMD_MIXED_RESOURCE,
    AMD_PARTITION_LABEL,
    MIG_RESOURCE_PREFIX,
    Detection,
    detect_cpu,
    detect_node,
)
from aim_engine.contract import LabelIn, NodeAffinity, NodeTerm
from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import GpuProduct, HardwareCatalog
from aim_engine.domain.quantity import parse_quantity

HOSTNAME_LABEL = "kubernetes.io/hostname"
# Taints GPU operators put on GPU nodes; the workload tolerates them (the chart adds tolerations).
DEFAULT_TOLERATED_TAINTS: frozenset[str] = frozenset({"nvidia.com/gpu", "amd.com/gpu"})
# A toleration with no key and operator Exists tolerates every taint (`--tolerate-taint '*'`).
ALL_TAINTS = "*"


@dataclass(frozen=True, slots=True)
class NodeGpus:
    name: str
    product: GpuProduct | None
    vendor: str | None
    resource: str | None
    allocatable: int
    used: int
    source: str
    usable: bool
    reason: str = ""
    notes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The node's labels that say which device this pool is (ANDed in a node affinity term).
    identity: tuple[tuple[str, str], ...] = ()
    # For a partition: the label or resource name that says which partition mode it is.
    partition_source: str = ""
    # Allocatable minus the requests of the node's pods (cores; bytes).
    cpu_free: Decimal = Decimal(0)
    memory_free: Decimal = Decimal(0)

    @property
    def free(self) -> int:
        return max(0, self.allocatable - self.used)


@dataclass(frozen=True, slots=True)
class ProductCapacity:
    product: GpuProduct
    nodes: int
    allocatable: int
    free: int
    free_sorted: tuple[int, ...]  # free GPUs of each usable node, ascending
    allocatable_sorted: tuple[int, ...]

    @property
    def max_free(self) -> int:
        return self.free_sorted[-1] if self.free_sorted else 0

    @property
    def max_allocatable(self) -> int:
        return self.allocatable_sorted[-1] if self.allocatable_sorted else 0

    def nodes_with_free(self, gpus: int) -> int:
        return len(self.free_sorted) - bisect.bisect_left(self.free_sorted, gpus)

    def nodes_with_allocatable(self, gpus: int) -> int:
        return len(self.allocatable_sorted) - bisect.bisect_left(self.allocatable_sorted, gpus)


@dataclass(frozen=True, slots=True)
class Inventory:
    nodes: tuple[NodeGpus, ...]
    products: Mapping[str, ProductCapacity]

    def capacity(self, product_name: str) -> ProductCapacity | None:
        return self.products.get(product_name)

    @property
    def product_names(self) -> list[str]:
        return sorted(self.products)


def product_node_affinity(
    inventory: Inventory, product_name: str, *, resource: str | None = None, preferred_hostname: str | None = None
) -> NodeAffinity:
    """How to keep a pod on this cluster's nodes of one GPU product, as nodeSelectorTerms (ORed):
    for each label that identified the product on some node, the values it has on those nodes.
    Cordoned or busy nodes count too (they may take the pod later). No terms when no node of the
    product is known. `resource`: only the nodes advertising the product by that name (a partition
    is nvidia.com/gpu on single-strategy nodes, nvidia.com/mig-3g.40gb on mixed ones).
    `preferred_hostname`: the node the pods should go to first (dense packing)."""
    by_keys: dict[tuple[str, ...], dict[str, set[str]]] = {}
    for n in inventory.nodes:
        if n.product is None or n.product.name != product_name or not n.identity:
            continue
        if resource is not None and n.resource != resource:
            continue
        values = by_keys.setdefault(tuple(k for k, _ in n.identity), {})
        for key, value in n.identity:
            values.setdefault(key, set()).add(value)
    preferred = (NodeTerm((LabelIn(HOSTNAME_LABEL, (preferred_hostname,)),)),) if preferred_hostname else ()
    return NodeAffinity(
        tuple(
            NodeTerm(tuple(LabelIn(key, tuple(sorted(values[key]))) for key in keys)) for keys, values in sorted(by_keys.items())
        ),
        preferred,
    )


def _labels(node: Mapping[str, Any]) -> dict[str, str]:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _is_ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _quantity(value: object, where: str) -> Decimal:
    return parse_quantity(value, field=where) if value is not None else Decimal(0)


def _node_quantity(value: object, node_name: str, res: str) -> Decimal:
    if value is None:
        return Decimal(0)
    try:
        return parse_quantity(value)
    except InputError:
        return parse_quantity(value, field=f"node {node_name} allocatable {res}")


def _count(value: object, where: str) -> int:
    q = parse_quantity(value, field=where)
    return int(q) if q >= 0 else 0


_ZERO = Decimal(0)


class PodRequests(NamedTuple):
    gpus: dict[str, int]  # device resource -> count
    cpu: Decimal  # cores
    memory: Decimal  # bytes


def _pod_requests(pod: Mapping[str, Any], resources: frozenset[str]) -> PodRequests:
    """Effective requests of a pod, in one pass over its containers: max(sum over containers, max
    over init containers) for each GPU resource, cores and memory. For extended resources (the
    devices) a limit without a request means request = limit; only the resources a container names
    are looked at (a pod names one or two; the catalog knows dozens). This runs once per pod of the
    cluster: no Decimal is built for a zero, and init containers are walked only where there are some."""
    spec = pod.get("spec") or {}
    gpus: dict[str, int] = {}
    cpu = memory = _ZERO
    for container in spec.get("containers") or ():
        r = container.get("resources")
        if r:
            c, m = _container_requests(r, pod, resources, gpus, init=False)
            cpu, memory = cpu + c, memory + m
    init = spec.get("initContainers")
    if init:
        init_gpus: dict[str, int] = {}
        init_cpu = init_memory = _ZERO
        for container in init:
            r = container.get("resources")
            if r:
                c, m = _container_requests(r, pod, resources, init_gpus, init=True)
                init_cpu, init_memory = max(init_cpu, c), max(init_memory, m)
        for res, n in init_gpus.items():
            gpus[res] = max(gpus.get(res, 0), n)
        cpu, memory = max(cpu, init_cpu), max(memory, init_memory)
    if 0 in gpus.values():
        gpus = {res: n for res, n in gpus.items() if n}
    return PodRequests(gpus=gpus, cpu=cpu, memory=memory)


def _container_requests(
    r: Mapping[str, Any], pod: Mapping[str, Any], resources: frozenset[str], gpus: dict[str, int], *, init: bool
) -> tuple[Decimal, Decimal]:
    """One container's cores and memory requested; its devices added to `gpus` (summed over app
    containers, the largest of init containers)."""
    requests = r.get("requests") or {}
    c = m = _ZERO
    for res, value in requests.items():  # one pass: devices, cores, memory
        if res in resources:
            n = _device_count(value, pod, res)
            gpus[res] = max(gpus.get(res, 0), n) if init else gpus.get(res, 0) + n
        elif res == "cpu":
            c = _core_quantity(value, pod, res)
        elif res == "memory":
            m = _core_quantity(value, pod, res)
    limits = r.get("limits")
    if limits:
        for res, value in limits.items():  # a device limit without a request
            if res in resources and res not in requests:
                n = _device_count(value, pod, res)
                gpus[res] = max(gpus.get(res, 0), n) if init else gpus.get(res, 0) + n
    return c, m


def _device_count(value: object, pod: Mapping[str, Any], res: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():  # how the API server serialises a device count
        return int(value)
    meta = pod.get("metadata") or {}
    return _count(value, f"pod {meta.get('namespace')}/{meta.get('name')} {res}")


def _core_quantity(value: object, pod: Mapping[str, Any], res: str) -> Decimal:
    if value is None:
        return Decimal(0)
    try:
        return parse_quantity(value)
    except InputError:
        meta = pod.get("metadata") or {}
        return parse_quantity(value, field=f"pod {meta.get('namespace')}/{meta.get('name')} {res}")


def _resource_for(catalog: HardwareCatalog, product: GpuProduct | None, vendor: str | None) -> str | None:
    if product is not None:
        return product.resource
    for name, res in catalog.vendor_resources.items():
        if name == vendor:
            return res
    return None


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class Usage:
    """What the pods on each node request: GPUs by resource, and cores and memory."""

    gpus: Mapping[str, Mapping[str, int]]
    cores: Mapping[str, tuple[Decimal, Decimal]]


def pod_usage(
    pods: Sequence[Mapping[str, Any]], *, resources: frozenset[str], reclaim_selector: Mapping[str, str] | None
) -> Usage:
    """Requests of the non-terminated, scheduled pods, by node. Pods being deleted do not count:
    their devices are free within their grace period, and the scheduler places a new pod there once
    they are gone (so an install right after an uninstall selects what the old release held). Pods
    matching `reclaim_selector` (the release's own workload, which an upgrade replaces) do not count."""
    gpus: dict[str, dict[str, int]] = {}
    cores: dict[str, tuple[Decimal, Decimal]] = {}
    for pod in pods:
        if type(pod) is not dict and not isinstance(pod, Mapping):  # dict first: the ABC check is slow
            raise InputError("pod entries must be objects")
        node_name = (pod.get("spec") or {}).get("nodeName")
        meta = pod.get("metadata") or {}
        if not node_name or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
            continue
        if reclaim_selector and _matches(meta.get("labels") or {}, reclaim_selector):
            continue
        asked = _pod_requests(pod, resources)
        if asked.gpus:
            per_node = gpus.setdefault(node_name, {})
            for res, n in asked.gpus.items():
                per_node[res] = per_node.get(res, 0) + n
        before = cores.get(node_name)
        cores[node_name] = (asked.cpu, asked.memory) if before is None else (before[0] + asked.cpu, before[1] + asked.memory)
    return Usage(gpus=gpus, cores=cores)


@dataclass(frozen=True, slots=True)
class Pool:
    """One kind of device a node advertises: its product (a whole GPU or a partition), the
    resource it is requested as, how many are allocatable, and the labels that say so."""

    product: GpuProduct | None
    resource: str | None
    allocatable: int
    identity: tuple[tuple[str, str], ...]
    reason: str = ""  # why it cannot be used whatever the node's state
    notes: tuple[str, ...] = ()
    # For a partition: the label or resource name that says which partition mode it is.
    partition_source: str = ""


def _pools(
    catalog: HardwareCatalog, det: Detection, labels: Mapping[str, str], alloc: Mapping[str, Any], name: str
) -> list[Pool]:
    """The device pools of a GPU node (a node without a detected product is one pool of unknown
    devices of its vendor)."""
    physical = det.product
    identity = ((det.source, labels[det.source]),) if det.source in labels else ()

    def count(res: str) -> int:
        return _count(alloc[res], f"node {name} allocatable {res}") if res in alloc else 0

    if physical is None:
        resource = _resource_for(catalog, None, det.vendor)
        return [Pool(product=None, resource=resource, allocatable=count(resource) if resource else 0, identity=identity)]
    if det.mig_profile:  # single strategy: every nvidia.com/gpu is an instance of that profile
        part = catalog.partition_of(physical, "mig", det.mig_profile)
        reason = "" if part else f"MIG profile {det.mig_profile} of {physical.name} is not in recipes/hardware/gpus.yaml"
        resource = physical.resource
        pool = Pool(
            product=part or physical,
            resource=resource,
            allocatable=count(resource),
            identity=identity,
            reason=reason,
            partition_source=det.source,
        )
        return [pool]
    pools: list[Pool] = []
    if physical.vendor == "nvidia":
        for res in sorted(r for r in alloc if r.startswith(MIG_RESOURCE_PREFIX)):
            profile = res[len(MIG_RESOURCE_PREFIX) :]
            part = catalog.partition_of(physical, "mig", profile)
            pools.append(
                Pool(
                    product=part or physical,
                    resource=res,
                    allocatable=count(res),
                    identity=identity,
                    reason="" if part else f"MIG profile {profile} of {physical.name} is not in recipes/hardware/gpus.yaml",
                    partition_source=res,
                )
            )
    if physical.vendor == "amd":
        # "mixed" naming: one resource per partition style (amd.com/cpx_nps4; amd.com/spx_nps1 is whole GPUs)
        for res in sorted(alloc):
            m = AMD_MIXED_RESOURCE.match(res)
            if m:
                pools.append(
                    _amd_pool(
                        catalog,
                        physical=physical,
                        compute=m.group("compute"),
                        memory=m.group("memory"),
                        resource=res,
                        allocatable=count(res),
                        identity=identity,
                        source=res,
                    )
                )
        # "single" naming: every partition is an amd.com/gpu; the labeller's label says which style
        style = labels.get(AMD_PARTITION_LABEL, "").strip().lower()
        compute, _, memory = style.partition("_")
        if compute and compute != "spx" and not pools:
            label = ((AMD_PARTITION_LABEL, labels[AMD_PARTITION_LABEL]),)
            pool = _amd_pool(
                catalog,
                physical=physical,
                compute=compute,
                memory=memory,
                resource=physical.resource,
                allocatable=count(physical.resource),
                identity=(*identity, *label),
                source=AMD_PARTITION_LABEL,
            )
            return [_vram_checked(catalog, pool, labels)]
        if not style and not pools and AMD_VRAM_LABEL in labels:
            # The partition label is opt-in (-compute-memory-partition): without it, the per-device
            # memory the labeller reports says whether the amd.com/gpu devices are whole GPUs or
            # partitions. The labels' memory wins; the explanation says so.
            return [_amd_pool_from_vram(catalog, physical, labels, count(physical.resource), identity)]
    whole = count(physical.resource)
    if whole or not pools:
        pools.insert(0, Pool(product=physical, resource=physical.resource, allocatable=whole, identity=identity))
    return pools


# AMD GPU node labeller: the memory of each device the node advertises ("192G"; a CPX partition of
# an MI300X reports "24G"). GPU Feature Discovery's nvidia.com/gpu.memory is checked in detect.py.
AMD_VRAM_LABEL = "amd.com/gpu.vram"
_VRAM = re.compile(r"^\s*(?P<n>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[MGT])i?B?\s*$", re.IGNORECASE)
# A reported memory within this fraction of a product's is that product (labels round to the GB).
VRAM_TOLERANCE = Decimal("0.1")
# The most GPUs one node holds (8-GPU OAM and HGX boards; 10- and 16-GPU PCIe servers).
MAX_GPUS_PER_NODE = 16


def vram_mib(value: str) -> int | None:
    """The amd.com/gpu.vram label's memory in MiB ("192G" -> 196608); None when unreadable."""
    m = _VRAM.match(value)
    if not m:
        return None
    scale = {"M": 1, "G": 1024, "T": 1024 * 1024}[m.group("unit").upper()]
    return int(Decimal(m.group("n")) * scale)


def _holds_vram(product: GpuProduct, mib: int) -> bool:
    return abs(mib - product.memory_mib) <= product.memory_mib * VRAM_TOLERANCE


def _amd_pool_from_vram(
    catalog: HardwareCatalog,
    physical: GpuProduct,
    labels: Mapping[str, str],
    allocatable: int,
    identity: tuple[tuple[str, str], ...],
) -> Pool:
    raw = labels[AMD_VRAM_LABEL]
    identity = (*identity, (AMD_VRAM_LABEL, raw))
    mib = vram_mib(raw)
    if mib is None:
        return Pool(
            product=physical,
            resource=physical.resource,
            allocatable=allocatable,
            identity=identity,
            reason=f"{AMD_VRAM_LABEL}={raw} is not a memory size (expected e.g. 192G)",
        )
    if _holds_vram(physical, mib):
        return Pool(product=physical, resource=physical.resource, allocatable=allocatable, identity=identity)
    for part in catalog.partitions_of(physical):
        if part.partition is not None and part.partition.kind == "amd" and _holds_vram(part, mib):
            note = (
                f"{part.partition.profile} inferred from {AMD_VRAM_LABEL}={raw} ({part.memory_mib} MiB a device, not "
                f"{physical.name}'s {physical.memory_mib}); {AMD_PARTITION_LABEL} is absent (the labeller's "
                "-compute-memory-partition flag labels it)"
            )
            return Pool(
                product=part,
                resource=physical.resource,
                allocatable=allocatable,
                identity=identity,
                notes=(note,),
                partition_source=f"{AMD_VRAM_LABEL} (inferred)",
            )
    modes = ", ".join(
        f"{p.partition.profile} {p.memory_mib} MiB" for p in catalog.partitions_of(physical) if p.partition is not None
    )
    return Pool(
        product=physical,
        resource=physical.resource,
        allocatable=allocatable,
        identity=identity,
        reason=f"{AMD_VRAM_LABEL}={raw} matches neither {physical.name} ({physical.memory_mib} MiB) nor a partition "
        f"of it ({modes or 'none known'}); label {AMD_PARTITION_LABEL} or check the node labeller",
    )


def _vram_checked(catalog: HardwareCatalog, pool: Pool, labels: Mapping[str, str]) -> Pool:
    """A labelled partition pool against amd.com/gpu.vram. Where they disagree, fit never plans
    on memory a device may not have: more memory than the partition's is noted and the partition
    kept (under NPS1 a partition may report the GPU's whole memory); less is believed — the
    partition mode whose memory it is, or the node refused when none is."""
    raw = labels.get(AMD_VRAM_LABEL)
    mib = vram_mib(raw) if raw else None
    product = pool.product
    if pool.reason or product is None or product.partition is None or mib is None or _holds_vram(product, mib):
        return pool
    said = f"{AMD_PARTITION_LABEL}={labels[AMD_PARTITION_LABEL]} says {product.name} ({product.memory_mib} MiB a device)"
    if mib > product.memory_mib:
        note = f"{said} but {AMD_VRAM_LABEL}={raw}; planned at the partition's {product.memory_mib} MiB"
        return replace(pool, notes=(*pool.notes, note))
    for part in catalog.partitions_of(product.physical):
        if part.partition is not None and part.partition.kind == "amd" and _holds_vram(part, mib):
            note = f"{said} but {AMD_VRAM_LABEL}={raw}: the devices' memory wins, planned as {part.name}"
            return replace(pool, product=part, notes=(*pool.notes, note), partition_source=f"{AMD_VRAM_LABEL} (over the label)")
    return replace(pool, reason=f"{said} but {AMD_VRAM_LABEL}={raw}, less than any mode offers; fix the label that is wrong")


def _plausible(pool: Pool, node_name: str) -> Pool:
    """More devices than the product can partition into on one node is a mislabelled node (whole
    GPUs counted where partitions are advertised): refused, with the node's name."""
    product = pool.product
    if product is None or pool.reason or product.is_cpu:
        return pool
    per_gpu = math.ceil(1 / product.gpu_share)
    most = MAX_GPUS_PER_NODE * per_gpu
    if pool.allocatable <= most:
        return pool
    what = f"{per_gpu} {product.name} per GPU" if per_gpu > 1 else f"whole {product.name} GPUs"
    return replace(
        pool,
        reason=f"node {node_name} advertises {pool.allocatable} {pool.resource} as {what}, more than {most} "
        f"({MAX_GPUS_PER_NODE} GPUs a node); the devices are partitions or the labels are wrong — label the "
        "partition mode or fix the node's labels",
    )


def _amd_pool(
    catalog: HardwareCatalog,
    *,
    physical: GpuProduct,
    compute: str,
    memory: str,
    resource: str,
    allocatable: int,
    identity: tuple[tuple[str, str], ...],
    source: str,
) -> Pool:
    """The pool of an AMD partition style (compute mode, memory mode); SPX is the whole GPU.
    `source`: the label or resource name that says the style."""
    if compute.lower() == "spx":
        return Pool(product=physical, resource=resource, allocatable=allocatable, identity=identity)
    part = catalog.partition_of(physical, "amd", compute)
    mode = compute.upper()
    reason = "" if part else f"compute partition mode {mode} of {physical.name} is not in recipes/hardware/gpus.yaml"
    if part is not None and part.partition is not None and memory and memory.upper() not in part.partition.memory_modes:
        reason = f"{mode} with memory mode {memory.upper()} is not a mode {physical.name} offers"
    return Pool(
        product=part or physical,
        resource=resource,
        allocatable=allocatable,
        identity=identity,
        reason=reason,
        partition_source=source,
    )


def _unusable_reason(
    node: Mapping[str, Any],
    pool: Pool,
    *,
    labels: Mapping[str, str],
    tolerated_taints: frozenset[str],
    node_selector: Mapping[str, str],
) -> str:
    """Why the pool cannot take a recipe's pods ('' when it can)."""
    spec = node.get("spec") or {}
    if pool.allocatable == 0 and pool.product is None:
        return "no GPUs"
    if pool.product is None:
        return "GPU product not recognised"
    if pool.reason:
        return pool.reason
    if pool.allocatable == 0:
        return f"labels say {pool.product.name} but {pool.resource} allocatable is 0 (device plugin not running?)"
    if spec.get("unschedulable"):
        return "cordoned"
    if not _is_ready(node):
        return "NotReady"
    outside = [f"{k}={v}" for k, v in sorted(node_selector.items()) if labels.get(k) != v]
    if outside:
        return f"not selected by the workload's nodeSelector ({', '.join(outside)})"
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not ({taint.get("key"), ALL_TAINTS} & tolerated_taints):
            return f"taint {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')} not tolerated"
    return ""


def node_views(
    catalog: HardwareCatalog,
    node: Mapping[str, Any],
    usage: Usage,
    *,
    tolerated_taints: frozenset[str],
    node_selector: Mapping[str, str] | None = None,
    memo: dict[Any, tuple[Detection, list[Pool]]] | None = None,
) -> list[NodeGpus]:
    """One node's device pools: its product (a GPU product or partition, or a CPU product when it
    has no GPUs), devices allocatable and used, free cores and memory, and whether it is usable.
    `memo`: detections by the labels (but the hostname) and devices, shared across one inventory."""
    if type(node) is not dict and not isinstance(node, Mapping):  # dict first: the ABC check is slow
        raise InputError("node entries must be objects")
    name = str((node.get("metadata") or {}).get("name") or "")
    if not name:
        raise InputError("a node without metadata.name")
    labels = _labels(node)
    alloc_raw = (node.get("status") or {}).get("allocatable") or {}
    known = catalog.gpu_resources
    gpu_alloc = {
        res: int(v) if isinstance(v, str) and v.isdigit() else _count(v, f"node {name} allocatable {res}")
        for res, v in alloc_raw.items()
        if res in known
    }
    device_alloc = {
        k: v
        for k, v in alloc_raw.items()
        if k in known or ("/" in k and (k.startswith(MIG_RESOURCE_PREFIX) or AMD_MIXED_RESOURCE.match(k)))
    }
    # Nodes of one node pool share their labels (but the hostname) and devices: detect them once.
    # Keyed by sets (no sort per node); a device count that is not a plain value is keyed as text.
    key: tuple[frozenset[tuple[str, Any]], ...]
    hostname = {(HOSTNAME_LABEL, labels.get(HOSTNAME_LABEL))}
    try:
        key = (frozenset(labels.items()) - hostname, frozenset(device_alloc.items()))
    except TypeError:
        key = (frozenset(labels.items()) - hostname, frozenset((str(k), str(v)) for k, v in device_alloc.items()))
    found = memo.get(key) if memo is not None else None
    if found is None:
        det = detect_node(catalog, labels, gpu_alloc)
        found = (det, [_plausible(p, name) for p in _pools(catalog, det, labels, device_alloc, name)])
        if memo is not None and not any(p.reason.startswith(f"node {name} ") for p in found[1]):
            memo[key] = found
    det, pools = found
    if det.product is None and not any(gpu_alloc.values()) and det.vendor is None:
        cpu_det = detect_cpu(catalog, labels)
        if cpu_det.product is not None:  # one engine slot; whether a recipe fits is its cores and memory
            det = cpu_det
            pools = [
                Pool(
                    product=cpu_det.product,
                    resource=cpu_det.product.resource,
                    allocatable=1,
                    identity=((HOSTNAME_LABEL, labels.get(HOSTNAME_LABEL, name)),),
                )
            ]
        elif cpu_det.notes:
            det = Detection(product=None, vendor=None, source="none", notes=det.notes + cpu_det.notes)
    cpu_used, memory_used = usage.cores.get(name, (_ZERO, _ZERO))
    cpu_free = max(_ZERO, _node_quantity(alloc_raw.get("cpu"), name, "cpu") - cpu_used)
    memory_free = max(_ZERO, _node_quantity(alloc_raw.get("memory"), name, "memory") - memory_used)
    out = []
    for pool in pools:
        reason = _unusable_reason(node, pool, labels=labels, tolerated_taints=tolerated_taints, node_selector=node_selector or {})
        used = 0 if pool.product is not None and pool.product.is_cpu else usage.gpus.get(name, {}).get(pool.resource or "", 0)
        out.append(
            NodeGpus(
                name=name,
                product=pool.product,
                vendor=det.vendor if pool.product is None else pool.product.vendor,
                resource=pool.resource,
                allocatable=pool.allocatable,
                used=used,
                source=det.source,
                usable=not reason,
                reason=reason,
                notes=det.notes + pool.notes,
                labels=labels,
                identity=pool.identity,
                partition_source=pool.partition_source if pool.product is not None and pool.product.is_partition else "",
                cpu_free=cpu_free,
                memory_free=memory_free,
            )
        )
    return out


def _capacities(nodes: Sequence[NodeGpus]) -> dict[str, ProductCapacity]:
    grouped: dict[str, list[NodeGpus]] = {}
    for entry in nodes:
        if entry.usable and entry.product is not None:
            grouped.setdefault(entry.product.name, []).append(entry)
    return {
        name: ProductCapacity(
            product=members[0].product,  # type: ignore[arg-type]
            nodes=len(members),
            allocatable=sum(m.allocatable for m in members),
            free=sum(m.free for m in members),
            free_sorted=tuple(sorted(m.free for m in members)),
            allocatable_sorted=tuple(sorted(m.allocatable for m in members)),
        )
        for name, members in grouped.items()
    }


def build_inventory(
    catalog: HardwareCatalog,
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    *,
    reclaim_selector: Mapping[str, str] | None = None,
    tolerated_taints: frozenset[str] = DEFAULT_TOLERATED_TAINTS,
    node_selector: Mapping[str, str] | None = None,
    ignore_usage: bool = False,
) -> Inventory:
    """Nodes and pods -> inventory. Pods matching `reclaim_selector` (the release's own workload,
    which an upgrade replaces) do not count as using anything; with `ignore_usage` no pod does.
    With `node_selector` (the workload's nodeSelector) only the nodes it selects count."""
    usage = (
        Usage(gpus={}, cores={})
        if ignore_usage
        else pod_usage(pods, resources=frozenset(catalog.gpu_resources), reclaim_selector=reclaim_selector)
    )
    memo: dict[Any, tuple[Detection, list[Pool]]] = {}
    out = sorted(
        (
            pool
            for n in nodes
            for pool in node_views(catalog, n, usage, tolerated_taints=tolerated_taints, node_selector=node_selector, memo=memo)
        ),
        key=lambda n: (n.name, n.product.name if n.product else ""),
    )
    return Inventory(nodes=tuple(out), products=_capacities(out))


def split_list(doc: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Nodes and pods from `kubectl get nodes,pods -A -o json` (a v1 List, or a NodeList/PodList)."""
    if not isinstance(doc, Mapping):
        raise InputError("cluster snapshot: expected a JSON object (kubectl get nodes,pods -A -o json)")
    kind = doc.get("kind")
    items = doc.get("items")
    if kind not in ("List", "NodeList", "PodList") or not isinstance(items, list):
        raise InputError(
            f"cluster snapshot: expected kind List with items (kubectl get nodes,pods -A -o json), got kind {kind!r}"
        )
    default = {"NodeList": "Node", "PodList": "Pod"}.get(str(kind))
    nodes: list[Mapping[str, Any]] = []
    pods: list[Mapping[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InputError(f"cluster snapshot: items[{i}] is not an object")
        item_kind = item.get("kind", default)
        if item_kind == "Node":
            nodes.append(item)
        elif item_kind == "Pod":
            pods.append(item)
    return nodes, pods
