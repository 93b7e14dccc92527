"""The default level's generic recipe, synthesised from the model analysis for a GPU product the
cluster has (type general, origin synthesized), sized by size_for_context()."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aim_engine.cluster.inventory import Inventory
from aim_engine.domain.hardware import AMD_DEFAULT_ENV, AMD_MULTI_GPU_ENV, PRECISION_ORDER, GpuProduct, HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import GIB
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.compat import Finding, recipe_memory
from aim_engine.rules.memory import MemoryPlan, min_gpus
from aim_engine.selection.feasibility import capacity_findings
from aim_engine.selection.request import Request
from aim_engine.selection.sizing import Sizing, SizingTier, size_for_context


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


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


@dataclass(frozen=True, slots=True)
class Synthesised:
    """A generic recipe for one GPU product, its memory plan and the sizing that chose it."""

    product: GpuProduct
    recipe: Recipe
    plan: MemoryPlan
    sizing: Sizing

    @property
    def order(self) -> tuple[SizingTier, int, int, int, int, str]:
        """Best first, across products: the whole context first, then the fewest GPUs, then the
        smallest device or partition that holds the model (dense packing: a 1B model takes a MIG
        1g.10gb or a CPX partition, not a whole GPU, when one is free), then the lowest precision;
        faster memory breaks ties only between devices that pack equally."""
        precision_rank = PRECISION_ORDER.get(self.recipe.precision, 99)
        return (
            self.sizing.tier,
            self.sizing.gpus,
            self.product.memory_mib,
            precision_rank,
            -self.product.bandwidth_gbps,
            self.product.name,
        )

    @property
    def shape(self) -> str:
        return f"{self.sizing.gpus} x {self.product.name} ({_gib(self.product.memory_mib)} GiB each)"


def packing_note(options: Sequence[Synthesised], *, model: ModelProfile) -> Finding | None:
    """Why the first option (options are best first) and not a larger device that also holds the
    model: the packing rule, said when another product was an option."""
    best, others = options[0], [o for o in options[1:] if o.product.name != options[0].product.name]
    if not others:
        return None
    return Finding(
        code="SMALLEST_DEVICE",
        message=f"synthesised for {best.shape}: the most context on the fewest devices, then the smallest device "
        f"that holds {model.id} ({best.sizing.max_model_len} tokens of context), so larger GPUs stay free; "
        f"also hold it: {', '.join(o.shape for o in others[:4])}; faster memory breaks ties only between devices "
        "that pack equally",
        fix="pin aim_engine.hardware.gpu_type (--gpu-type) to serve from another product",
    )


def _gib(mib: int) -> str:
    return f"{mib / 1024:.1f}"


def synthesis_options(
    model: ModelProfile, request: Request, inventory: Inventory, catalog: HardwareCatalog
) -> tuple[list[Synthesised], list[Finding]]:
    """The generic recipe for each product present that can hold the model now, best first, and
    why the other products got none."""
    options: list[Synthesised] = []
    notes: list[Finding] = []
    for name in inventory.product_names:
        cap = inventory.products[name]
        product = cap.product
        if request.gpu_type is not None and product.name.upper() != request.gpu_type.upper():
            continue
        if product.is_cpu:
            # CPU recipes come from the catalog: their cores, memory request and KV space are
            # measured choices, not derivable from GPU counts.
            notes.append(
                Finding(
                    code="HARDWARE_ABSENT",
                    message=f"no generic recipe is synthesised for {product.name}: CPU recipes come from the catalog",
                    fix=f"add a {product.name} recipe for {model.id} to the catalog (recipes/README.md)",
                )
            )
            continue
        precision = request.precision or (model.native_precision if product.supports(model.native_precision) else "bf16")
        if not product.supports(precision):
            notes.append(
                Finding(
                    code="PRECISION_UNSUPPORTED",
                    message=f"{product.name} cannot run {precision}",
                    fix=f"run {precision} on {', '.join(catalog.supporting(precision))}",
                )
            )
            continue
        if request.gpu_count is not None and product.max_tp and request.gpu_count > product.max_tp:
            # MIG instances (and any partition with a parallelism bound) cannot be joined by
            # tensor parallelism: the recipe would be one partition_findings() refuses.
            notes.append(
                Finding(
                    code="PARTITION_PARALLELISM",
                    message=f"gpu_count {request.gpu_count} on {product.name}: vLLM cannot join "
                    f"{request.gpu_count} {product.partition.label if product.partition else 'partitions'}; "
                    f"at most {product.max_tp} per engine",
                    fix=f"use gpu_count {product.max_tp} on a larger profile, or whole GPUs",
                )
            )
            continue
        if request.gpu_count is not None and not model.tp_divides(request.gpu_count):
            notes.append(
                Finding(
                    code="TP_INDIVISIBLE",
                    message=f"gpu_count {request.gpu_count} does not divide {model.id}'s "
                    f"{model.attention_heads} attention heads ({model.kv_heads} KV heads)",
                    fix=f"use gpu_count {', '.join(str(t) for t in model.valid_tp_sizes(up_to=16))}",
                )
            )
            continue

        def fit(n: int, product: GpuProduct = product, precision: str = precision) -> int:
            probe = synthesize(model, product, gpu_count=n, precision=precision, max_model_len=model.max_context)
            plan = recipe_memory(probe, model, product)
            return plan.max_model_len_fit if plan.weights_fit else 0

        sizing = size_for_context(
            fit,
            # a partition's parallelism bound (MIG: 1) caps the sizes as it caps a catalog recipe's
            sizes=[request.gpu_count]
            if request.gpu_count is not None
            else model.valid_tp_sizes(up_to=min(cap.max_allocatable, product.max_tp or cap.max_allocatable)),
            # A pinned count is not moved for capacity: capacity_findings() below says what is missing.
            free=request.gpu_count if request.gpu_count is not None else cap.max_free,
            context=model.max_context,
            whose="the model's",
            where=f"one {product.name} node",
            requested_len=request.max_model_len,
            min_context=request.min_context,
            pinned=request.gpu_count is not None,
        )
        if sizing is None:
            notes.extend(_unsized_notes(model, product, precision, request, inventory))
            continue
        recipe = synthesize(model, product, gpu_count=sizing.gpus, precision=precision, max_model_len=sizing.max_model_len)
        missing = capacity_findings(recipe, product, inventory)
        if missing:
            notes.extend(missing)
            continue
        options.append(Synthesised(product=product, recipe=recipe, plan=recipe_memory(recipe, model, product), sizing=sizing))
    options.sort(key=lambda o: o.order)
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
                code="INSUFFICIENT_MEMORY" if not plan.weights_fit else "KV_CACHE_TOO_SMALL",
                message=f"{n} x {product.name} at {precision}: {model.id} fits {plan.max_model_len_fit} tokens of context"
                f" (needs {length})",
                fix=f"use more than {n} GPUs",
            )
        ]
    smallest = min_gpus(model, product, precision, max_model_len=length, limit=product.max_tp or 64)
    if smallest is None:
        if product.max_tp:
            return [
                Finding(
                    code="INSUFFICIENT_MEMORY",
                    message=f"{model.id} at {precision} does not fit {product.max_tp} x {product.name}, the most "
                    f"{product.partition.label if product.partition else 'partitions'} one engine can use "
                    f"({length} tokens of context)",
                    fix=f"use a larger profile or whole {product.physical.name} GPUs, or a lower precision",
                )
            ]
        return [
            Finding(
                code="INSUFFICIENT_MEMORY",
                message=f"{model.id} at {precision} does not fit any tensor-parallel size of {product.name}",
                fix="use a GPU with more memory or a lower precision",
            )
        ]
    recipe = synthesize(model, product, gpu_count=smallest, precision=precision, max_model_len=length)
    return capacity_findings(recipe, product, inventory) or [
        Finding(
            code="INSUFFICIENT_MEMORY",
            message=f"{model.id} at {precision} needs {smallest} x {product.name} for {length} tokens of context",
            fix=f"free {smallest} GPUs on one {product.name} node",
        )
    ]
