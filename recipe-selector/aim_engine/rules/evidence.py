"""Which figure a recipe is ranked and held to: measured > published > estimated.

A recipe's performance figures each say where they come from (the catalog's `provenance`: measured
by a benchmark client, published by a vendor, or estimated by aim-engine's roofline model). A
measurement on the user's own cluster (a `helm test` run recorded in `<release>-recipe-benchmarks`,
aim_engine.domain.benchmark) replaces the recipe's figures when it is comparable: the same recipe
on the same hardware, a capacity run (no request-rate limit), at the input/output lengths and
concurrency the recipe's figures state. A measurement at other conditions is kept out, with the
reason, so a 128-token run never outranks a 2,048-token figure by accident.

Pure: measurements are values read by the edges (the hook reads ConfigMaps by name, the CLI files).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, get_args

from aim_engine.domain.benchmark import BenchmarkResult, Conditions
from aim_engine.domain.recipe import Performance, Recipe, with_changes
from aim_engine.rules.compat import Finding

# Where a figure comes from, best evidence first.
FigureSource = Literal["measured", "published", "estimated", "unstated"]
FIGURE_SOURCES: tuple[FigureSource, ...] = get_args(FigureSource)
EVIDENCE_RANK: dict[FigureSource, int] = {s: i for i, s in enumerate(FIGURE_SOURCES)}
FIGURES = ("expected_tokens_per_second", "expected_latency_ms")
_SOURCE_OF: dict[str, FigureSource] = {s: s for s in FIGURE_SOURCES}


def figure_source(recipe: Recipe, figure: str = "expected_tokens_per_second") -> FigureSource:
    """The kind of evidence behind one of the recipe's figures ("unstated": no figure, or no
    provenance for it)."""
    if recipe.performance is None:
        return "unstated"
    kind = (recipe.performance.provenance.get(figure) or {}).get("kind")
    return _SOURCE_OF.get(kind, "unstated") if isinstance(kind, str) else "unstated"


def figure_provenance(recipe: Recipe, figure: str = "expected_tokens_per_second") -> str:
    """One line saying where a figure comes from: the source and its reference."""
    if recipe.performance is None:
        return "no figure"
    prov: Mapping[str, Any] = recipe.performance.provenance.get(figure) or {}
    kind = prov.get("kind")
    if kind == "measured":
        detail = f"{prov.get('client', '?')}, {prov.get('where', '?')}, {prov.get('date', '?')}"
    elif kind == "published":
        detail = str(prov.get("source", "?")) + (f" <{prov['url']}>" if prov.get("url") else "")
    elif kind == "estimated":
        detail = str(prov.get("method", "?"))
    else:
        return "unstated (no provenance)"
    return f"{kind}: {detail}" + (f" — {prov['note']}" if prov.get("note") else "")


def conditions_text(conditions: Mapping[str, Any]) -> str:
    """`128/128 tokens x 16` (input/output tokens x concurrency; `x ?` when not stated)."""
    conc = conditions.get("concurrency")
    return f"{conditions.get('input_tokens', '?')}/{conditions.get('output_tokens', '?')} tokens x {conc if conc else '?'}"


def why_not_comparable(measured: Conditions, stated: Mapping[str, Any]) -> str | None:
    """None when a run at `measured` conditions can stand for figures stated at `stated`; else why
    not. A figure that states no concurrency matches any (the source did not say)."""
    if measured.request_rate is not None:
        return f"a rate-limited run ({measured.request_rate:g} requests/s), not a capacity run"
    for key, value in (("input_tokens", measured.input_tokens), ("output_tokens", measured.output_tokens)):
        want = stated.get(key)
        if want is not None and want != value:
            run = f"{measured.input_tokens}/{measured.output_tokens} tokens"
            return f"measured at {run}, its figures are for {conditions_text(stated)}"
    want = stated.get("concurrency")
    if want is not None and want != measured.concurrency:
        return f"measured at concurrency {measured.concurrency}, its figures are for {conditions_text(stated)}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """A benchmark record and where it was read (a ConfigMap or a file)."""

    result: BenchmarkResult
    origin: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAside:
    """A measurement of the recipe that does not stand for its figures, and why."""

    measurement: Measurement
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """What the measurements say about one recipe: the one used (the newest comparable), if any,
    and the newer ones set aside."""

    used: Measurement | None
    set_aside: tuple[SetAside, ...]


class Measurements:
    """Benchmark records of any number of releases, looked up by recipe."""

    def __init__(self, measurements: Iterable[Measurement] = ()) -> None:
        by_recipe: dict[str, list[Measurement]] = {}
        for m in measurements:
            by_recipe.setdefault(m.result.provenance.recipe_id, []).append(m)
        for found in by_recipe.values():
            found.sort(key=lambda m: m.result.provenance.time)  # RFC 3339 UTC: sorts as time
        self._by_recipe = by_recipe

    def __bool__(self) -> bool:
        return bool(self._by_recipe)

    def for_recipe(self, recipe: Recipe) -> Match:
        stated = recipe.performance.conditions if recipe.performance is not None else {}
        used: Measurement | None = None
        set_aside: list[SetAside] = []
        for m in reversed(self._by_recipe.get(recipe.recipe_id, [])):  # newest first
            result = m.result
            reason: str | None
            if result.outcome != "measured":
                reason = f"the run failed: {result.reason}"
            elif "output_throughput" not in result.figures or not run_latency_ms(result):
                reason = "the run's record has no output throughput or latency"
            elif result.provenance.hardware.lower() != recipe.hardware.lower():
                reason = f"measured on {result.provenance.hardware}, the recipe is for {recipe.hardware}"
            else:
                reason = why_not_comparable(result.conditions, stated)
            if reason is None:
                used = m
                break  # older runs are history: the newest comparable one stands
            set_aside.append(SetAside(measurement=m, reason=reason))
        return Match(used=used, set_aside=tuple(set_aside))


def where_measured(m: Measurement) -> str:
    p = m.result.provenance
    return f"helm test of release {p.namespace}/{p.release} on node {p.node} ({p.hardware}), recorded in {m.origin}"


def _figure(perf: Performance, figure: str) -> Decimal | None:
    return {
        "expected_tokens_per_second": perf.tokens_per_second,
        "expected_latency_ms": perf.latency_ms,
        "expected_ttft_p95_ms": perf.ttft_p95_ms,
        "expected_itl_p95_ms": perf.itl_p95_ms,
    }.get(figure)


def run_latency_ms(result: BenchmarkResult) -> float | None:
    """A run's figure for the recipe's expected_latency_ms: its mean inter-token latency, else its
    mean time per output token."""
    return result.figures.get("mean_itl_ms", result.figures.get("mean_tpot_ms"))


def with_measurement(recipe: Recipe, m: Measurement) -> Recipe:
    """The recipe with its figures replaced by a comparable measurement (tokens/s: the run's
    output throughput; latency: run_latency_ms), each with measured provenance that names the run
    and the figure it replaced."""
    result = m.result
    old = recipe.performance
    conditions: dict[str, Any] = {
        "input_tokens": result.conditions.input_tokens,
        "output_tokens": result.conditions.output_tokens,
        "concurrency": result.conditions.concurrency,
    }
    if result.provenance.engine_version:
        conditions["engine_version"] = result.provenance.engine_version
    tokens = Decimal(str(round(result.figures["output_throughput"], 1)))
    latency = Decimal(str(round(run_latency_ms(result) or 0.0, 2)))

    version = result.provenance.engine_version
    client = (result.provenance.client or "vllm bench serve") + (f" ({version})" if version else "")

    def provenance(figure: str) -> dict[str, Any]:
        replaced = ""
        was = _figure(old, figure) if old is not None else None
        if was is not None:
            replaced = f"; replaces the recipe's {figure_source(recipe, figure)} {was}"
        return {
            "kind": "measured",
            "client": client,
            "command": f"helm test {result.provenance.release} -n {result.provenance.namespace}",
            "date": result.provenance.time[:10],
            "where": where_measured(m),
            "note": f"{result.completed} requests at {conditions_text(conditions)}, {result.failed} failed, "
            f"at {result.provenance.time}{replaced}",
        }

    ttft_p95, itl_p95 = result.figures.get("p95_ttft_ms"), result.figures.get("p95_itl_ms")
    figures = [*FIGURES, *(name for name, v in (("expected_ttft_p95_ms", ttft_p95), ("expected_itl_p95_ms", itl_p95)) if v)]
    performance = Performance(
        tokens_per_second=tokens,
        latency_ms=latency,
        conditions=conditions,
        provenance={figure: provenance(figure) for figure in figures},
        ttft_p95_ms=Decimal(str(round(ttft_p95, 2))) if ttft_p95 else None,
        itl_p95_ms=Decimal(str(round(itl_p95, 2))) if itl_p95 else None,
    )
    return with_changes(recipe, performance=performance)


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """Recipes with every comparable measurement applied, and what was found for each recipe that
    has any measurement (by recipe id)."""

    recipes: tuple[Recipe, ...]
    matches: Mapping[str, Match]


def apply_measurements(recipes: Sequence[Recipe], measurements: Measurements) -> Applied:
    if not measurements:
        return Applied(recipes=tuple(recipes), matches={})
    out: list[Recipe] = []
    matches: dict[str, Match] = {}
    for recipe in recipes:
        match = measurements.for_recipe(recipe)
        if match.used is not None or match.set_aside:
            matches[recipe.recipe_id] = match
        out.append(with_measurement(recipe, match.used) if match.used is not None else recipe)
    return Applied(recipes=tuple(out), matches=matches)


def match_findings(match: Match, recipe: Recipe) -> tuple[Finding, ...]:
    """What the explanation says about a recipe's measurements: the one its figures come from, and
    each one set aside with how to make it count. `recipe` is the recipe as ranked."""
    out: list[Finding] = []
    if match.used is not None and recipe.performance is not None:
        note = (recipe.performance.provenance.get(FIGURES[0]) or {}).get("note", "")
        out.append(
            Finding(
                code="MEASURED",
                message=f"ranked by its measured {recipe.performance.tokens_per_second} tok/s and "
                f"{recipe.performance.latency_ms} ms per token ({where_measured(match.used)}; {note})",
            )
        )
    for aside in match.set_aside:
        p = aside.measurement.result.provenance
        stated = recipe.performance.conditions if recipe.performance is not None else {}
        fix = ""
        if "figures are for" in aside.reason and stated:
            fix = (
                f"run `helm test {p.release} -n {p.namespace}` with benchmark.input_tokens={stated.get('input_tokens')}, "
                f"benchmark.output_tokens={stated.get('output_tokens')}"
                + (f", benchmark.concurrency={stated['concurrency']}" if stated.get("concurrency") else "")
                + " and benchmark.request_rate=null"
            )
        elif "rate-limited" in aside.reason:
            fix = f"run `helm test {p.release} -n {p.namespace}` with benchmark.request_rate=null (a capacity run)"
        out.append(
            Finding(
                code="MEASUREMENT_SET_ASIDE",
                message=f"a measurement of {p.time} ({aside.measurement.origin}) does not count: {aside.reason}",
                fix=fix,
            )
        )
    return tuple(out)
