"""A tune's trials judged: each measured trial's recipe with its measurement (rules.evidence), held
to the SLO (rules.slo, the selector's own check), ranked by output tokens/s; the best becomes a
custom recipe in the seed's format, its measured performance filled in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aim_engine.domain.recipe import Recipe, with_changes
from aim_engine.domain.tuning import Trial, TuneState, params_text, trial_recipe
from aim_engine.rules.compat import Finding
from aim_engine.rules.evidence import Measurement, with_measurement
from aim_engine.rules.slo import CLI_NAMES, Slo, TargetNames, check_slo


@dataclass(frozen=True, slots=True, kw_only=True)
class Judged:
    """A trial with the recipe it served (its measured figures filled in when it measured any) and
    the SLO targets those figures miss."""

    trial: Trial
    recipe: Recipe
    missed: tuple[Finding, ...]

    @property
    def meets_slo(self) -> bool:
        return self.trial.outcome == "measured" and not self.missed

    @property
    def tokens_per_second(self) -> float:
        r = self.trial.result
        return r.figures.get("output_throughput", 0.0) if r is not None and self.trial.outcome == "measured" else 0.0


def judge(base: Recipe, state: TuneState, slo: Slo, *, names: TargetNames = CLI_NAMES) -> list[Judged]:
    """Every trial, best first: those that meet the SLO by output tokens/s, then those that miss
    it, then the failed ones (in the order they ran)."""
    out: list[Judged] = []
    for trial in state.trials:
        recipe = trial_recipe(base, trial.params)
        missed: tuple[Finding, ...] = ()
        if trial.outcome == "measured" and trial.result is not None:
            recipe = with_measurement(recipe, Measurement(result=trial.result, origin=f"tune trial {trial.trial_id}"))
            missed = check_slo(recipe, slo, names=names).missed
        out.append(Judged(trial=trial, recipe=recipe, missed=missed))
    order = {id(j): i for i, j in enumerate(out)}
    return sorted(out, key=lambda j: (not j.meets_slo, j.trial.outcome != "measured", -j.tokens_per_second, order[id(j)]))


def best(judged: Sequence[Judged]) -> Judged | None:
    return next((j for j in judged if j.meets_slo), None)


def tuned_recipe(base: Recipe, chosen: Judged) -> Recipe:
    """The best trial as a custom recipe: the trial's settings and measured figures, named after the
    recipe it was tuned from, of type optimized (tuned, and measured on this cluster)."""
    return with_changes(
        chosen.recipe,
        recipe_id=f"{base.recipe_id}-tuned"[:63],
        description=f"{base.recipe_id} tuned by aim-recipes tune (trial {chosen.trial.trial_id}: "
        f"{params_text(chosen.trial.params)})",
        type="optimized",  # as AMD AIM's profiles: tuned and measured
    )


def beyond_noise(chosen: Judged, baseline: Judged) -> bool:
    """Whether the chosen trial beats the baseline beyond their run-to-run spread: its slowest run
    is faster than the baseline's fastest (with one run each, a single comparison proves nothing,
    so it is not)."""
    a, b = chosen.trial.throughputs, baseline.trial.throughputs
    return len(a) > 1 and len(b) > 1 and min(a) > max(b)
