"""Whether a workload agrees with the recipe it names: the admission webhook's validation.

A Deployment, StatefulSet, Pod or LeaderWorkerSet names its recipe with the label
`aim-engine.io/recipe-id` (read by aim_engine.rules.pod). `check_workload` judges each engine
container: its resources against the recipe's, the model it serves (aim_engine.rules.served_model;
first, since another model makes the rest moot), the configuration it runs (`running_recipe`: the
recipe with the container's flags) against the declared one, and that running configuration by the
same rules the selector uses (aim_engine.rules.compat), so a recipe the selector picks is never
one the webhook refuses. Pure: dicts in, findings out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from aim_engine.cluster.detect import AMD_PARTITION_LABEL, detect_node
from aim_engine.contract import (
    SERVED_MODEL_ANNOTATION,
    SLO_ANNOTATIONS,
)
from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import GpuProduct, HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import MIB, parse_quantity
from aim_engine.domain.recipe import Recipe, with_changes
from aim_engine.domain.vllm_args import ArgRegistry
from aim_engine.rules.compat import CPU_KV_CACHE_ENV, Finding, memory_findings, recipe_memory, static_findings
from aim_engine.rules.pod import (
    MalformedObject,
    PodTemplate,
    Workload,
    as_list,
    as_map,
    as_str_map,
    command_tokens,
    container_index,
    parse_flags,
    serving_templates,
)
from aim_engine.rules.served_model import model_findings
from aim_engine.rules.slo import check_slo, parse_slo, slo_bounds_text

QUANTIZATION_PRECISION = {
    "fp8": "fp8",
    "ptpc_fp8": "fp8",
    "fbgemm_fp8": "fp8",
    "modelopt": "fp8",
    "awq": "int4",
    "awq_marlin": "int4",
    "gptq": "int4",
    "gptq_marlin": "int4",
    "mxfp4": "mxfp4",
    "bitsandbytes": "int4",
}
DTYPE_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def _int_flag(flags: Mapping[str, str | bool], name: str, default: int, where: str) -> int:
    v = flags.get(name)
    if v is None:
        return default
    try:
        n = int(str(v))
    except ValueError:
        raise MalformedObject(f"{where}: --{name.replace('_', '-')} {v!r} is not an integer") from None
    if n < 1:
        raise MalformedObject(f"{where}: --{name.replace('_', '-')} must be at least 1, got {n}")
    return n


def effective_precision(flags: Mapping[str, str | bool], recipe: Recipe) -> str:
    q = flags.get("quantization")
    if isinstance(q, str) and q in QUANTIZATION_PRECISION:
        return QUANTIZATION_PRECISION[q]
    d = flags.get("dtype")
    if isinstance(d, str) and d in DTYPE_PRECISION and recipe.precision in ("bf16", "fp16"):
        return DTYPE_PRECISION[d]
    return recipe.precision


@dataclass(frozen=True, slots=True)
class Toggles:
    """admission_controller.validation.* of the seed."""

    check_resource_limits: bool = True
    check_recipe_compatibility: bool = True
    check_performance_constraints: bool = True


def _resources(container: Mapping[str, Any], kind: str, where: str) -> dict[str, Decimal]:
    raw = as_map(as_map(container.get("resources"), f"{where}.resources").get(kind), f"{where}.resources.{kind}")
    return {str(k): parse_quantity(v, field=f"{where}.resources.{kind}.{k}") for k, v in raw.items()}


def check_workload(
    workload: Workload,
    recipe: Recipe,
    *,
    model: ModelProfile | None,
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    toggles: Toggles,
) -> list[Finding]:
    """Everything that makes the workload contradict its recipe, each with the field, the value
    found, the value the recipe needs and the fix."""
    findings: list[Finding] = []
    product = catalog.get(recipe.hardware)
    if product is None:
        return [
            Finding(
                "UNKNOWN_HARDWARE",
                f"recipe {recipe.recipe_id} is for {recipe.hardware!r}, a GPU product aim-engine does not know",
            )
        ]
    engine_templates = serving_templates(workload)
    served: list[Finding] = []
    for t in workload.templates:
        idx = container_index(t, workload.annotations, catalog.gpu_resources)
        if idx is None:
            findings.append(Finding("NO_CONTAINER", f"{t.spec_path[1:]}.containers is empty", "add the vLLM container"))
            continue
        container = t.spec["containers"][idx]
        cname = container.get("name", idx)
        where = f"{t.spec_path[1:].replace('/', '.')}.containers[{cname}]"
        limits = _resources(container, "limits", where)
        requests = _resources(container, "requests", where)
        tokens, _ = command_tokens(container)
        flags = parse_flags(tokens)
        if toggles.check_resource_limits and product.is_cpu:
            findings += _cpu_resources(container, where=where, recipe=recipe, limits=limits, requests=requests, catalog=catalog)
        elif toggles.check_resource_limits:
            findings += _device_resources(
                where=where, recipe=recipe, product=product, catalog=catalog, limits=limits, requests=requests
            )
        if toggles.check_resource_limits:
            findings += _core_resources(where=where, recipe=recipe, limits=limits, requests=requests)
        if toggles.check_recipe_compatibility and t in engine_templates:
            on_template = as_str_map(t.metadata.get("annotations"), "annotations").get(SERVED_MODEL_ANNOTATION)
            served += model_findings(
                container,
                recipe,
                where=where,
                declared_on_template=on_template,
                declared_elsewhere=workload.annotations.get(SERVED_MODEL_ANNOTATION),
                registry=registry,
            )
            findings += _compat(
                t=t,
                where=where,
                flags=flags,
                container=container,
                requests=requests,
                recipe=recipe,
                model=model,
                product=product,
                catalog=catalog,
                registry=registry,
            )
    if toggles.check_performance_constraints:
        findings += _performance(workload, recipe)
    # A different model first: the recipe's memory plan, parallelism and baselines are then moot.
    return _dedupe(served + findings)


def _device_resources(
    *,
    where: str,
    recipe: Recipe,
    product: GpuProduct,
    catalog: HardwareCatalog,
    limits: Mapping[str, Decimal],
    requests: Mapping[str, Decimal],
) -> list[Finding]:
    """The container's device request against its recipe: the count, and the device itself — the
    vendor's, and for a partition recipe its partition profile (a MIG profile is a resource name of
    its own; a whole GPU of a partition recipe, or another profile, is refused)."""
    out: list[Finding] = []
    per_pod = recipe.gpus_per_node
    res = product.device_resource(limits, requests)
    gpus = limits.get(res, requests.get(res))
    if gpus is None:
        out.append(
            Finding(
                "GPU_LIMIT_MISSING",
                f"{where}.resources.limits has no {res}; recipe {recipe.recipe_id} needs {per_pod}",
                f'set resources.limits[{res}]: "{per_pod}"',
            )
        )
    elif gpus != per_pod:
        out.append(
            Finding(
                "GPU_COUNT_MISMATCH",
                f"{where}.resources.limits[{res}] is {gpus}; recipe {recipe.recipe_id} needs {per_pod}",
                f'set it to "{per_pod}" or choose a recipe for {gpus} GPUs',
            )
        )
    for other in sorted(catalog.gpu_resources - set(product.resources)):
        if other not in limits and other not in requests:
            continue
        others = catalog.by_resource(other)
        if others and product.partition is not None and others[0].partition is not None:
            out.append(
                Finding(
                    "PARTITION_MISMATCH",
                    f"{where} requests {other} ({others[0].partition.label}), but recipe {recipe.recipe_id} runs on "
                    f"{product.partition.label} ({product.resource})",
                    f"request {product.resource} instead, or choose a recipe for {others[0].name}",
                )
            )
        elif others and others[0].vendor == product.vendor:
            out.append(
                Finding(
                    "PARTITION_MISMATCH",
                    f"{where} requests {other} ({others[0].name}), but recipe {recipe.recipe_id} runs on whole "
                    f"{product.name} GPUs ({product.resource})",
                    f"request {product.resource} instead, or choose a recipe for {others[0].name}",
                )
            )
        else:
            out.append(
                Finding(
                    "GPU_VENDOR_MISMATCH",
                    f"{where} requests {other}, but recipe {recipe.recipe_id} runs on {product.name} ({res})",
                    f"request {res} instead",
                )
            )
    return out


def _core_resources(
    *, where: str, recipe: Recipe, limits: Mapping[str, Decimal], requests: Mapping[str, Decimal]
) -> list[Finding]:
    findings: list[Finding] = []
    for res in ("cpu", "memory"):
        for kind_name, have, need in (("requests", requests, recipe.requests), ("limits", limits, recipe.limits)):
            if res in need and res in have and have[res] < need[res]:
                findings.append(
                    Finding(
                        "RESOURCES_BELOW_RECIPE",
                        f"{where}.resources.{kind_name}.{res} is {_q(have[res], res)}; "
                        f"recipe {recipe.recipe_id} needs at least {_q(need[res], res)}",
                        f"raise resources.{kind_name}.{res} to {_q(need[res], res)}",
                    )
                )
            elif res in need and res not in have:
                findings.append(
                    Finding(
                        "RESOURCES_MISSING",
                        f"{where}.resources.{kind_name}.{res} is not set; recipe {recipe.recipe_id} needs {_q(need[res], res)}",
                        f"set resources.{kind_name}.{res}: {_q(need[res], res)} (the mutating webhook does)",
                    )
                )
    return findings


# Threads vLLM's CPU build may start: OpenMP's count, when the container fixes it.
CPU_THREAD_ENV = "OMP_NUM_THREADS"


def _cpu_resources(
    container: Mapping[str, Any],
    *,
    where: str,
    recipe: Recipe,
    limits: Mapping[str, Decimal],
    requests: Mapping[str, Decimal],
    catalog: HardwareCatalog,
) -> list[Finding]:
    """A CPU recipe's pod: no GPU (vLLM's CPU build would not use it, and it would hold a device
    another workload needs), and no more OpenMP threads than the cores it may use."""
    out: list[Finding] = []
    for res in sorted(catalog.gpu_resources):
        if res in limits or res in requests:
            out.append(
                Finding(
                    "GPU_ON_CPU_RECIPE",
                    f"{where} requests {res}, but recipe {recipe.recipe_id} runs on {recipe.hardware} (vLLM's CPU build)",
                    f"remove resources.limits/requests[{res}], or use a GPU recipe",
                )
            )
    cores = limits.get("cpu", requests.get("cpu"))
    for item in container.get("env") or []:
        if isinstance(item, Mapping) and item.get("name") == CPU_THREAD_ENV and isinstance(item.get("value"), str):
            try:
                threads = Decimal(item["value"])
            except ArithmeticError:
                continue
            if cores is not None and threads > cores:
                out.append(
                    Finding(
                        "CPU_THREADS_OVERSUBSCRIBED",
                        f"{where}: {CPU_THREAD_ENV}={item['value']} threads on {_q(cores, 'cpu')} CPU(s)",
                        f"set {CPU_THREAD_ENV} <= {_q(cores, 'cpu')} or raise resources.limits.cpu",
                    )
                )
    return out


def _q(value: Decimal, res: str) -> str:
    gib = Decimal(2**30)
    if res == "memory" and value >= gib:
        return f"{value / gib:.0f}Gi" if value % gib == 0 else f"{value / gib:.1f}Gi"
    return f"{value.normalize():f}"


def running_recipe(
    flags: Mapping[str, str | bool], recipe: Recipe, *, registry: ArgRegistry, where: str
) -> tuple[Recipe, list[Finding]]:
    """The recipe as this container runs it: the declared recipe with the engine arguments its
    command line sets (typed as the argument registry says) and the precision they force. A flag
    whose value is not of its argument's type is a finding (INVALID_ARG) and is left out."""
    args = dict(recipe.args)
    problems: list[Finding] = []
    for name, raw in flags.items():
        canonical = registry.canonical(name)
        spec = registry.specs.get(canonical)
        if spec is None:
            continue  # server options (--port, --host, ...) are not engine arguments
        if canonical in _PARALLEL_SIZES:
            args[canonical] = _int_flag(flags, name, 1, where)
            continue
        value, problem = _typed_flag(spec.type, raw)
        if problem:
            flag = "--" + name.replace("_", "-")
            problems.append(Finding("INVALID_ARG", f"{where}: {flag} {raw!r} {problem}", f"give {flag} {problem.split()[-1]}"))
        else:
            args[canonical] = value
    return with_changes(recipe, args=args, precision=effective_precision(flags, recipe)), problems


_PARALLEL_SIZES = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def _typed_flag(kind: str, raw: str | bool) -> tuple[object, str]:
    """A command-line value as the registry types it; (value, "") or (None, what is wrong)."""
    if kind == "bool":
        return (raw if isinstance(raw, bool) else True), ""  # a following word is a positional, not a value
    if raw is True or raw is False:
        return None, "needs a value"
    try:
        if kind == "int":
            return int(raw), ""
        if kind == "float":
            return float(raw), ""
    except ValueError:
        return None, f"is not {'an integer' if kind == 'int' else 'a number'}"
    return raw, ""


def _selected_device(catalog: HardwareCatalog, labels: Mapping[str, str], product: GpuProduct) -> GpuProduct | None:
    """The device a node selection names: the GPU product its labels say, and the partition where
    they say one (a single-strategy MIG product label, an AMD compute partition mode); for a
    partition recipe, a selection of its GPU that names no partition names no other device."""
    det = detect_node(catalog, labels, {product.physical.resource: 1})
    if det.product is None:
        return None
    if det.mig_profile:
        return catalog.partition_of(det.product, "mig", det.mig_profile) or det.product
    mode = labels.get(AMD_PARTITION_LABEL, "").strip().upper().partition("_")[0]
    if det.product.vendor == "amd" and mode:
        return det.product if mode == "SPX" else catalog.partition_of(det.product, "amd", mode) or det.product
    return product if product.physical is det.product else det.product


def _compat(
    *,
    t: PodTemplate,
    where: str,
    flags: Mapping[str, str | bool],
    container: Mapping[str, Any],
    requests: Mapping[str, Decimal],
    recipe: Recipe,
    model: ModelProfile | None,
    product: GpuProduct,
    catalog: HardwareCatalog,
    registry: ArgRegistry,
) -> list[Finding]:
    """The container against its recipe: first, does it run the recipe's parallel sizes and
    precision (drift); then the running configuration is judged by the same rules as any recipe
    (aim_engine.rules.compat: TP divisibility, precision support, argument values, context and
    memory), so the webhook never has a rule of its own the selector does not apply."""
    running, out = running_recipe(flags, recipe, registry=registry, where=where)
    if product.is_cpu:
        # vLLM's CPU build sizes its KV cache from the container's env, within the pod's memory.
        env = dict(running.env)
        for item in container.get("env") or []:
            if isinstance(item, Mapping) and item.get("name") == CPU_KV_CACHE_ENV and isinstance(item.get("value"), str):
                env[CPU_KV_CACHE_ENV] = item["value"]
        memory = {"memory": requests["memory"]} if "memory" in requests else {}
        running = with_changes(running, env=env, requests={**running.requests, **memory})
    for name, have, need in (
        ("tensor-parallel-size", running.tp, recipe.tp),
        ("pipeline-parallel-size", running.pp, recipe.pp),
        ("data-parallel-size", running.dp, recipe.dp),
    ):
        if have != need:
            out.append(
                Finding(
                    "PARALLELISM_MISMATCH",
                    f"{where} runs --{name} {have}; recipe {recipe.recipe_id} needs {need}",
                    f"set --{name} {need}",
                )
            )
    if product.supports(running.precision) and running.precision != recipe.precision:
        out.append(
            Finding(
                "PRECISION_MISMATCH",
                f"{where} runs {running.precision}; recipe {recipe.recipe_id} is {recipe.precision}",
                f"run {recipe.precision}, or choose a {running.precision} recipe",
            )
        )
    # Node selection must target the recipe's hardware.
    for label_set, source in _node_selections(t):
        detected = _selected_device(catalog, label_set, product)
        if detected is not None and detected.name != product.name:
            out.append(
                Finding(
                    "HARDWARE_MISMATCH",
                    f"{where}: {source} selects {detected.name} nodes, but recipe {recipe.recipe_id} is for {product.name}",
                    f"select {product.name} nodes, or use a recipe for {detected.name}",
                )
            )
    said = {f.code for f in out}
    rules, _ = static_findings(running, model=model, catalog=catalog, registry=registry)
    forced = flags.get("quantization") or flags.get("dtype")
    for f in rules:
        if f.code in said:
            continue
        fix = f.fix
        if f.code == "PRECISION_UNSUPPORTED" and running.precision != recipe.precision and isinstance(forced, str):
            flag = "--quantization" if flags.get("quantization") else "--dtype"
            fix = f"remove {flag} {forced} (recipe {recipe.recipe_id} is {recipe.precision}); or {fix}"
        out.append(Finding(f.code, f"{where}: {f.message}", fix))
    if not product.is_cpu:
        out += memory_clamp_findings(
            where=where, limits=_resources(container, "limits", where), running=running, model=model, product=product
        )
    return out


# HAMi's software GPU memory clamp (its device plugin and scheduler, HAMi-core's CUDA hooks): the
# pod's MiB per GPU, or a percentage of the GPU's memory. Under it vLLM's CUDA calls report the clamp
# as the device's total memory.
HAMI_MEMORY = "nvidia.com/gpumem"
HAMI_MEMORY_PERCENT = "nvidia.com/gpumem-percentage"
# Taken inside the clamp before vLLM measures free memory (HAMi-core and the CUDA context; HAMi's
# maintainers give "under 300M" for HAMi-core's own initialisation).
CLAMP_RESERVED_MIB = 300
VLLM_DEFAULT_UTILIZATION = Decimal("0.9")


def memory_clamp_findings(
    *,
    where: str,
    limits: Mapping[str, Decimal],
    running: Recipe,
    model: ModelProfile | None,
    product: GpuProduct,
) -> list[Finding]:
    """What makes vLLM fail to start under a software GPU memory clamp (HAMi). vLLM asks for
    gpu_memory_utilization x the total memory it is shown — the clamp — to be free at start, and
    fails ("Free memory on device ... is less than desired GPU memory utilization") when the clamp's
    own reservation leaves less; its CUDA-graph memory profiling measures the physical GPU, not the
    clamp, and runs out of memory; and the model, its activations and one full-length sequence of
    KV cache must fit in utilization x clamp. A KV cache given in bytes (--kv-cache-memory-bytes)
    skips vLLM's utilisation arithmetic and profiling; --enforce-eager skips the CUDA graphs."""
    if HAMI_MEMORY in limits:
        clamp_mib = int(limits[HAMI_MEMORY])
        source = f"{HAMI_MEMORY} {clamp_mib}"
    elif HAMI_MEMORY_PERCENT in limits:
        clamp_mib = int(product.memory_mib * limits[HAMI_MEMORY_PERCENT] / 100)
        source = f"{HAMI_MEMORY_PERCENT} {limits[HAMI_MEMORY_PERCENT]}"
    else:
        return []
    clamp_mib = min(clamp_mib, product.memory_mib)
    if clamp_mib <= CLAMP_RESERVED_MIB:
        return [
            Finding(
                "MEMORY_CLAMP_UTILIZATION",
                f"{where}: a GPU memory clamp of {clamp_mib} MiB ({source}) leaves vLLM nothing to load a model into",
                f"raise {HAMI_MEMORY}",
            )
        ]
    out: list[Finding] = []
    util = Decimal(str(running.args.get("gpu_memory_utilization", VLLM_DEFAULT_UTILIZATION)))
    in_bytes = running.args.get("kv_cache_memory_bytes") is not None
    ceiling = (Decimal(clamp_mib - CLAMP_RESERVED_MIB) / clamp_mib).quantize(Decimal("0.01"), rounding="ROUND_FLOOR")
    if not in_bytes and util > ceiling:
        out.append(
            Finding(
                "MEMORY_CLAMP_UTILIZATION",
                f"{where}: under a GPU memory clamp of {clamp_mib} MiB ({source}) vLLM is shown {clamp_mib} MiB as the "
                f"whole GPU and needs --gpu-memory-utilization {util} of it ({int(util * clamp_mib)} MiB) free at start, "
                f"but about {CLAMP_RESERVED_MIB} MiB of the clamp is taken before it looks: it fails to start",
                f"set --gpu-memory-utilization <= {ceiling}, or give the KV cache in bytes (--kv-cache-memory-bytes)",
            )
        )
    if not in_bytes and not running.args.get("enforce_eager"):
        out.append(
            Finding(
                "MEMORY_CLAMP_UTILIZATION",
                f"{where}: under a GPU memory clamp ({source}) vLLM's CUDA-graph memory profiling measures the "
                "physical GPU, not the clamp, and runs out of memory at start",
                "add --enforce-eager, or give the KV cache in bytes (--kv-cache-memory-bytes)",
            )
        )
    if model is not None:
        clamped = replace(product, memory_mib=clamp_mib)
        plan = recipe_memory(running, model, clamped)
        for f in memory_findings(plan, running, model, clamped):
            need = plan.weights + plan.activations + plan.overhead + plan.kv_per_token * plan.max_model_len
            out.append(
                Finding(
                    "MEMORY_CLAMP_UTILIZATION",
                    f"{where}: within the GPU memory clamp of {clamp_mib} MiB ({source}): {f.message}",
                    f"raise {HAMI_MEMORY} to at least {int(need / util / MIB) + CLAMP_RESERVED_MIB} MiB, or {f.fix}",
                )
            )
    return out


def _node_selections(t: PodTemplate) -> list[tuple[dict[str, str], str]]:
    """Label sets the pod can only land on: nodeSelector, and each required node-affinity term's
    single-valued In expressions (a term is one alternative; every alternative must fit)."""
    out: list[tuple[dict[str, str], str]] = []
    ns = as_str_map(t.spec.get("nodeSelector"), "nodeSelector")
    if ns:
        out.append((ns, "nodeSelector"))
    affinity = as_map(as_map(t.spec.get("affinity"), "affinity").get("nodeAffinity"), "affinity.nodeAffinity")
    required = as_map(affinity.get("requiredDuringSchedulingIgnoredDuringExecution"), "nodeAffinity.required")
    for i, term in enumerate(as_list(required.get("nodeSelectorTerms"), "nodeSelectorTerms")):
        labels: dict[str, str] = {}
        for raw_expr in as_list(as_map(term, "nodeSelectorTerm").get("matchExpressions"), "matchExpressions"):
            expr = as_map(raw_expr, "matchExpression")
            values = expr.get("values") or []
            if expr.get("operator") == "In" and isinstance(values, list) and len(values) == 1:
                labels[str(expr.get("key"))] = str(values[0])
        if labels:
            out.append(({**ns, **labels}, f"node affinity term {i}"))
    return out


def _performance(workload: Workload, recipe: Recipe) -> list[Finding]:
    """The workload's SLO annotations held to its recipe's figures by the selector's own check
    (rules.slo): a target the figures miss is refused; one they cannot decide is refused only when
    the recipe states no figures at all (nothing could be checked)."""
    declared = {key: workload.annotations.get(name) for key, name in SLO_ANNOTATIONS.items()}
    if not any(declared.values()):
        return []
    try:
        slo = parse_slo(f"{key}={value}" for key, value in declared.items() if value)
    except InputError as e:
        shown = ", ".join(f"{SLO_ANNOTATIONS[k]}={v!r}" for k, v in declared.items() if v)
        raise MalformedObject(f"SLO annotations must be positive numbers within {slo_bounds_text()}: {shown} ({e})") from e
    check = check_slo(recipe, slo, names=SLO_ANNOTATIONS)
    return [*check.missed, *(check.unverified if recipe.performance is None else ())]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        if (f.code, f.message) not in seen:
            seen.add((f.code, f.message))
            out.append(f)
    return out
