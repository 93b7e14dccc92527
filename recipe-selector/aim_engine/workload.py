"""Workloads that name a recipe: how they name it, and whether they agree with it.

A Deployment, StatefulSet, Pod or LeaderWorkerSet names its recipe with the label
`aim-engine.io/recipe-id` (on the object or its pod template). The recipe is looked up in the
ConfigMap named by the annotation `aim-engine.io/recipe-config` (the release's selection, key
`recipe.yaml`) when present, else in the catalog. Objects without the label are not ours.

`check_workload` is the webhook's validation, built on the same rules (`compat`) the selector
uses, so a recipe the selector picks is never one the webhook refuses. Pure: dicts in, findings out.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .compat import Finding, memory_findings, recipe_memory
from .detect import detect_node
from .errors import InputError
from .hardware import HardwareCatalog
from .models import ModelProfile
from .quantity import parse_quantity
from .recipe import Recipe, with_changes
from .vllm_args import ArgRegistry

RECIPE_LABEL = "aim-engine.io/recipe-id"
# Label value of a workload whose recipe is whatever its release's selection ConfigMap holds: the
# webhook injects that recipe into each Pod at creation (and replaces the label with the recipe id).
SELECTED = "selected"
RECIPE_CONFIG_ANNOTATION = "aim-engine.io/recipe-config"
# The selection ConfigMap's key holding the nodeSelectorTerms that keep pods on the selected
# product's nodes (written by the selector, required by the webhook at Pod creation).
NODE_AFFINITY_KEY = "node-affinity.json"
CONTAINER_ANNOTATION = "aim-engine.io/container"
SLO_TPS_ANNOTATION = "aim-engine.io/slo-min-tokens-per-second"
SLO_LATENCY_ANNOTATION = "aim-engine.io/slo-max-latency-ms"
GPU_MODEL_LABEL = "aim-engine.io/gpu-model"
TP_LABEL = "aim-engine.io/tensor-parallel-size"
PRECISION_LABEL = "aim-engine.io/precision"

SHORT_FLAGS = {"-tp": "tensor_parallel_size", "-pp": "pipeline_parallel_size", "-dp": "data_parallel_size", "-q": "quantization"}
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


class MalformedObject(InputError):
    """The object does not have the shape its kind requires (wrong types, missing pod spec)."""


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """One pod spec inside the object, and where it is (JSON pointers for patches)."""

    role: str  # pod | template | leader | worker
    spec_path: str
    meta_path: str
    spec: Mapping[str, Any]
    metadata: Mapping[str, Any]


def delegated(workload: Workload) -> bool:
    """A controller (not a Pod) whose recipe is injected into its Pods at creation."""
    return workload.kind != "Pod" and workload.recipe_id == SELECTED


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    namespace: str
    name: str
    recipe_id: str
    recipe_config: str | None
    annotations: Mapping[str, str]
    templates: tuple[PodTemplate, ...]
    group_size: int = 1  # pods per replica (LeaderWorkerSet size)
    labels: Mapping[str, str] = field(default_factory=dict)


def _map(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedObject(f"{where} must be an object, got {type(value).__name__}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedObject(f"{where} must be a list, got {type(value).__name__}")
    return value


def _str_map(value: object, where: str) -> dict[str, str]:
    raw = _map(value, where)
    for k, v in raw.items():
        if not isinstance(v, str):
            raise MalformedObject(f"{where}[{k}] must be a string, got {type(v).__name__}")
    return dict(raw)


POLICED_KINDS = ("Deployment", "StatefulSet", "Pod", "LeaderWorkerSet")
# What the LeaderWorkerSet controller puts on the Pods of a group (sigs.k8s.io/lws api/v1).
LWS_SIZE_ANNOTATION = "leaderworkerset.sigs.k8s.io/size"
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"


def parse_workload(obj: object, *, kind: str, namespace: str) -> Workload | None:
    """The workload view of an admitted object, or None when it names no recipe."""
    root = _map(obj, "object")
    if not root:
        raise MalformedObject("object is empty or null")
    meta = _map(root.get("metadata"), "metadata")
    labels = _str_map(meta.get("labels"), "metadata.labels")
    annotations = _str_map(meta.get("annotations"), "metadata.annotations")
    spec = _map(root.get("spec"), "spec")
    templates: list[PodTemplate] = []
    group = 1
    if kind == "Pod":
        role, group = _lws_member(labels, annotations)
        templates.append(PodTemplate(role, "/spec", "/metadata", spec, meta))
    elif kind in ("Deployment", "StatefulSet"):
        tpl = _map(spec.get("template"), "spec.template")
        templates.append(
            PodTemplate(
                "template",
                "/spec/template/spec",
                "/spec/template/metadata",
                _map(tpl.get("spec"), "spec.template.spec"),
                _map(tpl.get("metadata"), "spec.template.metadata"),
            )
        )
    elif kind == "LeaderWorkerSet":
        lwt = _map(spec.get("leaderWorkerTemplate"), "spec.leaderWorkerTemplate")
        size = lwt.get("size", 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise MalformedObject(f"spec.leaderWorkerTemplate.size must be a positive integer, got {size!r}")
        group = size
        for role, key in (("leader", "leaderTemplate"), ("worker", "workerTemplate")):
            if key in lwt:
                tpl = _map(lwt.get(key), f"spec.leaderWorkerTemplate.{key}")
                templates.append(
                    PodTemplate(
                        role,
                        f"/spec/leaderWorkerTemplate/{key}/spec",
                        f"/spec/leaderWorkerTemplate/{key}/metadata",
                        _map(tpl.get("spec"), f"spec.leaderWorkerTemplate.{key}.spec"),
                        _map(tpl.get("metadata"), f"spec.leaderWorkerTemplate.{key}.metadata"),
                    )
                )
    else:
        return None
    recipe_id = labels.get(RECIPE_LABEL)
    for t in templates:
        t_labels = _str_map(t.metadata.get("labels"), f"{t.meta_path[1:].replace('/', '.')}.labels")
        t_ann = _str_map(t.metadata.get("annotations"), f"{t.meta_path[1:].replace('/', '.')}.annotations")
        recipe_id = recipe_id or t_labels.get(RECIPE_LABEL)
        annotations = {**t_ann, **annotations}
    if not recipe_id:
        return None
    if not templates or not any(t.spec for t in templates):
        raise MalformedObject(f"{kind} names recipe {recipe_id} but has no pod spec")
    return Workload(
        kind=kind,
        namespace=namespace,
        name=str(meta.get("name") or meta.get("generateName") or ""),
        recipe_id=recipe_id,
        recipe_config=annotations.get(RECIPE_CONFIG_ANNOTATION),
        annotations=annotations,
        templates=tuple(templates),
        group_size=group,
        labels=labels,
    )


def serving_templates(workload: Workload) -> list[PodTemplate]:
    """The templates whose container runs `vllm serve`: in a LeaderWorkerSet the leader (workers
    join it through Ray), and none in a worker Pod; otherwise the one template. Every template
    needs the GPUs."""
    leaders = [t for t in workload.templates if t.role == "leader"]
    return leaders or [t for t in workload.templates if t.role != "worker"]


def _lws_member(labels: Mapping[str, str], annotations: Mapping[str, str]) -> tuple[str, int]:
    """A Pod that a LeaderWorkerSet created: its role in the group (worker index 0 is the leader)
    and the group size, from the labels and annotation the LeaderWorkerSet controller sets."""
    size_text, index = annotations.get(LWS_SIZE_ANNOTATION), labels.get(LWS_WORKER_INDEX_LABEL)
    if size_text is None or index is None:
        return "pod", 1
    if not size_text.isdigit() or int(size_text) < 1:
        raise MalformedObject(f"metadata.annotations[{LWS_SIZE_ANNOTATION}] must be a positive integer, got {size_text!r}")
    size = int(size_text)
    if size == 1:
        return "pod", 1
    return ("leader" if index == "0" else "worker"), size


def container_index(template: PodTemplate, annotations: Mapping[str, str], gpu_resources: frozenset[str]) -> int | None:
    """Which container serves the model: the annotated one, one named vllm, the only one, the
    first requesting GPUs, else the first."""
    containers = _list(template.spec.get("containers"), f"{template.spec_path[1:]}.containers")
    if not containers:
        return None
    for i, c in enumerate(containers):
        if not isinstance(c, Mapping):
            raise MalformedObject(f"{template.spec_path[1:]}.containers[{i}] must be an object")
    wanted = annotations.get(CONTAINER_ANNOTATION)
    names = [c.get("name") for c in containers]
    if wanted:
        if wanted not in names:
            raise MalformedObject(f"annotation {CONTAINER_ANNOTATION}={wanted}: no container of that name (have {names})")
        return names.index(wanted)
    if "vllm" in names:
        return names.index("vllm")
    if len(containers) == 1:
        return 0
    for i, c in enumerate(containers):
        limits = _map(_map(c.get("resources"), "resources").get("limits"), "resources.limits")
        if any(r in limits for r in gpu_resources):
            return i
    return 0


def command_tokens(container: Mapping[str, Any]) -> tuple[list[str], bool]:
    """command + args as tokens; a `sh -c SCRIPT` command is split as the shell would (roughly).
    Returns (tokens, is_shell)."""
    command = [str(x) for x in _list(container.get("command"), "command")]
    args = [str(x) for x in _list(container.get("args"), "args")]
    tokens = command + args
    if len(tokens) >= 3 and tokens[0].rsplit("/", 1)[-1] in ("sh", "bash") and tokens[1] == "-c":
        try:
            return shlex.split(tokens[2]) + tokens[3:], True
        except ValueError:
            return tokens, True
    return tokens, False


def shell_forwards_args(container: Mapping[str, Any]) -> bool:
    """A `sh -c SCRIPT NAME [ARGS...]` command whose script passes "$@" on (e.g. `ray start --head
    && exec vllm serve MODEL "$@"`): arguments appended to the container reach the program. NAME
    ($0) must be there, or the first appended argument would become $0 and be lost."""
    command = [str(x) for x in _list(container.get("command"), "command")]
    args = [str(x) for x in _list(container.get("args"), "args")]
    tokens = command + args
    return len(tokens) >= 4 and tokens[0].rsplit("/", 1)[-1] in ("sh", "bash") and tokens[1] == "-c" and '"$@"' in tokens[2]


def parse_flags(tokens: Sequence[str]) -> dict[str, str | bool]:
    """vLLM flags from a command line: --name value, --name=value, --flag, --no-flag, -tp N."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name: str | None = None
        value: str | bool | None = None
        if tok in SHORT_FLAGS:
            name = SHORT_FLAGS[tok]
        elif tok.startswith("--") and len(tok) > 2:
            body = tok[2:]
            if "=" in body:
                body, value = body.split("=", 1)
            name = body.replace("-", "_")
            if name.startswith("no_") and value is None:
                out[name[3:]] = False
                i += 1
                continue
        if name is None:
            i += 1
            continue
        if value is None:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and not (nxt.startswith("--") or nxt in SHORT_FLAGS):
                value = nxt
                i += 1
            else:
                value = True
        out[name] = value
        i += 1
    return out


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
    raw = _map(_map(container.get("resources"), f"{where}.resources").get(kind), f"{where}.resources.{kind}")
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
        per_pod = recipe.gpus_per_node
        if toggles.check_resource_limits:
            gpus = limits.get(product.resource, requests.get(product.resource))
            if gpus is None:
                findings.append(
                    Finding(
                        "GPU_LIMIT_MISSING",
                        f"{where}.resources.limits has no {product.resource}; recipe {recipe.recipe_id} needs {per_pod}",
                        f'set resources.limits[{product.resource}]: "{per_pod}"',
                    )
                )
            elif gpus != per_pod:
                findings.append(
                    Finding(
                        "GPU_COUNT_MISMATCH",
                        f"{where}.resources.limits[{product.resource}] is {gpus}; recipe {recipe.recipe_id} needs {per_pod}",
                        f'set it to "{per_pod}" or choose a recipe for {gpus} GPUs',
                    )
                )
            for other in sorted(catalog.gpu_resources - {product.resource}):
                if other in limits or other in requests:
                    findings.append(
                        Finding(
                            "GPU_VENDOR_MISMATCH",
                            f"{where} requests {other}, but recipe {recipe.recipe_id} runs on "
                            f"{product.name} ({product.resource})",
                            f"request {product.resource} instead",
                        )
                    )
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
                                f"{where}.resources.{kind_name}.{res} is not set; recipe "
                                f"{recipe.recipe_id} needs {_q(need[res], res)}",
                                f"set resources.{kind_name}.{res}: {_q(need[res], res)} (the mutating webhook does)",
                            )
                        )
        if toggles.check_recipe_compatibility and t in engine_templates:
            findings += _compat(
                workload=workload,
                t=t,
                where=where,
                flags=flags,
                recipe=recipe,
                model=model,
                product=product,
                catalog=catalog,
                registry=registry,
            )
    if toggles.check_performance_constraints:
        findings += _performance(workload, recipe)
    return _dedupe(findings)


def _q(value: Decimal, res: str) -> str:
    gib = Decimal(2**30)
    if res == "memory" and value >= gib:
        return f"{value / gib:.0f}Gi" if value % gib == 0 else f"{value / gib:.1f}Gi"
    return f"{value.normalize():f}"


def _compat(
    *,
    workload: Workload,
    t: PodTemplate,
    where: str,
    flags: Mapping[str, str | bool],
    recipe: Recipe,
    model: ModelProfile | None,
    product: Any,
    catalog: HardwareCatalog,
    registry: ArgRegistry,
) -> list[Finding]:
    out: list[Finding] = []
    tp = _int_flag(flags, "tensor_parallel_size", 1, where)
    pp = _int_flag(flags, "pipeline_parallel_size", 1, where)
    dp = _int_flag(flags, "data_parallel_size", 1, where)
    for name, have, need in (
        ("tensor-parallel-size", tp, recipe.tp),
        ("pipeline-parallel-size", pp, recipe.pp),
        ("data-parallel-size", dp, recipe.dp),
    ):
        if have != need:
            out.append(
                Finding(
                    "PARALLELISM_MISMATCH",
                    f"{where} runs --{name} {have}; recipe {recipe.recipe_id} needs {need}",
                    f"set --{name} {need}",
                )
            )
    if tp * pp * dp != recipe.gpu_count and not out:
        out.append(
            Finding(
                "PARALLELISM_MISMATCH",
                f"--tensor-parallel-size {tp} x --pipeline-parallel-size {pp} x "
                f"--data-parallel-size {dp} = {tp * pp * dp} GPUs, but the recipe has {recipe.gpu_count}",
                f"make the product {recipe.gpu_count}",
            )
        )
    if model is not None and not model.tp_divides(tp):
        sizes = ", ".join(str(x) for x in model.valid_tp_sizes(up_to=16))
        out.append(
            Finding(
                "TP_INDIVISIBLE",
                f"--tensor-parallel-size {tp} does not divide {model.id}'s {model.attention_heads} attention heads",
                f"use one of {sizes}",
            )
        )
    # Node selection must target the recipe's hardware.
    for label_set, source in _node_selections(t):
        detected = detect_node(catalog, label_set, {product.resource: 1}).product
        if detected is not None and detected.name != product.name:
            out.append(
                Finding(
                    "HARDWARE_MISMATCH",
                    f"{where}: {source} selects {detected.name} nodes, but recipe {recipe.recipe_id} is for {product.name}",
                    f"select {product.name} nodes, or use a recipe for {detected.name}",
                )
            )
    precision = effective_precision(flags, recipe)
    if not product.supports(precision):
        forced = flags.get("quantization") or flags.get("dtype")
        out.append(
            Finding(
                "PRECISION_UNSUPPORTED",
                f"{where} forces {precision} (--quantization {forced}) but {product.name} cannot run {precision}",
                f"remove --quantization {forced}; {product.name} runs {', '.join(sorted(product.native_precisions))}",
            )
        )
    elif precision != recipe.precision:
        out.append(
            Finding(
                "PRECISION_MISMATCH",
                f"{where} runs {precision}; recipe {recipe.recipe_id} is {recipe.precision}",
                f"run {recipe.precision}, or choose a {precision} recipe",
            )
        )
    for name, value in flags.items():
        canonical = registry.canonical(name)
        spec = registry.specs.get(canonical)
        if (
            spec is not None
            and spec.choices is not None
            and isinstance(value, str)
            and spec.type == "str"
            and value not in spec.choices
        ):
            out.append(
                Finding(
                    "INVALID_ARG",
                    f"{where}: --{name.replace('_', '-')} {value} is not accepted by vLLM",
                    f"choose one of {', '.join(map(str, spec.choices))}",
                )
            )
    if model is not None and not any(f.code in ("TP_INDIVISIBLE", "PARALLELISM_MISMATCH") for f in out):
        args = dict(recipe.args)
        for key in ("max_model_len", "gpu_memory_utilization", "kv_cache_dtype", "max_num_seqs", "max_num_batched_tokens"):
            if key in flags and isinstance(flags[key], str):
                raw = str(flags[key])
                try:
                    args[key] = float(raw) if key == "gpu_memory_utilization" else (raw if key == "kv_cache_dtype" else int(raw))
                except ValueError:
                    out.append(
                        Finding(
                            "INVALID_ARG",
                            f"{where}: --{key.replace('_', '-')} {raw!r} is not a number",
                            f"give --{key.replace('_', '-')} a number",
                        )
                    )
                    return out
        args.update(tensor_parallel_size=tp, pipeline_parallel_size=pp)
        running = with_changes(recipe, args=args, precision=precision)
        length = running.max_model_len
        if length is not None and length > model.max_context:
            out.append(
                Finding(
                    "CONTEXT_EXCEEDS_MODEL",
                    f"{where}: --max-model-len {length} exceeds {model.id}'s context of {model.max_context}",
                    f"set --max-model-len <= {model.max_context}",
                )
            )
        elif product.supports(precision):
            plan = recipe_memory(running, model, product)
            out += [Finding(f.code, f"{where}: {f.message}", f.fix) for f in memory_findings(plan, running, model, product)]
    return out


def _node_selections(t: PodTemplate) -> list[tuple[dict[str, str], str]]:
    """Label sets the pod can only land on: nodeSelector, and each required node-affinity term's
    single-valued In expressions (a term is one alternative; every alternative must fit)."""
    out: list[tuple[dict[str, str], str]] = []
    ns = _str_map(t.spec.get("nodeSelector"), "nodeSelector")
    if ns:
        out.append((ns, "nodeSelector"))
    affinity = _map(_map(t.spec.get("affinity"), "affinity").get("nodeAffinity"), "affinity.nodeAffinity")
    required = _map(affinity.get("requiredDuringSchedulingIgnoredDuringExecution"), "nodeAffinity.required")
    for i, term in enumerate(_list(required.get("nodeSelectorTerms"), "nodeSelectorTerms")):
        labels: dict[str, str] = {}
        for raw_expr in _list(_map(term, "nodeSelectorTerm").get("matchExpressions"), "matchExpressions"):
            expr = _map(raw_expr, "matchExpression")
            values = expr.get("values") or []
            if expr.get("operator") == "In" and isinstance(values, list) and len(values) == 1:
                labels[str(expr.get("key"))] = str(values[0])
        if labels:
            out.append(({**ns, **labels}, f"node affinity term {i}"))
    return out


def _performance(workload: Workload, recipe: Recipe) -> list[Finding]:
    out: list[Finding] = []
    want_tps = workload.annotations.get(SLO_TPS_ANNOTATION)
    want_lat = workload.annotations.get(SLO_LATENCY_ANNOTATION)
    if not want_tps and not want_lat:
        return out
    perf = recipe.performance
    if perf is None:
        return [
            Finding(
                "SLO_UNKNOWN",
                f"recipe {recipe.recipe_id} states no expected performance, so the declared SLO cannot be checked",
                "use a recipe with expected figures or drop the SLO annotation",
            )
        ]
    try:
        if want_tps and perf.tokens_per_second < Decimal(want_tps):
            out.append(
                Finding(
                    "SLO_THROUGHPUT",
                    f"{SLO_TPS_ANNOTATION} is {want_tps} tok/s; recipe {recipe.recipe_id} expects {perf.tokens_per_second} tok/s",
                    "choose a faster recipe (more GPUs, fp8) or lower the SLO",
                )
            )
        if want_lat and perf.latency_ms > Decimal(want_lat):
            out.append(
                Finding(
                    "SLO_LATENCY",
                    f"{SLO_LATENCY_ANNOTATION} is {want_lat} ms; recipe {recipe.recipe_id} expects "
                    f"{perf.latency_ms} ms per token",
                    "choose a faster recipe or raise the latency SLO",
                )
            )
    except ArithmeticError:
        raise MalformedObject(f"SLO annotations must be numbers: {want_tps!r}, {want_lat!r}") from None
    return out


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        if (f.code, f.message) not in seen:
            seen.add((f.code, f.message))
            out.append(f)
    return out
