"""The tertiary level's configurations: a catalog recipe adapted to the free GPUs. Its hardware,
precision, args and env are kept; only the GPU count and, if needed, the context change, as
size_for_context() trades them against the recipe's own context (or the gpu_count override)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aim_engine.cluster.inventory import Inventory, ProductCapacity
from aim_engine.domain.hardware import GpuProduct, HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.recipe import Recipe, with_changes
from aim_engine.rules.compat import FindingCode, recipe_memory
from aim_engine.rules.memory import MemoryPlan
from aim_engine.rules.ranking import RankKey, rank_key
from aim_engine.selection.feasibility import Evaluated
from aim_engine.selection.request import Request
from aim_engine.selection.sizing import Sizing, SizingTier, size_for_context

# Only recipes whose every failure is about size (memory, context, capacity, GPU count) qualify.
ADAPTABLE: frozenset[FindingCode] = frozenset(
    {
        "KV_CACHE_TOO_SMALL",
        "INSUFFICIENT_MEMORY",
        "OVERRIDE_GPU_COUNT",
        "NO_FREE_CAPACITY",
        "FRAGMENTED",
        "NODE_TOO_SMALL",
        "NOT_ENOUGH_NODES",
        "PARALLELISM_MISMATCH",
    }
)

# Arguments a derived single-node configuration drops: it is tensor parallel on one node.
_DROPPED_ARGS = ("pipeline_parallel_size", "data_parallel_size", "distributed_executor_backend")


@dataclass(frozen=True, slots=True)
class Derived:
    """A configuration derived from the catalog recipe `base`."""

    base: Recipe
    recipe: Recipe
    plan: MemoryPlan
    sizing: Sizing
    base_rank: RankKey

    @property
    def order(self) -> tuple[RankKey, SizingTier, int, str]:
        """Best first: the better base recipe, then the more context kept, then fewer GPUs."""
        return self.base_rank, self.sizing.tier, self.sizing.gpus, self.base.recipe_id


def derived_variants(
    ranked: Sequence[Evaluated],
    *,
    model: ModelProfile,
    request: Request,
    catalog: HardwareCatalog,
    inventory: Inventory,
) -> list[Derived]:
    """One derived configuration for each catalog recipe that fails only on size, best first."""
    out: list[Derived] = []
    for entry in ranked:
        recipe = entry.recipe
        if recipe.type == "general" or entry.feasible:
            continue
        if any(f.code not in ADAPTABLE for f in entry.findings):
            continue
        product = catalog.get(recipe.hardware)
        capacity = inventory.capacity(product.name) if product is not None else None
        if product is None or capacity is None or product.is_cpu:  # a CPU recipe has one size: its own
            continue
        if request.gpu_count is not None and (request.gpu_count > capacity.max_free or not model.tp_divides(request.gpu_count)):
            continue
        if request.gpu_count is not None and product.max_tp and request.gpu_count > product.max_tp:
            continue  # MIG instances cannot be joined: the recipe's own PARTITION_PARALLELISM finding stands
        derived = _derive(
            recipe, product=product, capacity=capacity, model=model, request=request, rank=rank_key(recipe, catalog)
        )
        if derived is not None:
            out.append(derived)
    out.sort(key=lambda d: d.order)
    return out


def _derive(
    recipe: Recipe, *, product: GpuProduct, capacity: ProductCapacity, model: ModelProfile, request: Request, rank: RankKey
) -> Derived | None:
    base_args = {k: v for k, v in recipe.args.items() if k not in _DROPPED_ARGS}

    def args_for(n: int, length: int) -> dict[str, Any]:
        args = {**base_args, "tensor_parallel_size": n, "max_model_len": length}
        if args.get("enable_expert_parallel") and n == 1:
            args.pop("enable_expert_parallel")
        return args

    target = recipe.max_model_len or model.max_context

    def fit(n: int) -> int:
        probe = with_changes(recipe, gpu_count=n, nodes=1, args=args_for(n, target))
        plan = recipe_memory(probe, model, product)
        return plan.max_model_len_fit if plan.weights_fit else 0

    sizing = size_for_context(
        fit,
        sizes=[request.gpu_count]
        if request.gpu_count is not None
        else model.valid_tp_sizes(up_to=min(capacity.max_allocatable, product.max_tp or capacity.max_allocatable)),
        free=capacity.max_free,
        context=target,
        whose="the recipe's",
        where=f"one {product.name} node",
        requested_len=request.max_model_len,
        min_context=request.min_context,
        pinned=request.gpu_count is not None,
    )
    if sizing is None:
        return None
    n = sizing.gpus
    args = args_for(n, sizing.max_model_len)
    plan = recipe_memory(with_changes(recipe, gpu_count=n, nodes=1, args=args), model, product)
    suffix = f"-tp{n}" + ("" if args["max_model_len"] == target else f"-ctx{args['max_model_len']}")
    per_node: Mapping[str, Decimal] = {product.device_resource(recipe.limits, recipe.requests): Decimal(n)}
    derived = with_changes(
        recipe,
        recipe_id=(recipe.recipe_id + suffix)[:63].rstrip("-."),
        gpu_count=n,
        nodes=1,
        args=args,
        type="unoptimized",
        priority=0,
        performance=None,
        origin="derived",
        requests={**recipe.requests, **per_node} if recipe.requests else per_node,
        limits={**recipe.limits, **per_node} if recipe.limits else per_node,
        description=f"derived from {recipe.recipe_id}; {n} x {product.name}",
    )
    return Derived(base=recipe, recipe=derived, plan=plan, sizing=sizing, base_rank=rank)
