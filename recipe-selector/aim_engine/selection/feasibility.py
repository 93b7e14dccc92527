"""Is a recipe feasible for this request on this cluster: the request's overrides, the rules of
aim_engine.rules.compat (the same the webhook enforces), and the cluster's nodes and free GPUs."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from decimal import Decimal
from typing import NamedTuple

from aim_engine.cluster.inventory import HOSTNAME_LABEL, Inventory
from aim_engine.domain.hardware import GpuProduct, HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import format_gib
from aim_engine.domain.recipe import Recipe, with_changes
from aim_engine.domain.vllm_args import ArgRegistry
from aim_engine.rules.compat import Finding, FindingCode, config_key, static_findings
from aim_engine.rules.memory import MemoryPlan
from aim_engine.rules.slo import check_slo
from aim_engine.selection.request import Request
from aim_engine.selection.result import Packing

# Capacity findings that say the recipe's hardware is not here at all: they rule the recipe out
# like a static rule does, not only until GPUs are freed.
HARDWARE_MISSING: frozenset[FindingCode] = frozenset({"HARDWARE_ABSENT", "HARDWARE_UNAVAILABLE", "CPU_NOT_CHOSEN"})


class Evaluated(NamedTuple):
    """One recipe judged for the request on the cluster (a NamedTuple: one is built for every
    catalog recipe of the model, and it is the cheapest immutable record; read it by name).

    `static`: what rules it out here whatever the cluster's usage: the request's overrides, the
    rules of rules.compat, and its hardware being absent or unusable. `capacity`: what rules it
    out now: too few free GPUs on one node (or on `nodes` nodes). `plan`: its memory plan (None
    when the model is not analysed or the parallelism is wrong). `static` also holds the SLO
    targets its figures miss (rules.slo); `notes` the targets they cannot decide."""

    recipe: Recipe
    static: tuple[Finding, ...]
    capacity: tuple[Finding, ...]
    plan: MemoryPlan | None
    notes: tuple[Finding, ...] = ()  # what does not rule it out but should be said (SLO_UNKNOWN)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.static + self.capacity

    @property
    def runs_here(self) -> bool:
        """Its hardware is here and every rule passes; free capacity aside."""
        return not self.static

    @property
    def feasible(self) -> bool:
        """It can be placed now."""
        return not self.static and not self.capacity


class Judged(NamedTuple):
    """What a configuration gets whatever its id, priority or figures: the rules' findings, its
    memory plan, and against the cluster: a missing product (static) or too little capacity."""

    rules: tuple[Finding, ...]
    plan: MemoryPlan | None
    missing: tuple[Finding, ...]
    capacity: tuple[Finding, ...]


StaticMemo = dict[Hashable, Judged]


def evaluate(
    recipe: Recipe,
    *,
    request: Request,
    model: ModelProfile | None,
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    inventory: Inventory,
    memo: StaticMemo | None = None,
) -> Evaluated:
    """`memo`: each configuration judged once (by config_key()), shared by the recipes one
    selection evaluates (model, catalog, registry, request and cluster are the same for all)."""
    key = config_key(recipe) if memo is not None else None
    judged = memo.get(key) if memo is not None else None
    if judged is None:
        judged = _judge(recipe, request=request, model=model, catalog=catalog, registry=registry, inventory=inventory)
        if memo is not None:
            memo[key] = judged
    # Without overrides or an SLO (the common request) their checks are skipped: this runs per recipe.
    overrides = override_findings(recipe, request) if request.overrides_any else ()
    if not request.slo:
        static = (*overrides, *judged.rules, *judged.missing) if overrides or judged.missing else judged.rules
        return Evaluated(recipe=recipe, static=static, capacity=judged.capacity, plan=judged.plan)
    slo = check_slo(recipe, request.slo, names=request.slo_names)
    static = (*overrides, *judged.rules, *slo.missed, *judged.missing)
    return Evaluated(recipe=recipe, static=static, capacity=judged.capacity, plan=judged.plan, notes=slo.unverified)


def _judge(
    recipe: Recipe,
    *,
    request: Request,
    model: ModelProfile | None,
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    inventory: Inventory,
) -> Judged:
    found, plan = static_findings(recipe, model=model, catalog=catalog, registry=registry, max_model_len=request.max_model_len)
    product = catalog.get(recipe.hardware)
    capacity = capacity_findings(recipe, product, inventory) if product is not None else []
    if product is not None and product.is_cpu:
        capacity = cpu_policy(product, request, inventory) or capacity
    if capacity and any(f.code in HARDWARE_MISSING for f in capacity):
        return Judged(rules=tuple(found), plan=plan, missing=tuple(capacity), capacity=())
    return Judged(rules=tuple(found), plan=plan, missing=(), capacity=tuple(capacity))


def override_findings(recipe: Recipe, request: Request) -> list[Finding]:
    out: list[Finding] = []
    if request.backend is not None and recipe.backend != request.backend:
        out.append(
            Finding(code="OVERRIDE_BACKEND", message=f"backend {recipe.backend} differs from the requested {request.backend}")
        )
    if request.gpu_count is not None and recipe.gpu_count != request.gpu_count:
        out.append(
            Finding(
                code="OVERRIDE_GPU_COUNT",
                message=f"uses {recipe.gpu_count} GPUs; gpu_count={request.gpu_count} was requested",
                fix=f"drop the gpu_count override to allow {recipe.gpu_count} GPUs",
            )
        )
    if request.precision is not None and recipe.precision != request.precision:
        out.append(
            Finding(
                code="OVERRIDE_PRECISION",
                message=f"runs {recipe.precision}; precision={request.precision} was requested",
                fix=f"drop the precision override to allow {recipe.precision}",
            )
        )
    if request.nodes is not None and recipe.nodes != request.nodes:
        shape = (
            "one pod (a Deployment)"
            if request.nodes == 1
            else f"a group of {request.nodes} pods, one per node (a LeaderWorkerSet)"
        )
        out.append(
            Finding(
                code="WORKLOAD_SHAPE",
                message=f"spans {recipe.nodes} node(s); the workload is {shape}",
                fix="use a LeaderWorkerSet of that many nodes (workload.kind, workload.leader_worker.group_size)"
                if recipe.nodes > 1
                else "use a Deployment (workload.kind: Deployment) for single-node recipes",
            )
        )
    if request.gpu_type is not None and recipe.hardware.upper() != request.gpu_type.upper():
        out.append(
            Finding(
                code="OVERRIDE_GPU_TYPE",
                message=f"is for {recipe.hardware}; gpu_type={request.gpu_type} was requested",
                fix=f"drop the gpu_type override to allow {recipe.hardware}",
            )
        )
    return out


def cpu_policy(product: GpuProduct, request: Request, inventory: Inventory) -> list[Finding]:
    """GPU recipes win where GPUs are: a CPU recipe is a candidate on a cluster without usable GPU
    nodes, or when the request names the CPU product (gpu_type)."""
    if request.gpu_type is not None and request.gpu_type.upper() == product.name.upper():
        return []
    gpus = sorted(name for name, cap in inventory.products.items() if not cap.product.is_cpu)
    if not gpus:
        return []
    return [
        Finding(
            code="CPU_NOT_CHOSEN",
            message=f"the cluster has usable GPU nodes ({', '.join(gpus)}): {product.name} recipes are used only on "
            "clusters without them, or when asked for",
            fix=f"set gpu_type={product.name} (aim_engine.hardware.gpu_type) to serve on CPU",
        )
    ]


def cpu_capacity_findings(recipe: Recipe, product: GpuProduct, inventory: Inventory) -> list[Finding]:
    """A CPU recipe fits a CPU node whose free cores and memory cover its requests."""
    cpu, memory = recipe.requests.get("cpu", Decimal(0)), recipe.requests.get("memory", Decimal(0))
    nodes = [n for n in inventory.nodes if n.usable and n.product is product]
    if any(n.cpu_free >= cpu and n.memory_free >= memory for n in nodes):
        return []
    best = max(nodes, key=lambda n: (n.memory_free, n.cpu_free))
    return [
        Finding(
            code="NO_FREE_CAPACITY",
            message=f"needs {cpu.normalize():f} CPU(s) and {format_gib(memory)} free on one {product.name} node; the most "
            f"free: {best.name} with {best.cpu_free.normalize():f} CPU(s) and {format_gib(best.memory_free)}",
            fix="free cores or memory on a CPU node, or lower the recipe's requests",
        )
    ]


def _how_to_get(product: GpuProduct) -> str:
    """What gives the cluster a product: nodes of it, or for a partition, GPUs split that way."""
    part = product.partition
    if part is None:
        return f"add {product.name} nodes"
    if part.kind == "mig":
        return (
            f"split {product.physical.name} GPUs into MIG {part.profile} instances (GPU Operator: label the node "
            f"nvidia.com/mig.config=all-{part.profile})"
        )
    return (
        f"switch {product.physical.name} GPUs to {part.profile} partitions ({part.profile}+"
        f"{' or '.join(part.memory_modes)}; AMD GPU Operator's Device Config Manager)"
    )


def capacity_findings(recipe: Recipe, product: GpuProduct, inventory: Inventory) -> list[Finding]:
    cap = inventory.capacity(product.name)
    if cap is not None and product.is_cpu:
        return cpu_capacity_findings(recipe, product, inventory)
    if cap is None:
        present = ", ".join(inventory.product_names)
        elsewhere = f"or choose a recipe for {present}" if present else "(no GPU node is usable now: aim-recipes detect)"
        unusable = [n for n in inventory.nodes if n.product is not None and n.product.name == product.name]
        if unusable:
            listed = ", ".join(f"{n.name} ({n.reason})" for n in unusable[:5])
            return [
                Finding(
                    code="HARDWARE_UNAVAILABLE",
                    message=f"the cluster's {product.name} nodes cannot take pods now: {listed}",
                    fix=f"uncordon or repair a {product.name} node {elsewhere}",
                )
            ]
        return [
            Finding(
                code="HARDWARE_ABSENT",
                message=f"no schedulable, ready node has {product.name} GPUs (cluster has: {present or 'no usable GPU nodes'})",
                fix=f"{_how_to_get(product)} {elsewhere}",
            )
        ]
    per_node = recipe.gpus_per_node
    if cap.nodes_with_free(per_node) >= recipe.nodes:
        return []
    if cap.nodes_with_allocatable(per_node) < recipe.nodes:
        if recipe.nodes == 1:
            return [
                Finding(
                    code="NODE_TOO_SMALL",
                    message=f"needs {per_node} {product.resource} on one node; "
                    f"the largest {product.name} node has {cap.max_allocatable}",
                    fix="use a multi-node recipe (nodes > 1) or fewer GPUs",
                )
            ]
        return [
            Finding(
                code="NOT_ENOUGH_NODES",
                message=f"needs {recipe.nodes} {product.name} nodes with {per_node} GPUs each; the cluster has "
                f"{cap.nodes_with_allocatable(per_node)}",
                fix=f"add {recipe.nodes - cap.nodes_with_allocatable(per_node)} {product.name} node(s) with {per_node} GPUs",
            )
        ]
    short = per_node - cap.max_free
    if recipe.nodes == 1 and cap.free >= per_node:
        return [
            Finding(
                code="FRAGMENTED",
                message=f"{cap.free} {product.name} GPUs are free in total but no node has {per_node} free "
                f"(most on one node: {cap.max_free})",
                fix=f"free {short} more GPU(s) on one {product.name} node, or drain a node",
            )
        ]
    if recipe.nodes == 1:
        return [
            Finding(
                code="NO_FREE_CAPACITY",
                message=f"needs {per_node} free {product.resource} on one {product.name} node; "
                f"most free on one node: {cap.max_free}",
                fix=f"free {short} more GPU(s) on a {product.name} node (or scale down other workloads)",
            )
        ]
    return [
        Finding(
            code="NO_FREE_CAPACITY",
            message=f"needs {recipe.nodes} {product.name} nodes with {per_node} free GPUs each; "
            f"{cap.nodes_with_free(per_node)} have that many free",
            fix=f"free GPUs on {recipe.nodes - cap.nodes_with_free(per_node)} more {product.name} node(s)",
        )
    ]


def packing(recipe: Recipe, inventory: Inventory) -> Packing:
    """Dense packing: a single-node recipe goes to the fullest node already in use that it fits,
    before an empty one (the scheduler's own scoring would spread it onto the emptiest node)."""
    per_node = recipe.gpus_per_node
    pools = [
        n
        for n in inventory.nodes
        if n.usable and n.product is not None and n.product.name.upper() == recipe.hardware.upper() and n.free >= per_node
    ]
    if not pools:
        return Packing(nodes=())
    in_use: dict[str, int] = {}
    for n in inventory.nodes:
        in_use[n.name] = in_use.get(n.name, 0) + n.used
    cpu = pools[0].product is not None and pools[0].product.is_cpu
    order = sorted(pools, key=lambda n: (in_use[n.name] == 0, n.free - per_node, n.name))
    names = tuple(dict.fromkeys(n.name for n in order))
    best = order[0]
    if cpu or recipe.nodes > 1 or in_use[best.name] == 0:
        return Packing(nodes=names, resource=best.resource)
    empty = len({n.name for n in pools if in_use[n.name] == 0})
    reason = (
        f"packed onto {best.name}, which already has {in_use[best.name]} device(s) in use by other workloads; "
        f"{best.free - per_node} of its {best.allocatable} {best.resource} stay free after this pod"
        + (f"; {empty} empty node(s) that would also fit stay empty" if empty else "")
    )
    return Packing(
        nodes=names,
        resource=best.resource,
        preferred=best.name,
        preferred_hostname=best.labels.get(HOSTNAME_LABEL, best.name),
        reason=reason,
    )


def as_advertised(recipe: Recipe, catalog: HardwareCatalog, resource: str | None) -> Recipe:
    """The recipe asking for its device by the name the chosen node advertises it as: a partition
    is its own resource under the device plugins' "mixed" strategy (nvidia.com/mig-3g.40gb,
    amd.com/cpx_nps4) and the vendor's plain one under "single" (nvidia.com/gpu, amd.com/gpu)."""
    product = catalog.get(recipe.hardware)
    if product is None or resource is None or product.is_cpu or resource not in product.resources:
        return recipe
    have = product.device_resource(recipe.limits, recipe.requests)
    if have == resource:
        return recipe

    def swap(values: Mapping[str, Decimal]) -> dict[str, Decimal]:
        return {(resource if k == have else k): v for k, v in values.items()}

    return with_changes(recipe, requests=swap(recipe.requests), limits=swap(recipe.limits))


def placement(recipe: Recipe, inventory: Inventory, limit: int = 5) -> tuple[str, ...]:
    """The usable nodes of the recipe's product with enough free GPUs for one of its pods, densest first."""
    return packing(recipe, inventory).nodes[:limit]
