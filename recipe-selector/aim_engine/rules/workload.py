"""Workloads that name a recipe: how they name it, and whether they agree with it.

A Deployment, StatefulSet, Pod or LeaderWorkerSet names its recipe with the label
`aim-engine.io/recipe-id` (on the object or its pod template). The recipe is looked up in the
ConfigMap named by the annotation `aim-engine.io/recipe-config` (the release's selection, key
`recipe.yaml`) when present, else in the catalog. Objects without the label are not ours.

`check_workload` is the webhook's validation, built on the same rules (`compat`) the selector
uses, so a recipe the selector picks is never one the webhook refuses. It starts with the model
(`model_findings`): a workload serving another model than its recipe's is refused, since the
recipe's memory plan, parallelism and baselines then describe something else. Pure: dicts in,
findings out.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aim_engine.cluster.detect import detect_node
from aim_engine.contract import (
    CONTAINER_ANNOTATION,
    RECIPE_CONFIG_ANNOTATION,
    RECIPE_LABEL,
    SELECTED,
    SERVED_MODEL_ANNOTATION,
    SLO_LATENCY_ANNOTATION,
    SLO_TPS_ANNOTATION,
)
from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import GpuProduct, HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import parse_quantity
from aim_engine.domain.recipe import Recipe, with_changes
from aim_engine.domain.vllm_args import ArgRegistry
from aim_engine.rules.compat import Finding, static_findings

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


# Which model a container serves -------------------------------------------------------------------
#
# vLLM's semantics (docs/webhook.md, "The served model"): `vllm serve MODEL`, `vllm serve --model
# MODEL` (vLLM moves it to the positional's place; both at once is an error, and both are read
# here), `python -m vllm.entrypoints.openai.api_server --model MODEL` (that module parses but
# ignores a positional), a container with args only (the image's entrypoint,
# `vllm serve` in vLLM's images), and any of these inside a `sh -c` script, with "$@" standing for
# the container's remaining arguments. Kubernetes expands `$(VAR)` in command and args from the
# container's env before anything runs; a shell script's `$VAR` / `${VAR}` is read from the same
# env when it holds a literal value.

# What vLLM loads when the command line names no model (EngineArgs.model's default since vLLM 0.10;
# facebook/opt-125m before).
VLLM_DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
# vLLM flags that take no value and are not in the engine-args registry (whose bool flags take none
# either): reading `vllm serve --headless MODEL` must not take MODEL for --headless's value.
VALUELESS_FLAGS: frozenset[str] = frozenset(
    {
        "allow_credentials",
        "disable_async_output_proc",
        "disable_cascade_attn",
        "disable_fastapi_docs",
        "disable_frontend_multiprocessing",
        "disable_log_requests",
        "disable_log_stats",
        "disable_sliding_window",
        "disable_uvicorn_access_log",
        "enable_dbo",
        "enable_eplb",
        "enable_force_include_usage",
        "enable_log_outputs",
        "enable_log_requests",
        "enable_lora",
        "enable_prompt_tokens_details",
        "enable_request_id_headers",
        "enable_server_load_tracking",
        "enable_sleep_mode",
        "enable_ssl_refresh",
        "enable_tokenizer_info_endpoint",
        "grpc",
        "headless",
        "help",
        "return_tokens_as_token_ids",
        "skip_tokenizer_init",
        "version",
    }
)
SHORT_VALUE_FLAGS: frozenset[str] = frozenset({"-tp", "-pp", "-dp", "-q", "-asc", "-O"})
SHELLS: frozenset[str] = frozenset({"sh", "bash", "dash", "ash", "zsh"})
_WRAPPERS = frozenset({"exec", "env", "nohup", "command"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_KUBE_REF = re.compile(r"\$\$|\$\(([^()$]*)\)")
_SHELL_REF = re.compile(r"^\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})$")
_NEGATIVE_NUMBER = re.compile(r"^-\d")
_SEPARATORS = frozenset(";&|()<>\n")
# A Hugging Face repository id (`owner/name`, or a legacy `name`): matched case-insensitively.
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
ENTRYPOINT = "the image's entrypoint"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One place a command line names the model: the value (after Kubernetes' `$(VAR)` expansion)
    and how it is written (positional argument, --model, --model=)."""

    value: str
    written: str

    @property
    def dynamic(self) -> bool:
        """A variable nobody can read before the container runs (valueFrom, envFrom, the image's ENV)."""
        return "$" in self.value


@dataclass(frozen=True, slots=True)
class Invocation:
    """One run of vLLM's OpenAI server found in a container's command."""

    program: str  # `vllm serve` | `python -m vllm.entrypoints.openai.api_server` | the image's entrypoint
    refs: tuple[ModelRef, ...]
    config_file: bool = False  # --config FILE: the file may name the model
    ignored_positional: str | None = None  # the api_server module ignores a positional model


@dataclass(frozen=True, slots=True)
class ServedModel:
    """What a container's command line says about the model it serves."""

    invocations: tuple[Invocation, ...]
    unreadable: str = ""  # why no vLLM invocation can be read ("" when one can)


def same_model(found: str, expected: str) -> bool:
    """Hugging Face ids compare case-insensitively (the Hub resolves `qwen/qwen3-32b` to
    `Qwen/Qwen3-32B`, and the selector matches model ids the same way); paths and URIs exactly,
    ignoring a trailing slash (file systems and buckets are case-sensitive)."""
    a, b = found.strip(), expected.strip()
    if HUB_ID.match(a) and HUB_ID.match(b):
        return a.casefold() == b.casefold()
    return a.rstrip("/") == b.rstrip("/")


def _literal_env(container: Mapping[str, Any]) -> dict[str, str | None]:
    """The container's env: name -> literal value, or None when it is only known at run time."""
    out: dict[str, str | None] = {}
    env = container.get("env")
    for item in env if isinstance(env, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            value = item.get("value")
            out[item["name"]] = None if item.get("valueFrom") is not None else ("" if value is None else str(value))
    return out


def _kube_expand(token: str, env: Mapping[str, str | None]) -> str:
    """Kubernetes' expansion of command and args: `$(VAR)` -> the env value, `$$` -> `$`; a
    reference to a variable that is not set (or only set at run time) stays as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        value = env.get(m.group(1))
        return value if value is not None else m.group(0)

    return _KUBE_REF.sub(sub, token) if "$" in token else token


def _shell_expand(word: str, env: Mapping[str, str | None]) -> str:
    """A whole-word `$VAR` / `${VAR}` of a shell script, when the container's env sets it literally."""
    m = _SHELL_REF.match(word)
    if m is None:
        return word
    value = env.get(m.group(1) or m.group(2))
    return value if value else word


def _is_shell(tokens: Sequence[str]) -> bool:
    return len(tokens) >= 3 and tokens[0].rsplit("/", 1)[-1] in SHELLS and re.fullmatch(r"-[a-z]*c", tokens[1]) is not None


def _simple_commands(script: str) -> list[list[str]] | None:
    """The words of each simple command of a shell script (split at ; & | ( ) < > and newlines,
    comments dropped), or None when the script does not parse (unbalanced quotes)."""
    lex = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=";&|()<>\n")
    lex.whitespace = " \t\r"
    lex.whitespace_split = True
    try:
        tokens = list(lex)
    except ValueError:
        return None
    commands: list[list[str]] = []
    current: list[str] = []
    for tok in tokens:
        if tok and all(c in _SEPARATORS for c in tok):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(tok)
    if current:
        commands.append(current)
    return commands


def _invocation(words: Sequence[str]) -> tuple[str, list[str], bool] | None:
    """(program as written, its arguments, whether a positional names the model) when these words
    run vLLM's OpenAI server; None otherwise."""
    i = 0
    while i < len(words) and (words[i] in _WRAPPERS or _ASSIGNMENT.match(words[i])):
        i += 1
    if i >= len(words):
        return None
    program, rest = words[i].rsplit("/", 1)[-1], list(words[i + 1 :])
    if program == "vllm" and rest[:1] == ["serve"]:
        return "`vllm serve`", rest[1:], True
    if re.fullmatch(r"python[0-9.]*", program):
        j = 0
        while j < len(rest) and rest[j].startswith("-") and rest[j] != "-m":
            j += 1
        if j + 1 < len(rest) and rest[j] == "-m":
            module, tail = rest[j + 1], rest[j + 2 :]
            if module == API_SERVER_MODULE:
                return f"`python -m {module}`", tail, False
            if module == "vllm.entrypoints.cli.main" and tail[:1] == ["serve"]:
                return "`vllm serve`", tail[1:], True
    return None


def _takes_value(name: str, registry: ArgRegistry) -> bool:
    if name.startswith("no_"):
        return False
    spec = registry.specs.get(registry.canonical(name))
    if spec is not None:
        return spec.type != "bool"
    return name not in VALUELESS_FLAGS


def _read_invocation(program: str, args: Sequence[str], *, positional: bool, registry: ArgRegistry) -> Invocation:
    """Where the arguments of one vLLM run name the model."""
    refs: list[ModelRef] = []
    config = False
    ignored: str | None = None
    seen_positional = False
    i = 0
    while i < len(args):
        tok = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        value_next = nxt is not None and (not nxt.startswith("-") or _NEGATIVE_NUMBER.match(nxt) is not None)
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok[2:].partition("=")
            key = name.replace("-", "_")
            if key == "model":
                if eq:
                    refs.append(ModelRef(value, "--model="))
                elif nxt is not None and value_next:
                    refs.append(ModelRef(nxt, "--model"))
                    i += 1
            elif key == "config":
                config = True
                i += 1 if not eq and value_next else 0
            elif not eq and value_next and _takes_value(key, registry):
                i += 1
        elif tok.startswith("-") and len(tok) > 1 and _NEGATIVE_NUMBER.match(tok) is None:
            i += 1 if tok in SHORT_VALUE_FLAGS and value_next else 0
        elif positional and not seen_positional:
            refs.append(ModelRef(tok, "positional argument"))
            seen_positional = True
        elif not positional and ignored is None:
            ignored = tok
        i += 1
    return Invocation(program, tuple(refs), config, ignored)


def served_model(container: Mapping[str, Any], registry: ArgRegistry) -> ServedModel:
    """Every vLLM run in the container's command and where each names its model."""
    env = _literal_env(container)
    command = [_kube_expand(str(x), env) for x in _list(container.get("command"), "command")]
    args = [_kube_expand(str(x), env) for x in _list(container.get("args"), "args")]
    if not command:
        return ServedModel((_read_invocation(ENTRYPOINT, args, positional=True, registry=registry),))
    tokens = command + args
    if _is_shell(tokens):
        commands = _simple_commands(tokens[2])
        if commands is None:
            return ServedModel((), "its sh -c script does not parse (unbalanced quotes)")
        params = tokens[4:]  # "$@": the arguments after $0
        found: list[Invocation] = []
        for words in commands:
            inv = _invocation(words)
            if inv is None:
                continue
            program, inv_args, positional = inv
            expanded: list[str] = []
            for word in inv_args:
                expanded.extend(params if word in ("$@", "$*") else [_shell_expand(word, env)])
            found.append(_read_invocation(program, expanded, positional=positional, registry=registry))
        if not found:
            return ServedModel((), "its sh -c script runs no `vllm serve`")
        return ServedModel(tuple(found))
    inv = _invocation(tokens)
    if inv is None:
        return ServedModel((), f"its command ({' '.join(command)[:60]}) is not `vllm serve`")
    program, inv_args, positional = inv
    return ServedModel((_read_invocation(program, inv_args, positional=positional, registry=registry),))


def model_findings(
    container: Mapping[str, Any],
    recipe: Recipe,
    *,
    where: str,
    declared_on_template: str | None,
    declared_elsewhere: str | None,
    registry: ArgRegistry,
) -> list[Finding]:
    """The served model must be the recipe's: every place the command names a model names it (a
    Hugging Face id, case-insensitive), or the pod template declares with SERVED_MODEL_ANNOTATION
    that what it names (a path, a bucket, a mirror) is the recipe's model. A vLLM run that names no
    model serves vLLM's default: refused whatever the annotation says. --served-model-name is only
    the name clients use; it says nothing about the weights and is not consulted."""
    expected, rid = recipe.huggingface_id, recipe.recipe_id
    declared = (declared_on_template or "").strip() or None
    if declared is not None and not same_model(declared, expected):
        return [
            Finding(
                "MODEL_MISMATCH",
                f"{where}: annotation {SERVED_MODEL_ANNOTATION} declares {declared}, but recipe {rid} is for {expected}",
                f"serve {expected} (and declare it), or use a recipe for {declared}",
            )
        ]
    declare = f"annotate the pod template with {SERVED_MODEL_ANNOTATION}: {expected}"
    if declared_elsewhere and declared is None:
        declare = (
            f"move the annotation {SERVED_MODEL_ANNOTATION} from the object's metadata to the pod template's "
            "(the Pods carry only the template's)"
        )
    served = served_model(container, registry)
    if served.unreadable:
        if declared is not None:
            return []
        return [
            Finding(
                "MODEL_UNVERIFIED",
                f"{where}: {served.unreadable}, so the model it serves cannot be read; recipe {rid} is for {expected}",
                f"run `vllm serve {expected}`, or {declare} if the container loads {expected} another way",
            )
        ]
    out: list[Finding] = []
    for inv in served.invocations:
        for ref in inv.refs:
            if ref.dynamic:
                if declared is None:
                    out.append(
                        Finding(
                            "MODEL_UNVERIFIED",
                            f"{where} takes the model from {ref.value} ({ref.written} to {inv.program}), which is "
                            f"not a literal value of the container's env; recipe {rid} is for {expected}",
                            f"give the model literally ({expected}), or {declare}",
                        )
                    )
            elif not same_model(ref.value, expected) and declared is None:
                fix = (
                    f"serve {expected}, or use a recipe for {ref.value} (if it is a mirror of {expected}: {declare})"
                    if HUB_ID.match(ref.value)
                    else f"serve {expected}; if {ref.value} holds {expected}'s weights, {declare}"
                )
                out.append(
                    Finding(
                        "MODEL_MISMATCH",
                        f"{where} serves {ref.value} ({ref.written} to {inv.program}), but recipe {rid} is for {expected}",
                        fix,
                    )
                )
        if inv.refs:
            continue
        if inv.config_file:
            if declared is None:
                out.append(
                    Finding(
                        "MODEL_UNVERIFIED",
                        f"{where}: {inv.program} names no model but reads a --config file, which may name one and "
                        f"which the webhook cannot read; recipe {rid} is for {expected}",
                        f"give the model on the command line (`vllm serve {expected} --config ...`), or {declare}",
                    )
                )
        elif inv.program == ENTRYPOINT:
            if declared is None:
                out.append(
                    Finding(
                        "MODEL_MISSING",
                        f"{where} sets no command and its args name no model: the image's entrypoint (`vllm serve` in "
                        f"vLLM's images) would serve vLLM's default model ({VLLM_DEFAULT_MODEL}), not {expected} "
                        f"of recipe {rid}",
                        f"add --model {expected} to the args, or {declare} if the image's entrypoint names it",
                    )
                )
        else:
            ignored = (
                f" (it ignores the positional {inv.ignored_positional}: that module reads only --model)"
                if inv.ignored_positional
                else ""
            )
            out.append(
                Finding(
                    "MODEL_MISSING",
                    f"{where}: {inv.program} names no model{ignored}, so vLLM serves its default "
                    f"({VLLM_DEFAULT_MODEL}), not {expected} of recipe {rid}",
                    f"pass the model: `vllm serve {expected}` or --model {expected}",
                )
            )
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
            on_template = _str_map(t.metadata.get("annotations"), "annotations").get(SERVED_MODEL_ANNOTATION)
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


def _compat(
    *,
    t: PodTemplate,
    where: str,
    flags: Mapping[str, str | bool],
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
        detected = detect_node(catalog, label_set, {product.resource: 1}).product
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
