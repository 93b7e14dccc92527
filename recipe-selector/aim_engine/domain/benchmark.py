"""Benchmark results as typed values: what `helm test` (vLLM's `vllm bench serve`) measured for a
release, at which conditions, with its provenance, or why it measured nothing.

Pure: parsing a client's result and keeping a release's history are functions of their inputs. The
ConfigMap that stores the history (`<release>-recipe-benchmarks`, key `benchmarks.json`) and the
client that produces results are edges."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aim_engine.domain.errors import InputError

Outcome = Literal["measured", "failed"]
# The client's figures kept, by vLLM's own result keys (vllm bench serve --save-result).
FIGURES = (
    "output_throughput",
    "total_token_throughput",
    "request_throughput",
    "mean_ttft_ms",
    "p50_ttft_ms",
    "p95_ttft_ms",
    "p99_ttft_ms",
    "mean_itl_ms",
    "p50_itl_ms",
    "p95_itl_ms",
    "p99_itl_ms",
    "mean_tpot_ms",
    "p50_tpot_ms",
    "p95_tpot_ms",
    "p99_tpot_ms",
    "mean_e2el_ms",
    "p50_e2el_ms",
    "p95_e2el_ms",
    "p99_e2el_ms",
)
HISTORY = 20  # results a release keeps, newest last


@dataclass(frozen=True, slots=True, kw_only=True)
class Conditions:
    input_tokens: int
    output_tokens: int
    concurrency: int
    request_rate: float | None  # None: as fast as the concurrency allows
    num_prompts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    release: str
    namespace: str
    recipe_id: str
    hardware: str
    node: str
    image: str
    engine_version: str
    client: str
    time: str  # RFC 3339, UTC


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchmarkResult:
    outcome: Outcome
    conditions: Conditions
    provenance: Provenance
    completed: int = 0
    failed: int = 0
    duration_seconds: float = 0.0
    figures: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""  # why a failed run measured nothing

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["figures"] = dict(self.figures)
        return out

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> BenchmarkResult:
        try:
            return BenchmarkResult(
                outcome=doc["outcome"],
                conditions=Conditions(**doc["conditions"]),
                provenance=Provenance(**doc["provenance"]),
                completed=int(doc.get("completed", 0)),
                failed=int(doc.get("failed", 0)),
                duration_seconds=float(doc.get("duration_seconds", 0.0)),
                figures={str(k): float(v) for k, v in (doc.get("figures") or {}).items()},
                reason=str(doc.get("reason", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a benchmark record ({e}): {json.dumps(doc)[:200]}") from e


def from_client(
    raw: Mapping[str, Any] | None,
    *,
    conditions: Conditions,
    provenance: Provenance,
    max_error_ratio: float,
    client_error: str = "",
) -> BenchmarkResult:
    """A run of vLLM's client as a record. No result file, a client that exited in error, nothing
    completed or a share of failed requests above `max_error_ratio` is a failure with its reason,
    never a number."""

    def failed(reason: str, *, completed: int = 0, errors: int = 0) -> BenchmarkResult:
        return BenchmarkResult(
            outcome="failed", conditions=conditions, provenance=provenance, completed=completed, failed=errors, reason=reason
        )

    if raw is None:
        return failed(client_error or "the benchmark client wrote no result (it could not reach the Service?)")
    try:
        completed = int(raw.get("completed", 0))
        errors = int(raw.get("failed", max(0, int(raw.get("num_prompts", 0)) - completed)))
        duration = float(raw.get("duration", 0.0))
    except (TypeError, ValueError) as e:
        return failed(f"unreadable client result ({e})")
    total = completed + errors
    if completed == 0:
        return failed(client_error or f"no request completed of {total}", errors=errors)
    if total and errors / total > max_error_ratio:
        return failed(
            f"{errors} of {total} requests failed ({errors / total:.1%}, above the bound {max_error_ratio:.1%})"
            + _error_samples(raw.get("error_samples")),
            completed=completed,
            errors=errors,
        )
    figures: dict[str, float] = {}
    for key in FIGURES:
        value = raw.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            figures[key] = float(value)
    if "output_throughput" not in figures:
        return failed("the client's result has no output_throughput", completed=completed, errors=errors)
    return BenchmarkResult(
        outcome="measured",
        conditions=conditions,
        provenance=provenance,
        completed=completed,
        failed=errors,
        duration_seconds=duration,
        figures=figures,
    )


def _error_samples(samples: object) -> str:
    """The client's distinct error messages (the chart's client keeps up to three as
    `error_samples`), for the reason of a run that failed too many requests."""
    if not isinstance(samples, list):
        return ""
    kept = [str(x).strip()[:300] for x in samples if isinstance(x, str) and x.strip()][:3]
    return ("; the client's errors: " + " | ".join(kept)) if kept else ""


def parse_history(text: str | None) -> list[BenchmarkResult]:
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise InputError(f"benchmarks.json is not JSON ({e})") from e
    if not isinstance(doc, list):
        raise InputError("benchmarks.json must be a list of benchmark records")
    return [BenchmarkResult.from_json(d) for d in doc if isinstance(d, Mapping)]


def with_result(history: Sequence[BenchmarkResult], result: BenchmarkResult) -> str:
    """The history with one more result, newest last, at most HISTORY kept."""
    kept = [*history, result][-HISTORY:]
    return json.dumps([r.to_json() for r in kept], indent=1, sort_keys=True)


def latest_measured(history: Sequence[BenchmarkResult], *, recipe_id: str | None = None) -> BenchmarkResult | None:
    """The newest successful measurement (of one recipe, if named)."""
    for r in reversed(history):
        if r.outcome == "measured" and (recipe_id is None or r.provenance.recipe_id == recipe_id):
            return r
    return None
