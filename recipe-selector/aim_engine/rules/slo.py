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

from collections.abc import Iterable, Iterator, Mapping
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

    def __bool__(self) -> bool:
        return any(v is not None for _, v in self.targets())

    def targets(self) -> Iterator[tuple[str, Decimal]]:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                yield f.name, value

    def text(self) -> str:
        return ", ".join(f"{k}={_num(v)}" for k, v in self.targets())


SLO_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Slo))


def parse_slo(pairs: Iterable[str]) -> Slo:
    """`KEY=VALUE` pairs (the CLI's `--slo`, the chart's aim_engine.slo.*) as an Slo; a key named
    twice, an unknown key or a value that is not a positive number is an InputError."""
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


def best_figures(recipes: Iterable[Recipe]) -> dict[str, Decimal]:
    """The best each target could be set to and still be met by one of `recipes`: the highest
    throughput, the lowest p95 (else mean) ITL, the lowest p95 TTFT."""
    best: dict[str, Decimal] = {}
    for r in recipes:
        perf = r.performance
        if perf is None:
            continue
        candidates = {
            "min_output_tokens_per_second": perf.tokens_per_second,
            "itl_p95_ms": perf.itl_p95_ms if perf.itl_p95_ms is not None else perf.latency_ms,
            "ttft_p95_ms": perf.ttft_p95_ms,
        }
        for key, value in candidates.items():
            if value is None:
                continue
            better = key not in best or (value > best[key] if key.startswith("min_") else value < best[key])
            if better:
                best[key] = value
    return best


def _num(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value)
