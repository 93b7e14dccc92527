"""Tuning (seed 000's autotuner: parameter grid -> deploy -> benchmark -> record the best) as pure
values: the grid, the trials it makes, the recipe each trial serves, a tune's state (what has run,
kept in a file so an interrupted tune resumes) and the best trial under an SLO.

The edges deploy each trial through the chart and the webhook and measure it with `helm test`
(aim_engine.cli.tune); this module decides nothing by I/O."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from aim_engine.domain.benchmark import BenchmarkResult
from aim_engine.domain.errors import InputError
from aim_engine.domain.recipe import PARALLEL_ARGS, Recipe, with_changes

Value = int | float | bool | str
ENV_PREFIX = "env."
TrialOutcome = Literal["measured", "failed"]
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Axis:
    """One tuned setting and the values tried: a vLLM argument as the recipe's config.args names
    it (`max_num_seqs`), or an environment variable (`env.VLLM_CPU_NUM_OF_RESERVED_CPU`)."""

    name: str
    values: tuple[Value, ...]

    @property
    def is_env(self) -> bool:
        return self.name.startswith(ENV_PREFIX)


def _value(text: str) -> Value:
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return t


def parse_grid(specs: Sequence[str]) -> tuple[Axis, ...]:
    """`NAME=V1,V2,...` per axis (the CLI's `--grid`, repeatable). Names are vLLM arguments in the
    recipe's spelling (snake_case) or `env.NAME`; values are typed (int, float, true/false, text)."""
    axes: dict[str, Axis] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip().replace("-", "_") if not name.strip().startswith(ENV_PREFIX) else name.strip()
        values = tuple(dict.fromkeys(_value(v) for v in raw.split(",") if v.strip()))
        if not sep or not name or not values:
            raise InputError(f"--grid {spec!r}: expected NAME=V1,V2,... (e.g. max_num_seqs=16,32,64)")
        if name in axes:
            raise InputError(f"--grid {name} is given twice")
        if name in FIXED:
            raise InputError(f"--grid {name}: {FIXED[name]}")
        axes[name] = Axis(name=name, values=values)
    return tuple(axes.values())


# Arguments a tune may not vary, and why.
FIXED: dict[str, str] = {
    "model": "the model is the tune's, not a setting (--model)",
    "served_model_name": "the served name is the release's",
    "host": "the chart sets the listening address",
    "port": "the chart sets the port",
}

Params = tuple[tuple[str, Value], ...]


def trial_params(grid: Sequence[Axis]) -> list[Params]:
    """Every combination of the grid's values, in the grid's order (the first axis varies slowest)."""
    return [tuple(zip((a.name for a in grid), combo, strict=True)) for combo in itertools.product(*(a.values for a in grid))]


def params_text(params: Params) -> str:
    return " ".join(f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in params) or "(the recipe as written)"


def trial_id(params: Params) -> str:
    """A short id stable across runs (the state file and the recipe id name trials by it)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return digest[:8]


def trial_recipe(base: Recipe, params: Params) -> Recipe:
    """The recipe a trial serves: `base` with the trial's arguments and environment, under its own
    id, claiming no performance until measured."""
    args = dict(base.args)
    env = dict(base.env)
    for name, value in params:
        if name.startswith(ENV_PREFIX):
            env[name.removeprefix(ENV_PREFIX)] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            args[name] = value
    gpu_count = base.gpu_count
    requests, limits = dict(base.requests), dict(base.limits)
    if any(name in PARALLEL_ARGS for name, _ in params):
        # Parallel sizes decide the GPUs: tp x pp x dp, and the GPU resources with them.
        gpu_count = 1
        for name in PARALLEL_ARGS:
            gpu_count *= int(args.get(name, 1))
        per_pod = Decimal(gpu_count // max(1, base.nodes))
        for res in (requests, limits):
            for key in [k for k in res if k.endswith("/gpu")]:
                res[key] = per_pod
    return with_changes(
        base,
        recipe_id=f"{base.recipe_id}-t{trial_id(params)}"[:63],
        gpu_count=gpu_count,
        args=args,
        env=env,
        requests=requests,
        limits=limits,
        performance=None,
        origin="custom",
        description=f"tune trial of {base.recipe_id}: {params_text(params)}",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    """One trial's outcome: its measurement, or why it measured nothing."""

    trial_id: str
    params: Params
    outcome: TrialOutcome
    seconds: float
    reason: str = ""
    result: BenchmarkResult | None = None  # the median run (by output tokens/s)
    runs: tuple[BenchmarkResult, ...] = ()  # every run of a measured trial (--repeats)

    @property
    def throughputs(self) -> tuple[float, ...]:
        runs = self.runs or ((self.result,) if self.result is not None else ())
        return tuple(r.figures.get("output_throughput", 0.0) for r in runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "params": [[k, v] for k, v in self.params],
            "outcome": self.outcome,
            "seconds": round(self.seconds, 1),
            "reason": self.reason,
            "result": self.result.to_json() if self.result is not None else None,
            "runs": [r.to_json() for r in self.runs],
        }

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> Trial:
        try:
            return Trial(
                trial_id=str(doc["trial_id"]),
                params=tuple((str(k), v) for k, v in doc["params"]),
                outcome=doc["outcome"],
                seconds=float(doc["seconds"]),
                reason=str(doc.get("reason", "")),
                result=BenchmarkResult.from_json(doc["result"]) if doc.get("result") else None,
                runs=tuple(BenchmarkResult.from_json(r) for r in doc.get("runs") or []),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a tune trial ({e}): {json.dumps(doc)[:200]}") from e


@dataclass(slots=True, kw_only=True)
class TuneState:
    """What a tune is and what has run: the file `aim-recipes tune --state` keeps (rewritten after
    every trial, so an interrupted tune resumes where it stopped)."""

    model_id: str
    base_recipe_id: str
    grid: tuple[Axis, ...]
    release: str
    namespace: str
    trials: list[Trial] = field(default_factory=list)

    def done(self) -> set[str]:
        return {t.trial_id for t in self.trials}

    def pending(self, *, retry_failed: bool = False) -> list[Params]:
        """The trials still to run, the baseline first; with `retry_failed`, the failed ones too."""
        done = {t.trial_id for t in self.trials if not (retry_failed and t.outcome == "failed")}
        return [p for p in [(), *trial_params(self.grid)] if trial_id(p) not in done]

    def record(self, trial: Trial) -> None:
        self.trials = [t for t in self.trials if t.trial_id != trial.trial_id] + [trial]

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "model_id": self.model_id,
                "base_recipe_id": self.base_recipe_id,
                "grid": [{"name": a.name, "values": list(a.values)} for a in self.grid],
                "release": self.release,
                "namespace": self.namespace,
                "trials": [t.to_json() for t in self.trials],
            },
            indent=1,
        )

    @staticmethod
    def from_json(text: str, *, where: str) -> TuneState:
        try:
            doc = json.loads(text)
            if doc.get("version") != STATE_VERSION:
                raise InputError(f"{where}: tune state version {doc.get('version')!r}, this aim-recipes reads {STATE_VERSION}")
            return TuneState(
                model_id=str(doc["model_id"]),
                base_recipe_id=str(doc["base_recipe_id"]),
                grid=tuple(Axis(name=str(a["name"]), values=tuple(a["values"])) for a in doc["grid"]),
                release=str(doc["release"]),
                namespace=str(doc["namespace"]),
                trials=[Trial.from_json(t) for t in doc["trials"]],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"{where}: not a tune state file ({e})") from e

    def same_tune(self, other: TuneState) -> str | None:
        """None when `other` is the same tune (resumable), else what differs."""
        for what in ("model_id", "base_recipe_id", "grid", "release", "namespace"):
            if getattr(self, what) != getattr(other, what):
                return f"{what} differs ({getattr(self, what)!r} in the state file, {getattr(other, what)!r} now)"
        return None


def median_run(runs: Sequence[BenchmarkResult]) -> BenchmarkResult:
    """The run whose output tokens/s is the median (the lower middle of an even count)."""
    ordered = sorted(runs, key=lambda r: r.figures.get("output_throughput", 0.0))
    return ordered[(len(ordered) - 1) // 2]
