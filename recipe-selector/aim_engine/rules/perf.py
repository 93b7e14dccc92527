"""The performance estimator behind every catalog figure marked `estimated` with method
"aim-engine-roofline-v1" (documented in docs/performance-estimates.md).

A decode step at concurrency C reads the weights it touches and every running sequence's KV cache,
and does 2 x active-parameters FLOPs per token; it takes the longer of the memory and compute
times, plus tensor-parallel all-reduce latency and a fixed scheduler overhead. Prefill of each
request is compute-bound and steals time from decode. Constants are fixed here, not fitted per
recipe; tests compare the estimator with the published figures the catalog cites.
"""

from __future__ import annotations

from dataclasses import dataclass

from aim_engine.domain.hardware import BYTES_PER_PARAM, GpuProduct
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.memory import kv_bytes_per_token, weight_bytes

METHOD = "aim-engine-roofline-v1"
BANDWIDTH_EFFICIENCY = 0.55
COMPUTE_EFFICIENCY = 0.35
PREFILL_EFFICIENCY = 0.5
STEP_OVERHEAD_S = 0.0015
ALLREDUCE_LATENCY_S = {"nvlink": 6e-6, "xgmi": 8e-6, "pcie": 20e-6}
INTER_NODE_LATENCY_S = 50e-6


@dataclass(frozen=True, slots=True)
class Estimate:
    tokens_per_second: int
    latency_ms: float  # mean inter-token latency


def _expert_split(model: ModelProfile) -> tuple[float, float]:
    """(shared parameters, parameters of one expert), from total/active and experts E, top-k."""
    total, active = float(model.parameters), float(model.active)
    experts, k = model.experts or 1, model.experts_per_token or 1
    if not model.is_moe or experts <= k:
        return active, 0.0
    per_expert = (total - active) / (experts - k)
    return active - k * per_expert, per_expert


def estimate(
    model: ModelProfile,
    product: GpuProduct,
    precision: str,
    *,
    tp: int,
    pp: int = 1,
    nodes: int = 1,
    kv_cache_dtype: str = "auto",
    input_tokens: int,
    output_tokens: int,
    concurrency: int,
) -> Estimate:
    n = tp * pp
    scale = float(weight_bytes(model, precision)) / float(model.parameters)  # bytes per parameter, effective
    if scale <= 0:
        scale = float(BYTES_PER_PARAM[precision])
    shared, per_expert = _expert_split(model)
    if per_expert:
        experts, k = model.experts or 1, model.experts_per_token or 1
        touched = 1 - (1 - k / experts) ** concurrency
        params_read = shared + experts * per_expert * touched
    else:
        params_read = float(model.parameters)
    avg_context = input_tokens + output_tokens / 2
    kv = float(kv_bytes_per_token(model, tp=tp, pp=pp, kv_cache_dtype=kv_cache_dtype))
    bytes_per_gpu = params_read * scale / n + concurrency * avg_context * kv / pp
    t_mem = bytes_per_gpu / (product.bandwidth_gbps * 1e9 * BANDWIDTH_EFFICIENCY)
    peak = product.peak_tflops.get(product.compute_precision(precision), 0) * 1e12
    flops = 2 * float(model.active) * concurrency / n
    t_comp = flops / (peak * COMPUTE_EFFICIENCY) if peak else 0.0
    t_comm = 0.0
    if tp > 1:
        t_comm += 2 * (model.layers / pp) * ALLREDUCE_LATENCY_S.get(product.interconnect_kind, 20e-6)
    if nodes > 1:
        t_comm += pp * INTER_NODE_LATENCY_S
    t_step = max(t_mem, t_comp) + t_comm + STEP_OVERHEAD_S
    prefill = 2 * float(model.active) * input_tokens / n / (peak * PREFILL_EFFICIENCY) if peak else 0.0
    total_time = output_tokens * t_step + concurrency * prefill
    tps = concurrency * output_tokens / total_time
    return Estimate(tokens_per_second=int(round(tps, -1)), latency_ms=round(t_step * 1000, 1))


DEFAULT_CONDITIONS: dict[str, int] = {"input_tokens": 1024, "output_tokens": 1024, "concurrency": 64}


def recipe_conditions(recipe: Recipe) -> dict[str, int]:
    """The recipe's stated conditions, the catalog's standard ones filling what it leaves out."""
    stated = recipe.performance.conditions if recipe.performance else {}
    return {**DEFAULT_CONDITIONS, **{k: v for k, v in stated.items() if v is not None and k in DEFAULT_CONDITIONS}}


def estimate_recipe(recipe: Recipe, model: ModelProfile, product: GpuProduct) -> Estimate:
    """The estimate for a recipe under its stated conditions (or the catalog's standard ones)."""
    conditions = recipe_conditions(recipe)
    return estimate(
        model,
        product,
        recipe.precision,
        tp=recipe.tp,
        pp=recipe.pp,
        nodes=recipe.nodes,
        kv_cache_dtype=str(recipe.args.get("kv_cache_dtype", "auto")),
        input_tokens=int(conditions["input_tokens"]),
        output_tokens=int(conditions["output_tokens"]),
        concurrency=int(conditions["concurrency"]),
    )
