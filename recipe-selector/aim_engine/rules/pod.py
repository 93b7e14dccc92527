"""Kubernetes workloads that name a recipe, read as typed values: which objects are ours (the
recipe label), their pod templates (a LeaderWorkerSet's leader and workers), which container is
the engine, and its command line as tokens and vLLM flags. Pure: dicts in, values out."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aim_engine.contract import (
    CONTAINER_ANNOTATION,
    RECIPE_CONFIG_ANNOTATION,
    RECIPE_LABEL,
    SELECTED,
)
from aim_engine.domain.errors import InputError

SHORT_FLAGS = {"-tp": "tensor_parallel_size", "-pp": "pipeline_parallel_size", "-dp": "data_parallel_size", "-q": "quantization"}


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


def as_map(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedObject(f"{where} must be an object, got {type(value).__name__}")
    return value


def as_list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedObject(f"{where} must be a list, got {type(value).__name__}")
    return value


def as_str_map(value: object, where: str) -> dict[str, str]:
    raw = as_map(value, where)
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
    root = as_map(obj, "object")
    if not root:
        raise MalformedObject("object is empty or null")
    meta = as_map(root.get("metadata"), "metadata")
    labels = as_str_map(meta.get("labels"), "metadata.labels")
    annotations = as_str_map(meta.get("annotations"), "metadata.annotations")
    spec = as_map(root.get("spec"), "spec")
    templates: list[PodTemplate] = []
    group = 1
    if kind == "Pod":
        role, group = _lws_member(labels, annotations)
        templates.append(PodTemplate(role, "/spec", "/metadata", spec, meta))
    elif kind in ("Deployment", "StatefulSet"):
        tpl = as_map(spec.get("template"), "spec.template")
        templates.append(
            PodTemplate(
                "template",
                "/spec/template/spec",
                "/spec/template/metadata",
                as_map(tpl.get("spec"), "spec.template.spec"),
                as_map(tpl.get("metadata"), "spec.template.metadata"),
            )
        )
    elif kind == "LeaderWorkerSet":
        lwt = as_map(spec.get("leaderWorkerTemplate"), "spec.leaderWorkerTemplate")
        size = lwt.get("size", 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise MalformedObject(f"spec.leaderWorkerTemplate.size must be a positive integer, got {size!r}")
        group = size
        for role, key in (("leader", "leaderTemplate"), ("worker", "workerTemplate")):
            if key in lwt:
                tpl = as_map(lwt.get(key), f"spec.leaderWorkerTemplate.{key}")
                templates.append(
                    PodTemplate(
                        role,
                        f"/spec/leaderWorkerTemplate/{key}/spec",
                        f"/spec/leaderWorkerTemplate/{key}/metadata",
                        as_map(tpl.get("spec"), f"spec.leaderWorkerTemplate.{key}.spec"),
                        as_map(tpl.get("metadata"), f"spec.leaderWorkerTemplate.{key}.metadata"),
                    )
                )
    else:
        return None
    recipe_id = labels.get(RECIPE_LABEL)
    for t in templates:
        t_labels = as_str_map(t.metadata.get("labels"), f"{t.meta_path[1:].replace('/', '.')}.labels")
        t_ann = as_str_map(t.metadata.get("annotations"), f"{t.meta_path[1:].replace('/', '.')}.annotations")
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
    containers = as_list(template.spec.get("containers"), f"{template.spec_path[1:]}.containers")
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
        limits = as_map(as_map(c.get("resources"), "resources").get("limits"), "resources.limits")
        if any(r in limits for r in gpu_resources):
            return i
    return 0


def command_tokens(container: Mapping[str, Any]) -> tuple[list[str], bool]:
    """command + args as tokens; a `sh -c SCRIPT` command is split as the shell would (roughly).
    Returns (tokens, is_shell)."""
    command = [str(x) for x in as_list(container.get("command"), "command")]
    args = [str(x) for x in as_list(container.get("args"), "args")]
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
    command = [str(x) for x in as_list(container.get("command"), "command")]
    args = [str(x) for x in as_list(container.get("args"), "args")]
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
