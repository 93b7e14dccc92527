"""Service-level objectives and a recipe's figures against them.

Targets: `ttft_p95_ms` (time to first token, 95th percentile), `itl_p95_ms` (inter-token latency,
95th percentile) and `min_output_tokens_per_second` (all requests together). A recipe is held to
its figures as ranked (a comparable measurement's, else the catalog's; aim_engine.rules.evidence):

- throughput: its expected output tokens/s;
- ITL: its p95 ITL when it states one (measured runs do); else its mean ITL, which can only show a
  miss (a mean above the p95 target), never a pass;
- TTFT: its p95 TTFT when it states one; catalog estimates state none.

A target a recipe's figures cannot decide is *unverified* (SLO_UNKNOWN): the selector does not
refuse the recipe for it, and says so and how to measure it (`helm test`); the webhook refuses a
workload with an SLO only when its recipe states no figures at all. The selector (CLI `--slo`,
chart `aim_engine.slo.*`) and the webhook (the workload's SLO annotations) call this same check.
A recipe with no figures at all (a derived or synthesised configuration) cannot be held to an SLO,
so selection with an SLO never falls back to one (aim_engine.selection.levels)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from aim_engine.domain.errors import InputError
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.compat import Finding
from aim_engine.rules.evidence import figure_source


@dataclass(frozen=True, slots=True, kw_only=True)
class Slo:
    ttft_p95_ms: Decimal | None = None
    itl_p95_ms: Decimal | None = None
    min_output_tokens_per_second: Decimal | None = None

    def __bool__(self) -> bool:  # called once per recipe evaluated: no dataclasses.fields() here
        return self.ttft_p95_ms is not None or self.itl_p95_ms is not None or self.min_output_tokens_per_second is not None

    def targets(self) -> Iterator[tuple[str, Decimal]]:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                yield f.name, value

    def text(self) -> str:
        return ", ".join(f"{k}={_num(v)}" for k, v in self.targets())


SLO_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Slo))


class SloBound(NamedTuple):
    low: Decimal
    high: Decimal
    unit: str

    def text(self) -> str:
        return f"{_num(self.low)} to {_num(self.high)} {self.unit}"


# What a target can sanely be: outside these it is a typo or a unit mistake (seconds for
# milliseconds), and a value past a float's range would not even print as JSON.
SLO_BOUNDS: Mapping[str, SloBound] = {
    "ttft_p95_ms": SloBound(Decimal("1"), Decimal("600000"), "ms"),  # 1 ms to 10 minutes
    "itl_p95_ms": SloBound(Decimal("0.1"), Decimal("60000"), "ms"),  # 0.1 ms to 1 minute a token
    "min_output_tokens_per_second": SloBound(Decimal("0.1"), Decimal("100000000"), "tok/s"),
}
assert set(SLO_BOUNDS) == set(SLO_KEYS)


def slo_bounds_text() -> str:
    """The bounds, for --help."""
    return "; ".join(f"{k} {b.text()}" for k, b in SLO_BOUNDS.items())


def parse_slo(pairs: Iterable[str]) -> Slo:
    """`KEY=VALUE` pairs (the CLI's `--slo`, the chart's aim_engine.slo.*) as an Slo; a key named
    twice, an unknown key, a value that is not a positive number or one outside SLO_BOUNDS is an
    InputError."""
    values: dict[str, Decimal] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or key not in SLO_KEYS:
            raise InputError(f"--slo {pair!r}: expected KEY=VALUE with KEY one of {', '.join(SLO_KEYS)}")
        if key in values:
            raise InputError(f"--slo {key} is given twice")
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            value = Decimal(-1)
        if not value.is_finite() or value <= 0:
            raise InputError(f"--slo {key}={raw}: the target must be a positive number")
        bound = SLO_BOUNDS[key]
        if not bound.low <= value <= bound.high:
            raise InputError(f"--slo {key}={raw.strip()}: outside {bound.text()}; give the target in {bound.unit}")
        values[key] = value
    return Slo(**values)


# How each target is named to the user where it was set: the CLI's --slo keys by default; the
# chart's values and the webhook's annotations name them their own way (TargetNames).
TargetNames = Mapping[str, str]
CLI_NAMES: TargetNames = {k: f"--slo {k}" for k in SLO_KEYS}
VALUES_NAMES: TargetNames = {k: f"aim_engine.slo.{k}" for k in SLO_KEYS}


class SloCheck(NamedTuple):
    missed: tuple[Finding, ...]  # targets its figures miss: the recipe is refused
    unverified: tuple[Finding, ...]  # targets its figures cannot decide (SLO_UNKNOWN)


_ITL_FIX = "choose a faster recipe (more tensor parallelism, fewer sequences per batch) or raise {}"
_TTFT_FIX = "choose a faster recipe (more GPUs, fewer requests in flight per replica) or raise {}"
MEASURE_FIX = "measure it: `helm test <release>` at the recipe's conditions records p95 TTFT and ITL"


def check_slo(recipe: Recipe, slo: Slo, *, names: TargetNames = CLI_NAMES) -> SloCheck:
    """The targets `recipe`'s figures miss (codes SLO_THROUGHPUT, SLO_LATENCY, SLO_TTFT) and those
    they cannot decide (SLO_UNKNOWN), each naming the target as the user set it (`names`)."""
    if not slo:
        return SloCheck(missed=(), unverified=())
    perf = recipe.performance
    if perf is None:
        return SloCheck(
            missed=(),
            unverified=(
                Finding(
                    code="SLO_UNKNOWN",
                    message=f"recipe {recipe.recipe_id} states no expected performance, so the SLO "
                    f"({', '.join(f'{names[k]} {_num(v)}' for k, v in slo.targets())}) cannot be checked",
                    fix=MEASURE_FIX,
                ),
            ),
        )
    missed: list[Finding] = []
    unverified: list[Finding] = []
    floor = slo.min_output_tokens_per_second
    if floor is not None and perf.tokens_per_second < floor:
        missed.append(
            Finding(
                code="SLO_THROUGHPUT",
                message=f"{names['min_output_tokens_per_second']} is {_num(floor)} tok/s; recipe {recipe.recipe_id} "
                f"expects {_num(perf.tokens_per_second)} tok/s ({figure_source(recipe)})",
                fix=f"choose a faster recipe (more GPUs, another product, fp8) or lower {names['min_output_tokens_per_second']}",
            )
        )
    itl = slo.itl_p95_ms
    if itl is not None:
        if perf.itl_p95_ms is not None:
            if perf.itl_p95_ms > itl:
                source = figure_source(recipe, "expected_itl_p95_ms")
                missed.append(
                    Finding(
                        code="SLO_LATENCY",
                        message=f"{names['itl_p95_ms']} is {_num(itl)} ms; recipe {recipe.recipe_id} has a p95 ITL of "
                        f"{_num(perf.itl_p95_ms)} ms ({source})",
                        fix=_ITL_FIX.format(names["itl_p95_ms"]),
                    )
                )
        elif perf.latency_ms > itl:
            source = figure_source(recipe, "expected_latency_ms")
            missed.append(
                Finding(
                    code="SLO_LATENCY",
                    message=f"{names['itl_p95_ms']} is {_num(itl)} ms; recipe {recipe.recipe_id} expects "
                    f"{_num(perf.latency_ms)} ms per token on average ({source}): above the target before its tail",
                    fix=_ITL_FIX.format(names["itl_p95_ms"]),
                )
            )
        else:
            unverified.append(
                Finding(
                    code="SLO_UNKNOWN",
                    message=f"recipe {recipe.recipe_id} states a mean ITL of {_num(perf.latency_ms)} ms and no p95: "
                    f"{names['itl_p95_ms']} {_num(itl)} is not verified",
                    fix=MEASURE_FIX,
                )
            )
    ttft = slo.ttft_p95_ms
    if ttft is not None:
        if perf.ttft_p95_ms is None:
            unverified.append(
                Finding(
                    code="SLO_UNKNOWN",
                    message=f"recipe {recipe.recipe_id} states no p95 TTFT: {names['ttft_p95_ms']} {_num(ttft)} is not verified",
                    fix=MEASURE_FIX,
                )
            )
        elif perf.ttft_p95_ms > ttft:
            source = figure_source(recipe, "expected_ttft_p95_ms")
            missed.append(
                Finding(
                    code="SLO_TTFT",
                    message=f"{names['ttft_p95_ms']} is {_num(ttft)} ms; recipe {recipe.recipe_id} has a p95 TTFT of "
                    f"{_num(perf.ttft_p95_ms)} ms ({source})",
                    fix=_TTFT_FIX.format(names["ttft_p95_ms"]),
                )
            )
    return SloCheck(missed=tuple(missed), unverified=tuple(unverified))


def figure(recipe: Recipe, key: str) -> Decimal | None:
    """The recipe's figure that target `key` is held to (check_slo's choice): expected tokens/s,
    the p95 ITL (else the mean), the p95 TTFT; None when it states none."""
    perf = recipe.performance
    if perf is None:
        return None
    if key == "min_output_tokens_per_second":
        return perf.tokens_per_second
    if key == "itl_p95_ms":
        return perf.itl_p95_ms if perf.itl_p95_ms is not None else perf.latency_ms
    return perf.ttft_p95_ms


def better(key: str, a: Decimal, b: Decimal) -> bool:
    """`a` is nearer target `key`'s good side than `b`: more throughput, less latency."""
    return a > b if key.startswith("min_") else a < b


def meets(key: str, value: Decimal, target: Decimal) -> bool:
    return value >= target if key.startswith("min_") else value <= target


def best_figures(recipes: Iterable[Recipe]) -> dict[str, Decimal]:
    """The best each target could be set to and still be met by one of `recipes`: the highest
    throughput, the lowest p95 (else mean) ITL, the lowest p95 TTFT."""
    best: dict[str, Decimal] = {}
    for r in recipes:
        for key in SLO_KEYS:
            value = figure(r, key)
            if value is not None and (key not in best or better(key, value, best[key])):
                best[key] = value
    return best


class Nearest(NamedTuple):
    key: str
    target: Decimal
    recipe: Recipe
    value: Decimal

    def text(self, names: TargetNames) -> str:
        field, what = _FIGURE[self.key]
        perf = self.recipe.performance
        if self.key == "itl_p95_ms" and perf is not None and perf.itl_p95_ms is None:
            field, what = "expected_latency_ms", "mean ITL"
        unit = "tok/s" if self.key.startswith("min_") else "ms"
        verdict = "meets it" if meets(self.key, self.value, self.target) else "misses it"
        return (
            f"{names[self.key]} {_num(self.target)}: nearest is {self.recipe.recipe_id} "
            f"({self.recipe.gpu_count} x {self.recipe.hardware}), {what} {_num(self.value)} {unit} "
            f"({figure_source(self.recipe, field)}; {verdict})"
        )


_FIGURE = {
    "min_output_tokens_per_second": ("expected_tokens_per_second", "expects"),
    "itl_p95_ms": ("expected_itl_p95_ms", "p95 ITL"),
    "ttft_p95_ms": ("expected_ttft_p95_ms", "p95 TTFT"),
}


def nearest_per_target(recipes: Sequence[Recipe], slo: Slo) -> list[Nearest]:
    """For each target, the recipe among `recipes` whose figure comes nearest it (the first in
    `recipes`' order on a tie): what the user could have, target by target."""
    out: list[Nearest] = []
    for key, target in slo.targets():
        best: Nearest | None = None
        for r in recipes:
            value = figure(r, key)
            if value is not None and (best is None or better(key, value, best.value)):
                best = Nearest(key=key, target=target, recipe=r, value=value)
        if best is not None:
            out.append(best)
    return out


def _num(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value)
