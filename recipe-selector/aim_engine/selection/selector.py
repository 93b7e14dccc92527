"""Recipe selection, the pure core of seed 004's algorithm:

GPU detection -> model analysis -> recipe filtering -> performance ranking -> resource validation
-> fallback (primary -> secondary -> tertiary -> default).

Levels:
  primary    the best recipe for the hardware this cluster has, and it has free capacity now
  secondary  the best one lacks free capacity; the best recipe that has it (another precision,
             GPU count or GPU product)
  tertiary   no catalog recipe fits as written: a configuration derived from the best catalog
             recipe whose hardware and precision are here, with another GPU count and, if needed,
             a shorter context (never below min_context, never when the user set max_model_len)
  default    a general recipe from the catalog, else one synthesised from the model analysis

Derived and synthesised configurations are sized by size_for_context(): more GPUs (within one
node's free GPUs) before a much shorter context, and the trade made is said (reason SIZING).

Explicit overrides (gpu_count, precision, backend, gpu_type, max_model_len, a custom recipe) are
constraints at every level: honoured, or the selection is refused with the reason. Ranking, best
first: recipe type (optimized, preview, unoptimized, general), priority (higher first), expected
output tokens/s per GPU (higher first), fewer GPUs, lower precision. Two candidates equal on all of
these are a catalog error: the selection refuses rather than toss a coin.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from aim_engine.cluster.inventory import Inventory, ProductCapacity
from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import (
    AMD_DEFAULT_ENV,
    AMD_MULTI_GPU_ENV,
    PRECISION_ORDER,
    PRECISIONS,
    GpuProduct,
    HardwareCatalog,
)
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import GIB
from aim_engine.domain.recipe import Recipe, with_changes
from aim_engine.domain.vllm_args import ArgRegistry
from aim_engine.rules.compat import Finding, recipe_memory, static_findings
from aim_engine.rules.memory import MemoryPlan, min_gpus
from aim_engine.rules.ranking import rank_key

DEFAULT_MIN_CONTEXT = 4096

@dataclass(frozen=True, slots=True)
class Request:
    model_id: str
    gpu_count: int | None = None
    precision: str | None = None
    backend: str | None = None
    gpu_type: str | None = None
    max_model_len: int | None = None
    min_context: int = DEFAULT_MIN_CONTEXT
    custom_recipe: Recipe | None = None
    allow_default: bool = True
    # The workload's shape: None = any; 1 = one pod (Deployment); N > 1 = a LeaderWorkerSet group
    # of N pods, one per node. Only recipes spanning exactly that many nodes fit.
    nodes: int | None = None

    def validate(self, catalog: HardwareCatalog) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$", self.model_id):
            raise InputError(f"model {self.model_id!r}: expected a Hugging Face id such as Qwen/Qwen3-32B")
        if self.gpu_count is not None and not 1 <= self.gpu_count <= 256:
            raise InputError(f"gpu_count {self.gpu_count}: must be between 1 and 256")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.backend is not None and self.backend != "vllm":
            raise InputError(f"backend {self.backend!r}: aim-engine serves with vllm only")
        if self.gpu_type is not None:
            catalog.require(self.gpu_type)
        if self.max_model_len is not None and self.max_model_len < 1:
            raise InputError(f"max_model_len {self.max_model_len}: must be positive")
        if self.nodes is not None and not 1 <= self.nodes <= 64:
            raise InputError(f"nodes {self.nodes}: must be between 1 and 64")

    @property
    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("gpu_count", "precision", "backend", "gpu_type", "max_model_len", "nodes"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.custom_recipe is not None:
            out["custom_recipe"] = self.custom_recipe.recipe_id
        return out


@dataclass(frozen=True, slots=True)
class Candidate:
    recipe: Recipe
    verdict: str  # selected | eligible | rejected
    reasons: tuple[Finding, ...]
    level: str | None = None
    plan: MemoryPlan | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "recipe_id": self.recipe.recipe_id,
            "hardware": self.recipe.hardware,
            "gpu_count": self.recipe.gpu_count,
            "precision": self.recipe.precision,
            "type": self.recipe.type,
            "origin": self.recipe.origin,
            "verdict": self.verdict,
            "level": self.level,
            "reasons": [r.as_dict() for r in self.reasons],
        }
        if self.recipe.performance is not None:
            out["expected_tokens_per_second"] = float(self.recipe.performance.tokens_per_second)
        if self.plan is not None:
            out["memory"] = {
                "per_gpu_budget_gib": round(float(self.plan.budget / GIB), 1),
                "weights_per_gpu_gib": round(float(self.plan.weights / GIB), 1),
                "kv_cache_per_gpu_gib": round(float(max(self.plan.kv_budget, Decimal(0)) / GIB), 1),
                "max_model_len": self.plan.max_model_len,
                "max_model_len_that_fits": self.plan.max_model_len_fit,
                "full_length_sequences": self.plan.concurrent_sequences,
            }
        return out


@dataclass(frozen=True, slots=True)
class Selection:
    request: Request
    model: ModelProfile | None
    recipe: Recipe | None
    level: str | None
    result: str  # selected | not_found | ambiguous
    message: str
    candidates: tuple[Candidate, ...]
    placement: tuple[str, ...] = ()
    hardware: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.recipe is not None


def override_findings(recipe: Recipe, request: Request) -> list[Finding]:
    out: list[Finding] = []
    if request.backend is not None and recipe.backend != request.backend:
        out.append(Finding("OVERRIDE_BACKEND", f"backend {recipe.backend} differs from the requested {request.backend}"))
    if request.gpu_count is not None and recipe.gpu_count != request.gpu_count:
        out.append(
            Finding(
                "OVERRIDE_GPU_COUNT",
                f"uses {recipe.gpu_count} GPUs; gpu_count={request.gpu_count} was requested",
                f"drop the gpu_count override to allow {recipe.gpu_count} GPUs",
            )
        )
    if request.precision is not None and recipe.precision != request.precision:
        out.append(
            Finding(
                "OVERRIDE_PRECISION",
                f"runs {recipe.precision}; precision={request.precision} was requested",
                f"drop the precision override to allow {recipe.precision}",
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
                "WORKLOAD_SHAPE",
                f"spans {recipe.nodes} node(s); the workload is {shape}",
                "use a LeaderWorkerSet of that many nodes (workload.kind, workload.leader_worker.group_size)"
                if recipe.nodes > 1
                else "use a Deployment (workload.kind: Deployment) for single-node recipes",
            )
        )
    if request.gpu_type is not None and recipe.hardware.upper() != request.gpu_type.upper():
        out.append(
            Finding(
                "OVERRIDE_GPU_TYPE",
                f"is for {recipe.hardware}; gpu_type={request.gpu_type} was requested",
                f"drop the gpu_type override to allow {recipe.hardware}",
            )
        )
    return out


def capacity_findings(recipe: Recipe, product: GpuProduct, inventory: Inventory) -> list[Finding]:
    cap = inventory.capacity(product.name)
    if cap is None:
        present = ", ".join(inventory.product_names)
        elsewhere = f"or choose a recipe for {present}" if present else "(no GPU node is usable now: aim-recipes detect)"
        unusable = [n for n in inventory.nodes if n.product is not None and n.product.name == product.name]
        if unusable:
            listed = ", ".join(f"{n.name} ({n.reason})" for n in unusable[:5])
            return [
                Finding(
                    "HARDWARE_UNAVAILABLE",
                    f"the cluster's {product.name} nodes cannot take pods now: {listed}",
                    f"uncordon or repair a {product.name} node {elsewhere}",
                )
            ]
        return [
            Finding(
                "HARDWARE_ABSENT",
                f"no schedulable, ready node has {product.name} GPUs (cluster has: {present or 'no usable GPU nodes'})",
                f"add {product.name} nodes {elsewhere}",
            )
        ]
    per_node = recipe.gpus_per_node
    if cap.nodes_with_free(per_node) >= recipe.nodes:
        return []
    if cap.nodes_with_allocatable(per_node) < recipe.nodes:
        if recipe.nodes == 1:
            return [
                Finding(
                    "NODE_TOO_SMALL",
                    f"needs {per_node} {product.resource} on one node; the largest {product.name} node has {cap.max_allocatable}",
                    "use a multi-node recipe (nodes > 1) or fewer GPUs",
                )
            ]
        return [
            Finding(
                "NOT_ENOUGH_NODES",
                f"needs {recipe.nodes} {product.name} nodes with {per_node} GPUs each; the cluster has "
                f"{cap.nodes_with_allocatable(per_node)}",
                f"add {recipe.nodes - cap.nodes_with_allocatable(per_node)} {product.name} node(s) with {per_node} GPUs",
            )
        ]
    short = per_node - cap.max_free
    if recipe.nodes == 1 and cap.free >= per_node:
        return [
            Finding(
                "FRAGMENTED",
                f"{cap.free} {product.name} GPUs are free in total but no node has {per_node} free "
                f"(most on one node: {cap.max_free})",
                f"free {short} more GPU(s) on one {product.name} node, or drain a node",
            )
        ]
    if recipe.nodes == 1:
        return [
            Finding(
                "NO_FREE_CAPACITY",
                f"needs {per_node} free {product.resource} on one {product.name} node; most free on one node: {cap.max_free}",
                f"free {short} more GPU(s) on a {product.name} node (or scale down other workloads)",
            )
        ]
    return [
        Finding(
            "NO_FREE_CAPACITY",
            f"needs {recipe.nodes} {product.name} nodes with {per_node} free GPUs each; "
            f"{cap.nodes_with_free(per_node)} have that many free",
            f"free GPUs on {recipe.nodes - cap.nodes_with_free(per_node)} more {product.name} node(s)",
        )
    ]


def _placement(recipe: Recipe, inventory: Inventory, limit: int = 5) -> tuple[str, ...]:
    names = [
        n.name
        for n in inventory.nodes
        if n.usable
        and n.product is not None
        and n.product.name.upper() == recipe.hardware.upper()
        and n.free >= recipe.gpus_per_node
    ]
    return tuple(names[:limit])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# Sizing: how many GPUs, and how much context -----------------------------------------------------

# The context a configuration keeps when one node cannot hold the whole of it: long enough for
# retrieval-augmented prompts and multi-turn chat; below it, a shorter context is a real loss.
CONTEXT_FLOOR = 32768


@dataclass(frozen=True, slots=True)
class Sizing:
    """A GPU count and context for one node, and the trade made to reach them."""

    gpus: int
    max_model_len: int
    tier: int  # 0: the whole context wanted; 1: at least the floor; 2: shorter (never below min_context)
    trade: str = ""  # what was given up, and why; "" when nothing was
    fix: str = ""  # how to make the other trade

    @property
    def shortened(self) -> bool:
        return self.tier > 0


def size_for_context(
    fit: Callable[[int], int],
    *,
    sizes: Sequence[int],
    free: int,
    context: int,
    whose: str,
    where: str,
    requested_len: int | None = None,
    min_context: int = DEFAULT_MIN_CONTEXT,
    floor: int = CONTEXT_FLOOR,
    pinned: bool = False,
) -> Sizing | None:
    """The GPU count a seasoned engineer picks for a configuration built here (default and tertiary
    levels): more GPUs before a much shorter context.

    `fit(n)` is the longest context the memory plan on n GPUs holds (0: the weights do not fit);
    `sizes` the GPU counts allowed (tensor-parallel sizes that divide the model's heads, up to the
    largest node; or the one `gpu_count` override: `pinned`), ascending; `free` the most GPUs free
    on one node; `context` the context wanted (the model's, or the catalog recipe's).

    1. An explicit max_model_len is never changed: the fewest free GPUs that hold it.
    2. Else the fewest free GPUs that hold the whole context.
    3. Else (capacity or memory does not allow it) the fewest free GPUs that hold at least
       min(context, max(floor, min_context)) tokens, with the longest context they hold.
    4. Else the free GPU count that holds the longest context, never below min_context.
    None when no free GPU count holds min_context (or the explicit max_model_len).
    The trade names the count passed over and what it would have held, or what the whole context
    would need."""
    usable = [n for n in sizes if n <= free]
    fit = functools.cache(fit)  # each count's memory plan once

    def first(pool: Sequence[int], length: int) -> int | None:
        return next((n for n in pool if fit(n) >= length), None)

    if requested_len is not None:
        n = first(usable, requested_len)
        return None if n is None else Sizing(n, requested_len, 0)
    fewest = first(usable, min(context, min_context))
    if fewest is None:
        return None

    def passed_over(n: int) -> str:
        if n == fewest:
            return ""
        return f"{n} GPUs rather than {fewest}: {fewest} would fit only {fit(fewest):,} tokens of {whose} {context:,} context"

    full = first(usable, context)
    if full is not None:
        trade = passed_over(full)
        fewer = "set gpu_count (and max_model_len) to trade the context for fewer GPUs"
        return Sizing(full, context, 0, trade, fewer if trade else "")

    def needs(length: int) -> str:
        if pinned:
            return f"the requested {fewest} GPUs hold no more"
        n = first(sizes, length)
        if n is None:
            return f"no tensor-parallel size on {where} holds {length:,}"
        return f"{length:,} would need {n} GPUs, more than the {free} free on {where}"

    if pinned:
        fix = "raise the gpu_count override for a longer context"
    elif first(sizes, context) is None:
        fix = "use a GPU with more memory, or a lower precision, for the whole context"
    else:
        fix = f"free GPUs on {where} for the whole context"
    wanted = min(context, max(floor, min_context))
    mid = first(usable, wanted)
    if mid is not None:
        length = min(context, fit(mid))
        trade = f"context {length:,} of {whose} {context:,} tokens: {needs(context)}"
        other = passed_over(mid)
        return Sizing(mid, length, 1, trade + (f"; {other}" if other else ""), fix)
    best = max((n for n in usable if fit(n) >= min_context), key=lambda n: (fit(n), -n))
    length = min(context, fit(best))
    return Sizing(best, length, 2, f"context cut to {length:,} of {whose} {context:,} tokens: {needs(wanted)}", fix)


def synthesize(
    model: ModelProfile,
    product: GpuProduct,
    *,
    gpu_count: int,
    precision: str,
    max_model_len: int,
) -> Recipe:
    """The default level's generic recipe, built from the model analysis (type general)."""
    rid = f"default-{_slug(model.id.split('/')[-1])}-{_slug(product.name)}-{gpu_count}gpu-{precision}"
    if len(rid) > 63:
        rid = rid[:54].rstrip("-") + "-" + hashlib.sha256(rid.encode()).hexdigest()[:8]
    args: dict[str, Any] = {
        "tensor_parallel_size": gpu_count,
        "max_model_len": max_model_len,
        "gpu_memory_utilization": 0.9,
        "enable_prefix_caching": True,
    }
    if precision == "fp8" and model.native_precision != "fp8":
        args["quantization"] = "fp8"
    env: dict[str, str] = {}
    if product.vendor == "amd":
        env.update(AMD_DEFAULT_ENV)
        if gpu_count > 1:
            env.update(AMD_MULTI_GPU_ENV)
    mem_gib = 16 + 8 * gpu_count
    requests = {product.resource: Decimal(gpu_count), "cpu": Decimal(4 * gpu_count), "memory": Decimal(mem_gib) * GIB}
    limits = {product.resource: Decimal(gpu_count), "cpu": Decimal(8 * gpu_count), "memory": Decimal(2 * mem_gib) * GIB}
    return Recipe(
        recipe_id=rid,
        huggingface_id=model.id,
        hardware=product.name,
        gpu_count=gpu_count,
        precision=precision,
        backend="vllm",
        type="general",
        priority=0,
        nodes=1,
        description=f"Generic recipe synthesised by aim-engine from {model.id}'s architecture for {gpu_count} x {product.name}",
        args=args,
        env=env,
        performance=None,
        requests=requests,
        limits=limits,
        origin="synthesized",
    )


SynthOption = tuple[tuple[Any, ...], Recipe, MemoryPlan, Sizing]


def _synthesis_options(
    model: ModelProfile, request: Request, inventory: Inventory, catalog: HardwareCatalog
) -> tuple[list[SynthOption], list[Finding]]:
    """The default level's generic recipe for each product present, sized by size_for_context():
    (sort key, recipe, memory plan, sizing), and why the other products got none."""
    options: list[SynthOption] = []
    notes: list[Finding] = []
    for name in inventory.product_names:
        cap: ProductCapacity = inventory.products[name]
        product = cap.product
        if request.gpu_type is not None and product.name.upper() != request.gpu_type.upper():
            continue
        precision = request.precision or (model.native_precision if product.supports(model.native_precision) else "bf16")
        if not product.supports(precision):
            notes.append(
                Finding(
                    "PRECISION_UNSUPPORTED",
                    f"{product.name} cannot run {precision}",
                    f"run {precision} on {', '.join(catalog.supporting(precision))}",
                )
            )
            continue
        if request.gpu_count is not None and not model.tp_divides(request.gpu_count):
            notes.append(
                Finding(
                    "TP_INDIVISIBLE",
                    f"gpu_count {request.gpu_count} does not divide {model.id}'s "
                    f"{model.attention_heads} attention heads ({model.kv_heads} KV heads)",
                    f"use gpu_count {', '.join(str(t) for t in model.valid_tp_sizes(up_to=16))}",
                )
            )
            continue

        def fit(n: int, product: GpuProduct = product, precision: str = precision) -> int:
            probe = synthesize(model, product, gpu_count=n, precision=precision, max_model_len=model.max_context)
            plan = recipe_memory(probe, model, product)
            return plan.max_model_len_fit if plan.weights_fit else 0

        pinned = request.gpu_count is not None
        sizing = size_for_context(
            fit,
            sizes=[request.gpu_count] if request.gpu_count is not None else model.valid_tp_sizes(up_to=cap.max_allocatable),
            # A pinned count is not moved for capacity: capacity_findings() below says what is missing.
            free=request.gpu_count if request.gpu_count is not None else cap.max_free,
            context=model.max_context,
            whose="the model's",
            where=f"one {product.name} node",
            requested_len=request.max_model_len,
            min_context=request.min_context,
            pinned=pinned,
        )
        if sizing is None:
            notes.extend(_unsized_notes(model, product, precision, request, inventory))
            continue
        recipe = synthesize(model, product, gpu_count=sizing.gpus, precision=precision, max_model_len=sizing.max_model_len)
        plan = recipe_memory(recipe, model, product)
        cap_findings = capacity_findings(recipe, product, inventory)
        if cap_findings:
            notes.extend(cap_findings)
            continue
        # Across products: the whole context first, then the fewest GPUs, the lowest precision,
        # the fastest memory.
        key = (sizing.tier, sizing.gpus, PRECISION_ORDER.get(precision, 99), -product.bandwidth_gbps, product.name)
        options.append((key, recipe, plan, sizing))
    return options, notes


def _unsized_notes(
    model: ModelProfile, product: GpuProduct, precision: str, request: Request, inventory: Inventory
) -> list[Finding]:
    """Why no GPU count of a product holds the model: too little memory at the count pinned or at
    any count, or the smallest count that would hold it is not free on one node."""
    length = request.max_model_len or min(model.max_context, request.min_context)
    if request.gpu_count is not None:
        n = request.gpu_count
        probe = synthesize(model, product, gpu_count=n, precision=precision, max_model_len=length)
        plan = recipe_memory(probe, model, product)
        return [
            Finding(
                "INSUFFICIENT_MEMORY" if not plan.weights_fit else "KV_CACHE_TOO_SMALL",
                f"{n} x {product.name} at {precision}: {model.id} fits {plan.max_model_len_fit} tokens of context"
                f" (needs {length})",
                f"use more than {n} GPUs",
            )
        ]
    smallest = min_gpus(model, product, precision, max_model_len=length)
    if smallest is None:
        return [
            Finding(
                "INSUFFICIENT_MEMORY",
                f"{model.id} at {precision} does not fit any tensor-parallel size of {product.name}",
                "use a GPU with more memory or a lower precision",
            )
        ]
    recipe = synthesize(model, product, gpu_count=smallest, precision=precision, max_model_len=length)
    return capacity_findings(recipe, product, inventory) or [
        Finding(
            "INSUFFICIENT_MEMORY",
            f"{model.id} at {precision} needs {smallest} x {product.name} for {length} tokens of context",
            f"free {smallest} GPUs on one {product.name} node",
        )
    ]


def select(
    *,
    request: Request,
    recipes: Sequence[Recipe],
    models: Mapping[str, ModelProfile],
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    inventory: Inventory,
) -> Selection:
    """Pick a recipe for `request` on `inventory`. Pure: no I/O, deterministic."""
    request.validate(catalog)
    model = models.get(request.model_id.lower())
    hardware = {
        name: {"nodes": cap.nodes, "allocatable": cap.allocatable, "free": cap.free, "max_free_on_one_node": cap.max_free}
        for name, cap in sorted(inventory.products.items())
    }

    if request.custom_recipe is not None:
        return _select_pinned(
            request=request, model=model, catalog=catalog, registry=registry, inventory=inventory, hardware=hardware
        )

    key = request.model_id.lower()
    pool = [r for r in recipes if r.model_key == key]

    evaluated: list[tuple[Recipe, list[Finding], list[Finding], MemoryPlan | None]] = []
    for recipe in pool:
        hard = override_findings(recipe, request)
        static, plan = static_findings(
            recipe, model=model, catalog=catalog, registry=registry, max_model_len=request.max_model_len
        )
        hard += static
        product = catalog.get(recipe.hardware)
        cap = capacity_findings(recipe, product, inventory) if product is not None else []
        if any(f.code in ("HARDWARE_ABSENT", "HARDWARE_UNAVAILABLE") for f in cap):
            hard += cap
            cap = []
        evaluated.append((recipe, hard, cap, plan))

    verdicts: dict[str, Candidate] = {}
    ordered = sorted(evaluated, key=lambda e: (rank_key(e[0]), e[0].recipe_id))

    hw_ok = [e for e in ordered if not e[1] and e[0].type != "general"]
    ideal = hw_ok[0] if hw_ok else None
    chosen: tuple[Recipe, MemoryPlan | None] | None = None
    level: str | None = None
    ambiguous: list[str] = []

    def ambiguity(first: Recipe, pool_: Sequence[tuple[Recipe, list[Finding], list[Finding], MemoryPlan | None]]) -> list[str]:
        first_key = rank_key(first)
        return [e[0].recipe_id for e in pool_ if e[0] is not first and rank_key(e[0]) == first_key]

    if ideal is not None and not ideal[2]:
        chosen, level = (ideal[0], ideal[3]), "primary"
        ambiguous = ambiguity(ideal[0], [e for e in hw_ok if not e[2]])
    else:
        with_capacity = [e for e in hw_ok if not e[2]]
        if with_capacity:
            chosen, level = (with_capacity[0][0], with_capacity[0][3]), "secondary"
            ambiguous = ambiguity(with_capacity[0][0], with_capacity)

    # Derived and synthesised configurations are single-node: not for a multi-node group.
    single_pod = request.nodes in (None, 1)
    sizing: Sizing | None = None
    if chosen is None and model is not None and single_pod:
        tertiary_pool = _derived_variants(ordered, model=model, request=request, catalog=catalog, inventory=inventory)
        if tertiary_pool:
            chosen, level, sizing = (tertiary_pool[0][0], tertiary_pool[0][1]), "tertiary", tertiary_pool[0][2]

    synthesized_notes: list[Finding] = []
    synthesized: Recipe | None = None
    if chosen is None and request.allow_default:
        general = [e for e in ordered if e[0].type == "general" and not e[1] and not e[2]]
        if general:
            chosen, level = (general[0][0], general[0][3]), "default"
        elif model is not None and single_pod:
            options, synthesized_notes = _synthesis_options(model, request, inventory, catalog)
            if options:
                options.sort(key=lambda o: o[0])
                synthesized = options[0][1]
                chosen, level, sizing = (options[0][1], options[0][2]), "default", options[0][3]

    # Verdicts for every catalog candidate.
    chosen_id = chosen[0].recipe_id if chosen else None
    for recipe, hard, cap, plan in ordered:
        reasons = hard + cap
        if recipe.recipe_id == chosen_id:
            continue
        if reasons:
            verdicts[recipe.recipe_id] = Candidate(recipe, "rejected", tuple(reasons), None, plan)
        elif recipe.type == "general":
            verdicts[recipe.recipe_id] = Candidate(
                recipe,
                "eligible",
                (Finding("GENERAL_FALLBACK_ONLY", "general recipes are used only at the default level"),),
                "default",
                plan,
            )
        else:
            verdicts[recipe.recipe_id] = Candidate(
                recipe,
                "eligible",
                (_outranked(recipe, chosen[0] if chosen else None),),
                level or "primary",
                plan,
            )

    if ambiguous and chosen is not None:
        ids = [chosen[0].recipe_id, *ambiguous]
        candidates = (
            *verdicts.values(),
            Candidate(
                chosen[0],
                "rejected",
                (
                    Finding(
                        "AMBIGUOUS",
                        f"ranks equal to {', '.join(ambiguous)}",
                        "give one of them a higher priority, or pin one with custom_recipe",
                    ),
                ),
                level,
                chosen[1],
            ),
        )
        return Selection(
            request,
            model,
            None,
            None,
            "ambiguous",
            f"recipes {', '.join(ids)} rank equal (same type, priority, tokens/s per GPU, GPU count and precision): "
            "the catalog must say which is preferred (set priority), or pin one with custom_recipe",
            _order(candidates),
            (),
            hardware,
        )

    if chosen is None:
        message = _not_found_message(
            request=request, model=model, pool=pool, evaluated=evaluated, notes=synthesized_notes, inventory=inventory
        )
        return Selection(request, model, None, None, "not_found", message, _order(tuple(verdicts.values())), (), hardware)

    recipe, plan = chosen
    overridden = request.max_model_len is not None and recipe.max_model_len != request.max_model_len
    if overridden:
        recipe = with_changes(recipe, args={**recipe.args, "max_model_len": request.max_model_len})
    reasons = [Finding("SELECTED", _why(recipe, level or "primary", ideal[0] if ideal else None, plan))]
    if overridden:
        reasons.append(
            Finding(
                "MAX_MODEL_LEN_OVERRIDE",
                f"max_model_len set to the requested {request.max_model_len}; memory was checked at that length",
            )
        )
    if level == "tertiary":
        reasons.append(
            Finding(
                "DERIVED",
                f"configuration {recipe.description}, max_model_len {recipe.max_model_len}; "
                "untested, so no expected performance is claimed",
                "free GPUs for the catalog recipe as written, or add a tested recipe for this configuration",
            )
        )
    if sizing is not None and sizing.trade:
        reasons.append(Finding("SIZING", sizing.trade, sizing.fix))
    if level == "secondary" and ideal is not None:
        cap_reason = ideal[2][0] if ideal[2] else None
        reasons.append(
            Finding(
                "FALLBACK",
                f"preferred {ideal[0].recipe_id} cannot be placed now" + (f": {cap_reason.message}" if cap_reason else ""),
                cap_reason.fix if cap_reason else "",
            )
        )
    selected = Candidate(recipe, "selected", tuple(reasons), level, plan)
    if synthesized is not None:
        note = tuple(synthesized_notes)
        selected = replace(selected, reasons=selected.reasons + note)
    candidates = (selected, *verdicts.values())
    return Selection(
        request, model, recipe, level, "selected", reasons[0].message, _order(candidates), _placement(recipe, inventory), hardware
    )


def _order(candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
    order = {"selected": 0, "eligible": 1, "rejected": 2}
    return tuple(sorted(candidates, key=lambda c: (order[c.verdict], rank_key(c.recipe), c.recipe.recipe_id)))


def _why(recipe: Recipe, level: str, ideal: Recipe | None, plan: MemoryPlan | None) -> str:
    parts = [f"{recipe.recipe_id} ({recipe.gpu_count} x {recipe.hardware}, {recipe.precision}, {recipe.type})"]
    if recipe.performance is not None:
        parts.append(f"expects {recipe.performance.tokens_per_second} tok/s ({recipe.tokens_per_second_per_gpu:.0f} per GPU)")
    if plan is not None:
        parts.append(f"holds {plan.concurrent_sequences} full-length sequences of {plan.max_model_len} tokens")
    prefix = {
        "primary": "best recipe for this cluster's hardware, and capacity is free",
        "secondary": "fallback: an alternative precision, GPU count or product with free capacity",
        "tertiary": "fallback: a catalog recipe adapted to the free GPUs (another GPU count, or a shorter context)",
        "default": "fallback: generic recipe"
        + (" synthesised from the model analysis" if recipe.origin == "synthesized" else ""),
    }[level]
    return f"{level}: {prefix}; " + "; ".join(parts)


def _derived_variants(
    ordered: Sequence[tuple[Recipe, list[Finding], list[Finding], MemoryPlan | None]],
    *,
    model: ModelProfile,
    request: Request,
    catalog: HardwareCatalog,
    inventory: Inventory,
) -> list[tuple[Recipe, MemoryPlan, Sizing]]:
    """Tertiary: keep a catalog recipe's hardware, precision, args and env; change only the GPU
    count and, if needed, the context, as size_for_context() trades them against the recipe's own
    context (or the gpu_count override). Only recipes whose failures are about size (memory,
    context, capacity, GPU count) qualify. Each: (derived recipe, its memory plan, its sizing)."""
    adaptable = {
        "KV_CACHE_TOO_SMALL",
        "INSUFFICIENT_MEMORY",
        "OVERRIDE_GPU_COUNT",
        "NO_FREE_CAPACITY",
        "FRAGMENTED",
        "NODE_TOO_SMALL",
        "NOT_ENOUGH_NODES",
        "PARALLELISM_MISMATCH",
    }
    out: list[tuple[tuple[Any, ...], Recipe, MemoryPlan, Sizing]] = []
    for recipe, hard, cap, _plan in ordered:
        if recipe.type == "general" or not (hard or cap):
            continue
        if any(f.code not in adaptable for f in (*hard, *cap)):
            continue
        product = catalog.get(recipe.hardware)
        capacity = inventory.capacity(product.name) if product is not None else None
        if product is None or capacity is None:
            continue
        pinned = request.gpu_count is not None
        if request.gpu_count is not None and (
            request.gpu_count > capacity.max_free or not model.tp_divides(request.gpu_count)
        ):
            continue
        base = {
            k: v
            for k, v in recipe.args.items()
            if k not in ("pipeline_parallel_size", "data_parallel_size", "distributed_executor_backend")
        }

        def args_for(n: int, length: int, base: Mapping[str, Any] = base) -> dict[str, Any]:
            args = {**base, "tensor_parallel_size": n, "max_model_len": length}
            if args.get("enable_expert_parallel") and n == 1:
                args.pop("enable_expert_parallel")
            return args

        target = recipe.max_model_len or model.max_context

        def fit(n: int, recipe: Recipe = recipe, product: GpuProduct = product, target: int = target) -> int:
            probe = with_changes(recipe, gpu_count=n, nodes=1, args=args_for(n, target))
            plan = recipe_memory(probe, model, product)
            return plan.max_model_len_fit if plan.weights_fit else 0

        sizing = size_for_context(
            fit,
            sizes=[request.gpu_count] if request.gpu_count is not None else model.valid_tp_sizes(up_to=capacity.max_allocatable),
            free=capacity.max_free,
            context=target,
            whose="the recipe's",
            where=f"one {product.name} node",
            requested_len=request.max_model_len,
            min_context=request.min_context,
            pinned=pinned,
        )
        if sizing is None:
            continue
        n = sizing.gpus
        args = args_for(n, sizing.max_model_len)
        plan = recipe_memory(with_changes(recipe, gpu_count=n, nodes=1, args=args), model, product)
        suffix = f"-tp{n}" + ("" if args["max_model_len"] == target else f"-ctx{args['max_model_len']}")
        rid = (recipe.recipe_id + suffix)[:63].rstrip("-.")
        per_node = {product.resource: Decimal(n)}
        derived = with_changes(
            recipe,
            recipe_id=rid,
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
        out.append(((rank_key(recipe), sizing.tier, n, recipe.recipe_id), derived, plan, sizing))
    out.sort(key=lambda o: o[0])
    return [(r, p, t) for _, r, p, t in out]


def _outranked(recipe: Recipe, chosen: Recipe | None) -> Finding:
    if chosen is None:
        return Finding("OUTRANKED", "fits")
    a, b = rank_key(recipe), rank_key(chosen)
    if a[0] != b[0]:
        why = f"type {recipe.type} ranks below {chosen.type}"
    elif a[1] != b[1]:
        why = f"priority {recipe.priority} is below {chosen.priority}"
    elif a[2] != b[2]:
        why = f"{recipe.tokens_per_second_per_gpu:.0f} expected tok/s per GPU against {chosen.tokens_per_second_per_gpu:.0f}"
    elif a[3] != b[3]:
        why = f"uses {recipe.gpu_count} GPUs against {chosen.gpu_count}"
    else:
        why = f"precision {recipe.precision} ranks below {chosen.precision}"
    return Finding(
        "OUTRANKED",
        f"fits, but {chosen.recipe_id} ranks higher: {why}",
        "pin it with custom_recipe, or raise its priority in the catalog",
    )


def _not_found_message(
    *,
    request: Request,
    model: ModelProfile | None,
    pool: Sequence[Recipe],
    evaluated: Sequence[tuple[Recipe, list[Finding], list[Finding], MemoryPlan | None]],
    notes: Sequence[Finding],
    inventory: Inventory,
) -> str:
    lines: list[str] = []
    if not pool:
        lines.append(f"the catalog has no recipe for {request.model_id}")
    if model is None:
        lines.append(
            f"{request.model_id} is not in the bundled model table; pass --model-config with its config.json "
            "so a default recipe can be synthesised"
        )
    if not inventory.products:
        lines.append("no schedulable, ready node with a recognised GPU (see `aim-recipes detect`)")
    overrides = request.overrides
    if overrides:
        lines.append("overrides in force (never relaxed): " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    for line in dict.fromkeys(f"default: {f.message}" + (f" — {f.fix}" if f.fix else "") for f in notes):
        lines.append(line)
    if not request.allow_default:
        lines.append("the default (generic) level is disabled")
    near = [e for e in evaluated if e[1] or e[2]]
    if near:
        best = min(near, key=lambda e: (len(e[1]) + len(e[2]), rank_key(e[0])))
        first = (best[1] + best[2])[0]
        lines.append(f"closest: {best[0].recipe_id}: {first.message}" + (f" — {first.fix}" if first.fix else ""))
    return "no recipe fits: " + "; ".join(lines)


def _select_pinned(
    *,
    request: Request,
    model: ModelProfile | None,
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    inventory: Inventory,
    hardware: Mapping[str, Mapping[str, int]],
) -> Selection:
    recipe = request.custom_recipe
    assert recipe is not None
    reasons: list[Finding] = []
    if recipe.model_key != request.model_id.lower():
        reasons.append(
            Finding(
                "MODEL_MISMATCH",
                f"custom recipe {recipe.recipe_id} is for {recipe.huggingface_id}, not {request.model_id}",
                f"set model_id to {recipe.huggingface_id} or fix the recipe",
            )
        )
    reasons += override_findings(recipe, request)
    static, plan = static_findings(recipe, model=model, catalog=catalog, registry=registry, max_model_len=request.max_model_len)
    reasons += static
    product = catalog.get(recipe.hardware)
    if product is not None:
        reasons += capacity_findings(recipe, product, inventory)
    if reasons:
        message = f"custom recipe {recipe.recipe_id} refused: " + "; ".join(
            r.message + (f" — {r.fix}" if r.fix else "") for r in reasons
        )
        return Selection(
            request,
            model,
            None,
            None,
            "not_found",
            message,
            (Candidate(recipe, "rejected", tuple(reasons), "primary", plan),),
            (),
            hardware,
        )
    notes = [Finding("SELECTED", f"primary: custom recipe {recipe.recipe_id} pinned by the user; it passes every check")]
    if model is None:
        notes.append(
            Finding(
                "MODEL_UNANALYSED",
                f"{recipe.huggingface_id} is not in the bundled model table: memory fit was not checked",
                "pass --model-config with the model's config.json",
            )
        )
    return Selection(
        request,
        model,
        recipe,
        "primary",
        "selected",
        notes[0].message,
        (Candidate(recipe, "selected", tuple(notes), "primary", plan),),
        _placement(recipe, inventory),
        hardware,
    )
