"""The one definition of "this recipe fits this model on this hardware".

The selector (is a recipe feasible here?), `aim-recipes validate` (is a catalog entry sound?) and
the admission webhook (does this workload agree with its recipe?) all call these rules, so a recipe
the selector picks is never one the webhook refuses. Every rule yields a Finding with a stable
reason code, a message that names the value found and the value needed, and the fix."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from aim_engine.domain.hardware import GpuProduct, HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import GIB, format_gib
from aim_engine.domain.recipe import Recipe
from aim_engine.domain.vllm_args import ArgRegistry
from aim_engine.rules.memory import CPU_DEFAULT_KV_CACHE_GIB, CPU_RUNTIME_GIB, MemoryInputs, MemoryPlan, plan_memory

# Every reason code a Finding carries: stable, written to JSON, events and admission responses.
FindingCode = Literal[
    # A recipe against the model, the hardware and vLLM's arguments (this module)
    "UNKNOWN_HARDWARE",
    "PRECISION_UNSUPPORTED",
    "PRECISION_ARG_MISMATCH",
    "INVALID_ARG",
    "PARALLELISM_MISMATCH",
    "NODES_UNEVEN",
    "TP_INDIVISIBLE",
    "PP_TOO_LARGE",
    "EXPERT_PARALLEL_DENSE",
    "GPU_RESOURCE_MISMATCH",
    "GPU_VENDOR_MISMATCH",
    "CONTEXT_EXCEEDS_MODEL",
    "INSUFFICIENT_MEMORY",
    "KV_CACHE_TOO_SMALL",
    "CPU_ONE_ENGINE",
    "CPU_RESOURCES_MISSING",
    "CPU_KV_CACHE_UNSET",
    "CPU_NOT_CHOSEN",
    "PARTITION_PARALLELISM",
    # A recipe against the request's overrides and the workload's shape (selection)
    "OVERRIDE_BACKEND",
    "OVERRIDE_GPU_COUNT",
    "OVERRIDE_PRECISION",
    "OVERRIDE_GPU_TYPE",
    "WORKLOAD_SHAPE",
    "MODEL_MISMATCH",
    # A recipe against the cluster's nodes and free GPUs (selection)
    "HARDWARE_ABSENT",
    "HARDWARE_UNAVAILABLE",
    "NODE_TOO_SMALL",
    "NOT_ENOUGH_NODES",
    "FRAGMENTED",
    "NO_FREE_CAPACITY",
    "PACKED",
    "PARTITION",
    # The selection's outcome and its notes (selection)
    "SELECTED",
    "FALLBACK",
    "DERIVED",
    "SIZING",
    "SMALLEST_DEVICE",
    "MAX_MODEL_LEN_OVERRIDE",
    "MODEL_UNANALYSED",
    "OUTRANKED",
    "GENERAL_FALLBACK_ONLY",
    "AMBIGUOUS",
    "MEASURED",
    "MEASUREMENT_SET_ASIDE",
    # A workload against its recipe (rules.workload, the admission webhook)
    "NO_CONTAINER",
    "HARDWARE_MISMATCH",
    "PRECISION_MISMATCH",
    "GPU_COUNT_MISMATCH",
    "GPU_LIMIT_MISSING",
    "GPU_ON_CPU_RECIPE",
    "RESOURCES_MISSING",
    "RESOURCES_BELOW_RECIPE",
    "CPU_THREADS_OVERSUBSCRIBED",
    "PARTITION_MISMATCH",
    "MEMORY_CLAMP_UTILIZATION",
    "SLO_LATENCY",
    "SLO_THROUGHPUT",
    "SLO_UNKNOWN",
    "SLO_TTFT",
    # The served model against the recipe's (rules.served_model)
    "MODEL_MISSING",
    "MODEL_UNVERIFIED",
]


@dataclass(frozen=True, slots=True)
class Finding:
    code: FindingCode
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.fix:
            out["fix"] = self.fix
        return out


def memory_inputs(recipe: Recipe, *, max_model_len: int | None = None) -> MemoryInputs:
    a = recipe.args
    return _memory_inputs(
        tp=max(1, recipe.tp),
        pp=max(1, recipe.pp),
        max_model_len=max_model_len or recipe.max_model_len,
        util=_utilization(a.get("gpu_memory_utilization", 0.9)),
        kv=str(a.get("kv_cache_dtype", "auto")),
        batched=_int_arg(a.get("max_num_batched_tokens"), 8192),
        seqs=_int_arg(a.get("max_num_seqs"), 256),
        eager=a.get("enforce_eager") is True,
        cpu_kv=_gib(recipe.env.get(CPU_KV_CACHE_ENV)),
        cpu_memory=recipe.requests.get("memory", recipe.limits.get("memory", Decimal(0))),
    )


# vLLM's CPU build: KV-cache size in GiB (docs.vllm.ai, CPU installation, "Related runtime environment variables").
CPU_KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"


def _gib(value: str | None) -> Decimal:
    try:
        return Decimal(value) * GIB if value else Decimal(0)
    except ArithmeticError:
        return Decimal(0)


def _int_arg(value: object, default: int) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


@lru_cache(maxsize=4096)
def _memory_inputs(
    *,
    tp: int,
    pp: int,
    max_model_len: int | None,
    util: Decimal,
    kv: str,
    batched: int,
    seqs: int,
    eager: bool,
    cpu_kv: Decimal,
    cpu_memory: Decimal,
) -> MemoryInputs:
    return MemoryInputs(
        tp=tp,
        pp=pp,
        max_model_len=max_model_len,
        gpu_memory_utilization=util,
        kv_cache_dtype=kv,
        max_num_batched_tokens=batched,
        max_num_seqs=seqs,
        enforce_eager=eager,
        cpu_kv_cache_space=cpu_kv,
        cpu_memory=cpu_memory,
    )


@lru_cache(maxsize=256)
def _utilization_cached(value: float) -> Decimal:
    return Decimal(str(value))


def _utilization(value: object) -> Decimal:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _utilization_cached(float(value))
    return Decimal("0.9")


def recipe_memory(recipe: Recipe, model: ModelProfile, product: GpuProduct, *, max_model_len: int | None = None) -> MemoryPlan:
    return plan_memory(model, product, recipe.precision, memory_inputs(recipe, max_model_len=max_model_len))


def parallelism_findings(recipe: Recipe, model: ModelProfile | None) -> list[Finding]:
    out: list[Finding] = []
    tp, pp, dp = recipe.tp, recipe.pp, recipe.dp
    if tp * pp * dp != recipe.gpu_count:
        out.append(
            Finding(
                "PARALLELISM_MISMATCH",
                f"tensor_parallel_size {tp} x pipeline_parallel_size {pp} x data_parallel_size {dp} = {tp * pp * dp}, "
                f"but gpu_count is {recipe.gpu_count}",
                f"set gpu_count to {tp * pp * dp} or change the parallel sizes so their product is {recipe.gpu_count}",
            )
        )
    if recipe.nodes < 1 or recipe.gpu_count % recipe.nodes != 0:
        out.append(
            Finding(
                "NODES_UNEVEN",
                f"gpu_count {recipe.gpu_count} does not split evenly over {recipe.nodes} nodes",
                "make gpu_count a multiple of nodes",
            )
        )
    if model is not None:
        if not model.tp_divides(tp):
            valid = ", ".join(str(t) for t in model.valid_tp_sizes(up_to=max(16, tp)))
            out.append(
                Finding(
                    "TP_INDIVISIBLE",
                    f"tensor_parallel_size {tp} does not divide {model.id}'s {model.attention_heads} attention heads "
                    f"({model.kv_heads} KV heads)",
                    f"use a tensor_parallel_size of {valid}",
                )
            )
        if pp > model.layers:
            out.append(
                Finding(
                    "PP_TOO_LARGE",
                    f"pipeline_parallel_size {pp} exceeds {model.id}'s {model.layers} layers",
                    f"use pipeline_parallel_size <= {model.layers}",
                )
            )
        if recipe.args.get("enable_expert_parallel") is True and not model.is_moe:
            out.append(
                Finding(
                    "EXPERT_PARALLEL_DENSE",
                    f"enable_expert_parallel is set but {model.id} is not a mixture-of-experts model",
                    "remove enable_expert_parallel",
                )
            )
    return out


def precision_findings(recipe: Recipe, product: GpuProduct, catalog: HardwareCatalog) -> list[Finding]:
    if product.supports(recipe.precision):
        return []
    where = ", ".join(catalog.supporting(recipe.precision)) or "no known GPU"
    runs = ", ".join(sorted(product.native_precisions | product.weight_only_precisions))
    return [
        Finding(
            "PRECISION_UNSUPPORTED",
            f"{product.name} cannot run {recipe.precision} (it runs {runs})",
            f"use precision {sorted(product.native_precisions, key=len)[0] if product.native_precisions else 'bf16'} "
            f"on {product.name}, or run {recipe.precision} on {where}",
        )
    ]


def arg_findings(recipe: Recipe, registry: ArgRegistry) -> list[Finding]:
    out: list[Finding] = []
    for name, value in sorted(recipe.args.items()):
        canonical = registry.canonical(name)
        problem = registry.check(canonical, value)
        if problem:
            out.append(Finding("INVALID_ARG", problem, "fix or remove the argument (vLLM would refuse to start)"))
    quant = recipe.args.get("quantization")
    if quant in ("fp8", "ptpc_fp8") and recipe.precision != "fp8":
        out.append(
            Finding(
                "PRECISION_ARG_MISMATCH",
                f"quantization={quant} but precision is {recipe.precision}",
                "set precision: fp8 or remove the quantization argument",
            )
        )
    return out


def context_findings(recipe: Recipe, model: ModelProfile, *, max_model_len: int | None = None) -> list[Finding]:
    length = max_model_len or recipe.max_model_len
    if length is not None and length > model.max_context:
        return [
            Finding(
                "CONTEXT_EXCEEDS_MODEL",
                f"max_model_len {length} exceeds {model.id}'s context of {model.max_context} tokens",
                f"set max_model_len <= {model.max_context}",
            )
        ]
    return []


def cpu_findings(recipe: Recipe, product: GpuProduct) -> list[Finding]:
    """vLLM's CPU build: one engine per pod (gpu_count 1, no tensor or pipeline parallelism here),
    cores and memory requested (the scheduler places the pod by them, and the memory plan is
    checked against the request), and the KV-cache size set explicitly."""
    out: list[Finding] = []
    if recipe.gpu_count != 1 or recipe.nodes != 1:
        out.append(
            Finding(
                "CPU_ONE_ENGINE",
                f"{product.name} recipes run one engine per pod on one node; gpu_count is {recipe.gpu_count} over "
                f"{recipe.nodes} node(s)",
                "set gpu_count: 1, nodes: 1 and tensor/pipeline parallel size 1",
            )
        )
    missing = [r for r in ("cpu", "memory") if r not in recipe.requests]
    if missing:
        out.append(
            Finding(
                "CPU_RESOURCES_MISSING",
                f"a {product.name} recipe must request {' and '.join(missing)} (resources.requests)",
                "set resources.requests.cpu (cores for the engine's threads) and resources.requests.memory "
                f"(weights + {CPU_KV_CACHE_ENV} + {CPU_RUNTIME_GIB} GiB runtime)",
            )
        )
    if CPU_KV_CACHE_ENV not in recipe.env:
        out.append(
            Finding(
                "CPU_KV_CACHE_UNSET",
                f"a {product.name} recipe must set {CPU_KV_CACHE_ENV} (GiB of KV cache; vLLM takes 4 GiB when unset)",
                f'set env {CPU_KV_CACHE_ENV}, e.g. "1" for a short context',
            )
        )
    return out


def memory_findings(plan: MemoryPlan, recipe: Recipe, model: ModelProfile, product: GpuProduct) -> list[Finding]:
    if product.is_cpu:
        return _cpu_memory_findings(plan, recipe, model, product)
    if not plan.weights_fit:
        need = plan.weights + plan.activations + plan.overhead
        return [
            Finding(
                "INSUFFICIENT_MEMORY",
                f"insufficient GPU memory: {model.id} at {recipe.precision} needs {format_gib(need)} per GPU before any "
                f"KV cache on {recipe.gpu_count} x {product.name}, which offer {format_gib(plan.budget)} each",
                "use more GPUs, a lower precision, or a GPU with more memory",
            )
        ]
    if not plan.fits:
        return [
            Finding(
                "KV_CACHE_TOO_SMALL",
                f"the KV cache holds {plan.max_model_len_fit} tokens per GPU set, fewer than max_model_len "
                f"{plan.max_model_len} ({format_gib(plan.kv_per_token * plan.max_model_len)} of KV per GPU needed, "
                f"{format_gib(plan.kv_budget)} left after weights)",
                f"set max_model_len <= {plan.max_model_len_fit}"
                + ("" if str(recipe.args.get("kv_cache_dtype", "auto")).startswith("fp8") else ", use kv_cache_dtype fp8")
                + ", raise gpu_memory_utilization, or use more GPUs",
            )
        ]
    return []


def partition_findings(recipe: Recipe, product: GpuProduct) -> list[Finding]:
    """A partition recipe's parallelism: MIG instances cannot be joined by tensor or pipeline
    parallelism (NCCL does not run across MIG devices, and a container sees one), and a node of
    one GPU's partitions holds at most that many."""
    if product.partition is None:
        return []
    out: list[Finding] = []
    if product.max_tp and recipe.tp * recipe.pp > product.max_tp:
        out.append(
            Finding(
                "PARTITION_PARALLELISM",
                f"{product.name} is a {product.partition.label}: vLLM cannot join {recipe.tp * recipe.pp} of them "
                f"(tensor x pipeline parallel); at most {product.max_tp} per engine",
                f"use tensor_parallel_size=1 on one {product.partition.label}, a larger profile, "
                f"or whole {product.physical.name} GPUs",
            )
        )
    return out


def config_key(recipe: Recipe) -> Hashable:
    """What static_findings() reads of a recipe, hashable: two recipes with one key (a tuned
    variant's priority or figures aside) get the same findings and memory plan. Equal keys mean
    the same items in the same order with values of the same types (True is not 1); two equal
    mappings in another order, or model ids differing only in case, only miss the memo.
    Unhashable values (lists) are keyed by repr. This runs once per recipe of every selection:
    the model id is taken as written (not lowered) and the key hashed once, by the caller's dict."""
    a = recipe.args
    key = (
        recipe.huggingface_id,
        recipe.hardware,
        recipe.gpu_count,
        recipe.nodes,
        recipe.precision,
        tuple(a.items()),
        tuple(map(type, a.values())),
        tuple(recipe.env.items()) if recipe.env else (),
        tuple(recipe.requests.items()),
        tuple(recipe.limits.items()),
    )
    try:
        hash(key)
    except TypeError:
        return (key[:5], repr(sorted(a.items())), key[7:])
    return key


def static_findings(
    recipe: Recipe,
    *,
    model: ModelProfile | None,
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    max_model_len: int | None = None,
) -> tuple[list[Finding], MemoryPlan | None]:
    """Every rule that does not depend on the cluster's current usage."""
    findings: list[Finding] = []
    product = catalog.get(recipe.hardware)
    if product is None:
        known = ", ".join(p.name for p in catalog.products)
        findings.append(
            Finding(
                "UNKNOWN_HARDWARE", f"hardware {recipe.hardware!r} is not a GPU product aim-engine knows", f"use one of {known}"
            )
        )
    findings += arg_findings(recipe, registry)
    findings += parallelism_findings(recipe, model)
    if product is not None:
        findings += precision_findings(recipe, product, catalog)
        res = product.device_resource(recipe.limits, recipe.requests)
        if product.is_cpu:
            findings += cpu_findings(recipe, product)
        findings += partition_findings(recipe, product)
        for kind, values in (("requests", recipe.requests), ("limits", recipe.limits)):
            if product.is_cpu:
                break  # a CPU product's resource is the pod's cores, not a device count
            if res in values and values[res] * max(1, recipe.nodes) != recipe.gpu_count:
                findings.append(
                    Finding(
                        "GPU_RESOURCE_MISMATCH",
                        f"resources.{kind}[{res}] is {values[res]} per pod, but gpu_count {recipe.gpu_count} over "
                        f"{recipe.nodes} node(s) needs {recipe.gpu_count // max(1, recipe.nodes)}",
                        f"set resources.{kind}[{res}] to {recipe.gpu_count // max(1, recipe.nodes)}",
                    )
                )
        wrong = [r for r in catalog.gpu_resources if r != res and (r in recipe.requests or r in recipe.limits)]
        for r in wrong:
            findings.append(
                Finding(
                    "GPU_VENDOR_MISMATCH",
                    f"{product.name} is exposed as {' or '.join(product.resources)}, but the recipe requests {r}",
                    f"request {res} instead of {r}",
                )
            )
    plan = None
    if model is not None:
        findings += context_findings(recipe, model, max_model_len=max_model_len)
        if product is not None and not any(f.code in ("TP_INDIVISIBLE", "PARALLELISM_MISMATCH") for f in findings):
            plan = recipe_memory(recipe, model, product, max_model_len=max_model_len)
            findings += memory_findings(plan, recipe, model, product)
    return findings, plan


def _cpu_memory_findings(plan: MemoryPlan, recipe: Recipe, model: ModelProfile, product: GpuProduct) -> list[Finding]:
    asked = memory_inputs(recipe).cpu_kv_cache_space or CPU_DEFAULT_KV_CACHE_GIB * GIB  # vLLM's default when unset
    kv_space = plan.kv_budget if plan.kv_budget > 0 else asked
    if not plan.weights_fit:
        need = plan.weights + plan.activations + plan.overhead
        return [
            Finding(
                "INSUFFICIENT_MEMORY",
                f"insufficient memory on {product.name}: {model.id} at {recipe.precision} needs {format_gib(need)} "
                f"(weights, activations and the {CPU_RUNTIME_GIB} GiB runtime) plus {format_gib(kv_space)} of KV cache "
                f"({CPU_KV_CACHE_ENV}), but the pod requests {format_gib(plan.budget)}",
                f"raise resources.requests.memory to at least {format_gib(need + kv_space)} or lower {CPU_KV_CACHE_ENV}",
            )
        ]
    if not plan.fits:
        return [
            Finding(
                "KV_CACHE_TOO_SMALL",
                f"{CPU_KV_CACHE_ENV} {format_gib(plan.kv_budget)} holds {plan.max_model_len_fit} tokens, fewer than "
                f"max_model_len {plan.max_model_len}",
                f"set max_model_len <= {plan.max_model_len_fit} or raise {CPU_KV_CACHE_ENV} (and the memory request with it)",
            )
        ]
    return []
