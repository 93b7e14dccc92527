"""Manual placement: can the cluster take a workload whose GPUs are set by hand (aim_engine.auto_select
= false), and will its pods land on the product the user means?

A manual pod asks for `<vendor resource>: N` and tolerates that vendor's GPU taint; the scheduler then
puts it on any node advertising the resource with N free. That is the right place only when every
such node is of one product (or the user pinned the product with a node selector). This check runs
before the workload is created (the chart's pre-install hook in manual mode), so a configuration
the cluster cannot place fails at once with what to set, instead of a Pending pod."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aim_engine.cluster.inventory import Inventory, NodeGpus, product_node_affinity
from aim_engine.contract import ANYWHERE, NodeAffinity
from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import GpuProduct, HardwareCatalog


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementRequest:
    gpus_per_pod: int
    pods: int = 1
    vendor: str
    product: GpuProduct | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    ok: bool
    message: str
    product: str | None = None
    nodes: tuple[str, ...] = ()
    fix: str = ""
    node_affinity: NodeAffinity = ANYWHERE

    def record(self, *, request: PlacementRequest, precision: str | None, backend: str | None) -> dict[str, object]:
        """What manual mode writes to the release's recipe ConfigMap (placement.json): the hand-set
        GPUs and precision, and where they fit."""
        return {
            "mode": "manual",
            "fits": self.ok,
            "gpu_count": request.gpus_per_pod * request.pods,
            "gpus_per_pod": request.gpus_per_pod,
            "pods": request.pods,
            "vendor": request.vendor,
            "gpu_type": request.product.name if request.product is not None else None,
            "precision": precision,
            "backend": backend,
            "product": self.product,
            "fits_on": list(self.nodes),
            "message": self.message,
            "fix": self.fix or None,
            "node_selector": dict(request.node_selector),
        }

    def text(self) -> str:
        lines = [self.message]
        if self.nodes:
            lines.append(f"fits on: {', '.join(self.nodes)}")
        if self.fix:
            lines.append(f"to fix: {self.fix}")
        return "\n".join(lines) + "\n"


def placement_request(
    catalog: HardwareCatalog,
    *,
    gpus_per_pod: int,
    pods: int = 1,
    gpu_type: str | None,
    default_vendor: str = "amd",
    node_selector: Mapping[str, str] | None = None,
) -> PlacementRequest:
    """The request the chart's manual values describe: the product when gpu_type names one, else
    the default vendor (AMD, as the chart's manual mode requests amd.com/gpu)."""
    product = catalog.require(gpu_type) if gpu_type else None
    if gpus_per_pod < 1 or pods < 1:
        raise InputError("the GPU count and the number of pods must be positive")
    return PlacementRequest(
        gpus_per_pod=gpus_per_pod,
        pods=pods,
        vendor=product.vendor if product else default_vendor,
        product=product,
        node_selector=dict(node_selector or {}),
    )


def _selected(node: NodeGpus, selector: Mapping[str, str]) -> bool:
    return all(node.labels.get(k) == v for k, v in selector.items())


def _summary(nodes: list[NodeGpus]) -> str:
    by_product: dict[str, list[NodeGpus]] = {}
    for n in nodes:
        by_product.setdefault(n.product.name if n.product else f"unknown {n.vendor or ''} GPU".strip(), []).append(n)
    parts = [
        f"{name} ({len(ns)} node(s), most free on one node {max(n.free for n in ns)})" for name, ns in sorted(by_product.items())
    ]
    return ", ".join(parts) or "no usable GPU node"


def check_placement(inventory: Inventory, request: PlacementRequest) -> Placement:
    """Pure: the nodes a manual pod could land on, and whether they are what the user means."""
    need, pods = request.gpus_per_pod, request.pods
    resource_nodes = [n for n in inventory.nodes if n.usable and n.vendor == request.vendor]
    candidates = [n for n in resource_nodes if _selected(n, request.node_selector)]
    with_room = [n for n in candidates if n.free >= need]
    what = request.product.name if request.product else f"{request.vendor.upper()} GPU"
    where = f" matching workload.node_selector {dict(request.node_selector)}" if request.node_selector else ""
    others = [n for n in inventory.nodes if n.usable and n.vendor != request.vendor and n.free >= need]

    if request.product is not None:
        right = [n for n in with_room if n.product is not None and n.product.name == request.product.name]
        wrong = [n for n in with_room if n.product is None or n.product.name != request.product.name]
    else:
        right, wrong = with_room, []

    if len(right) < pods:
        fixes = []
        if others:
            products = sorted({n.product.name for n in others if n.product})
            if products:
                fixes.append(f"set aim_engine.hardware.gpu_type to one of {', '.join(products)} (they have room)")
        fixes.append("free GPUs, lower aim_engine.gpu_count, or use aim_engine.auto_select=true to let the selector choose")
        return Placement(
            ok=False,
            message=(
                f"no room for {pods} pod(s) of {need} {what}s{where}: "
                f"{len(right)} node(s) have {need} free; the cluster's usable GPU nodes: {_summary(list(inventory.nodes))}"
            ),
            fix="; ".join(fixes),
        )
    if wrong and not request.node_selector:
        assert request.product is not None
        terms = product_node_affinity(inventory, request.product.name).terms
        pin = ""
        if terms:
            expr = terms[0].expressions[0]
            pin = f"--set-string workload.node_selector.{expr.key.replace('.', chr(92) + '.')}={expr.values[0]}"
        other_names = sorted({n.product.name if n.product else "unknown" for n in wrong})
        return Placement(
            ok=False,
            message=(
                f"a pod asking for {need} {request.product.resource} could land on {', '.join(other_names)} nodes "
                f"({', '.join(n.name for n in wrong)}), not only on {request.product.name}"
            ),
            fix=(f"pin the product: {pin}" if pin else "pin the product with workload.node_selector")
            + ", or use aim_engine.auto_select=true (the webhook then keeps the pods on the selected product)",
        )
    product_names = sorted({n.product.name if n.product else "unknown" for n in right})
    return Placement(
        ok=True,
        message=f"{pods} pod(s) of {need} {what}s{where} fit: {', '.join(product_names)}",
        product=product_names[0] if len(product_names) == 1 else None,
        nodes=tuple(n.name for n in right),
        node_affinity=product_node_affinity(inventory, request.product.name) if request.product else ANYWHERE,
    )
