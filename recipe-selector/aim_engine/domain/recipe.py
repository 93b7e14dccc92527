"""The recipe: typed form of one catalog entry (the seed's format plus type, priority, nodes,
env, conditions and provenance), and its serialisation back to the seed's format."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal, TypedDict, Unpack, get_args

from aim_engine.domain.errors import InputError
from aim_engine.domain.quantity import parse_quantity

# As AMD AIM profiles, best first: optimized (tuned and measured), preview (tuned, not fully
# measured), unoptimized (works, untuned), general (the generic fallback, default level only).
RecipeType = Literal["optimized", "preview", "unoptimized", "general"]
RECIPE_TYPES: tuple[RecipeType, ...] = get_args(RecipeType)
TYPE_RANK: dict[RecipeType, int] = {t: i for i, t in enumerate(RECIPE_TYPES)}

# Where a recipe came from: the catalog, a user's custom recipe (file or ConfigMap), or built by
# the selector: derived from a catalog recipe (tertiary level) or synthesised from the model
# analysis (default level).
RecipeOrigin = Literal["catalog", "custom", "derived", "synthesized"]


@dataclass(frozen=True, slots=True)
class Performance:
    tokens_per_second: Decimal
    latency_ms: Decimal  # mean inter-token latency
    conditions: Mapping[str, Any]
    provenance: Mapping[str, Any]
    ttft_p95_ms: Decimal | None = None  # optional: what SLO targets are checked against
    itl_p95_ms: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Recipe:
    recipe_id: str
    huggingface_id: str
    hardware: str
    gpu_count: int
    precision: str
    backend: str
    type: RecipeType = "unoptimized"
    priority: int = 0
    nodes: int = 1
    description: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    performance: Performance | None = None
    requests: Mapping[str, Decimal] = field(default_factory=dict)
    limits: Mapping[str, Decimal] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    origin: RecipeOrigin = "catalog"

    @property
    def model_key(self) -> str:
        return self.huggingface_id.lower()

    @property
    def tp(self) -> int:
        return int(self.args.get("tensor_parallel_size", 1))

    @property
    def pp(self) -> int:
        return int(self.args.get("pipeline_parallel_size", 1))

    @property
    def dp(self) -> int:
        return int(self.args.get("data_parallel_size", 1))

    @property
    def gpus_per_node(self) -> int:
        return self.gpu_count // self.nodes if self.nodes else self.gpu_count

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def max_model_len(self) -> int | None:
        value = self.args.get("max_model_len")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def tokens_per_second_per_gpu(self) -> Decimal:
        if self.performance is None:
            return Decimal(0)
        return self.performance.tokens_per_second / self.gpu_count

    def to_seed(self) -> dict[str, Any]:
        """The recipe in the seed's recipe.yaml format (with aim-engine's extra keys)."""
        if self.raw:
            return dict(self.raw)
        return recipe_to_dict(self)


def _resources(raw: Mapping[str, Any] | None, where: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for name, value in (raw or {}).items():
        out[str(name)] = parse_quantity(value, field=f"{where}.{name}")
    return out


PARALLEL_ARGS: tuple[str, ...] = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def default_parallelism(*, gpu_count: int, nodes: int) -> dict[str, int]:
    """The parallelism a vLLM user expects from a recipe that gives gpu_count but no parallel sizes:
    tensor parallel over each node's GPUs and, for a multi-node recipe, pipeline parallel across the
    nodes. Whether the model's heads split that way is checked like any other TP (TP_INDIVISIBLE)."""
    if gpu_count <= 1 or nodes < 1 or gpu_count % nodes != 0:
        return {}
    out = {"tensor_parallel_size": gpu_count // nodes}
    if nodes > 1:
        out["pipeline_parallel_size"] = nodes
    return {k: v for k, v in out.items() if v > 1}


def with_default_parallelism(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """The recipe document with default_parallelism() filled in when it names no parallel size, so
    the recipe written as the selection, the webhook's injected flags and the checks all see it."""
    config_raw = raw.get("config")
    config: Mapping[str, Any] = config_raw if isinstance(config_raw, Mapping) else {}
    args_raw = config.get("args")
    args: Mapping[str, Any] = args_raw if isinstance(args_raw, Mapping) else {}
    gpu_count, nodes = raw.get("gpu_count"), raw.get("nodes", 1)
    if any(k in args for k in PARALLEL_ARGS) or not isinstance(gpu_count, int) or not isinstance(nodes, int):
        return raw
    extra = default_parallelism(gpu_count=gpu_count, nodes=nodes)
    if not extra:
        return raw
    return {**raw, "config": {**config, "args": {**args, **extra}}}


def recipe_type(value: object) -> RecipeType:
    """The recipe type named by `value` (the schema's enum), or ValueError."""
    for t in RECIPE_TYPES:
        if value == t:
            return t
    raise ValueError(f"type {value!r} is not one of {', '.join(RECIPE_TYPES)}")


def parse_recipe(raw: Mapping[str, Any], *, origin: RecipeOrigin = "catalog", where: str = "recipe") -> Recipe:
    """Build a Recipe from a mapping that already passed the JSON Schema. A recipe that names no
    parallel size gets default_parallelism()."""
    try:
        raw = with_default_parallelism(raw)
        config = raw.get("config") or {}
        perf_raw = raw.get("performance")
        perf = None
        if perf_raw:
            perf = Performance(
                tokens_per_second=Decimal(str(perf_raw["expected_tokens_per_second"])),
                latency_ms=Decimal(str(perf_raw["expected_latency_ms"])),
                conditions=dict(perf_raw.get("conditions") or {}),
                provenance=dict(perf_raw.get("provenance") or {}),
                ttft_p95_ms=_optional_decimal(perf_raw.get("expected_ttft_p95_ms")),
                itl_p95_ms=_optional_decimal(perf_raw.get("expected_itl_p95_ms")),
            )
        resources = raw.get("resources") or {}
        return Recipe(
            recipe_id=str(raw["recipe_id"]),
            huggingface_id=str(raw["huggingface_id"]),
            hardware=str(raw["hardware"]),
            gpu_count=int(raw["gpu_count"]),
            precision=str(raw["precision"]),
            backend=str(raw["backend"]),
            type=recipe_type(raw.get("type", "unoptimized")),
            priority=int(raw.get("priority", 0)),
            nodes=int(raw.get("nodes", 1)),
            description=str(raw.get("description", "")),
            args=dict(config.get("args") or {}),
            env={str(k): str(v) for k, v in (config.get("env") or {}).items()},
            performance=perf,
            requests=_resources(resources.get("requests"), f"{where}: resources.requests"),
            limits=_resources(resources.get("limits"), f"{where}: resources.limits"),
            raw=dict(raw),
            origin=origin,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: malformed recipe ({e})") from e


def _optional_decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _quantity_str(value: Decimal) -> str:
    gib = Decimal(2**30)
    if value >= gib and value % gib == 0:
        return f"{int(value / gib)}Gi"
    if value == value.to_integral_value():
        return str(int(value))
    return f"{int(value * 1000)}m"


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    out: dict[str, Any] = {
        "recipe_id": recipe.recipe_id,
        "huggingface_id": recipe.huggingface_id,
        "hardware": recipe.hardware,
        "gpu_count": recipe.gpu_count,
        "precision": recipe.precision,
        "backend": recipe.backend,
        "type": recipe.type,
        "priority": recipe.priority,
    }
    if recipe.nodes != 1:
        out["nodes"] = recipe.nodes
    if recipe.description:
        out["description"] = recipe.description
    config: dict[str, Any] = {"args": dict(recipe.args)}
    if recipe.env:
        config["env"] = dict(recipe.env)
    out["config"] = config
    if recipe.performance is not None:
        perf: dict[str, Any] = {
            "expected_tokens_per_second": _num(recipe.performance.tokens_per_second),
            "expected_latency_ms": _num(recipe.performance.latency_ms),
        }
        if recipe.performance.ttft_p95_ms is not None:
            perf["expected_ttft_p95_ms"] = _num(recipe.performance.ttft_p95_ms)
        if recipe.performance.itl_p95_ms is not None:
            perf["expected_itl_p95_ms"] = _num(recipe.performance.itl_p95_ms)
        if recipe.performance.conditions:
            perf["conditions"] = dict(recipe.performance.conditions)
        if recipe.performance.provenance:
            perf["provenance"] = dict(recipe.performance.provenance)
        out["performance"] = perf
    if recipe.requests or recipe.limits:
        out["resources"] = {
            "requests": {k: _quantity_str(v) for k, v in recipe.requests.items()},
            "limits": {k: _quantity_str(v) for k, v in recipe.limits.items()},
        }
    return out


def _num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


class RecipeChanges(TypedDict, total=False):
    """The fields with_changes() may change (every field but `raw`), so mypy checks each call."""

    recipe_id: str
    huggingface_id: str
    hardware: str
    gpu_count: int
    precision: str
    backend: str
    type: RecipeType
    priority: int
    nodes: int
    description: str
    args: Mapping[str, Any]
    env: Mapping[str, str]
    performance: Performance | None
    requests: Mapping[str, Decimal]
    limits: Mapping[str, Decimal]
    origin: RecipeOrigin


def with_changes(recipe: Recipe, **changes: Unpack[RecipeChanges]) -> Recipe:
    """A copy with fields changed; the raw document is rebuilt from the typed fields."""
    return replace(recipe, raw={}, **changes)


def serving_fingerprint(recipe: Recipe) -> str:
    """What the pods serving `recipe` are made of: its id and everything the webhook injects (GPUs,
    parallel sizes and every vLLM argument, environment, resources), not its figures. A Pod whose
    fingerprint differs from its selection's serves an outdated recipe (the webhook writes it on
    each Pod; the reconcile Job of every revision replaces such Pods)."""
    doc = {
        "recipe_id": recipe.recipe_id,
        "hardware": recipe.hardware,
        "gpu_count": recipe.gpu_count,
        "nodes": recipe.nodes,
        "precision": recipe.precision,
        "backend": recipe.backend,
        "args": dict(recipe.args),
        "env": dict(recipe.env),
        "requests": {k: str(v) for k, v in recipe.requests.items()},
        "limits": {k: str(v) for k, v in recipe.limits.items()},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
