"""The fallback levels, tried in order; each returns its choice, or None to pass to the next.

  primary    the best recipe for the hardware this cluster has, and it has free capacity now
  secondary  the best one lacks free capacity; the best recipe that has it (another precision,
             GPU count or GPU product)
  tertiary   no catalog recipe fits as written: a configuration derived from the best catalog
             recipe whose hardware and precision are here, with another GPU count and, if needed,
             a shorter context (never below min_context, never when the user set max_model_len;
             never under an SLO: a derived configuration claims no performance)
  default    a general recipe from the catalog, else one synthesised from the model analysis
             (never under an SLO, for the same reason)

A choice carries the reasons that explain it (after SELECTED): FALLBACK, DERIVED, SIZING, and
why other products got no synthesised recipe."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from aim_engine.cluster.inventory import Inventory
from aim_engine.domain.hardware import HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.compat import Finding
from aim_engine.rules.evidence import Match
from aim_engine.rules.memory import MemoryPlan
from aim_engine.rules.ranking import Ranks
from aim_engine.selection.derive import derived_variants
from aim_engine.selection.feasibility import Evaluated
from aim_engine.selection.request import Request
from aim_engine.selection.result import Level
from aim_engine.selection.sizing import Sizing
from aim_engine.selection.synthesis import packing_note, synthesis_options


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What every level chooses from: the request, the model (None: not analysed), the cluster,
    and the model's catalog recipes, each evaluated: all of them best first (`ranked`), and those
    (not general) whose hardware is here and that pass every rule, capacity aside (`runnable`);
    `measured`: what the cluster's measurements say of each recipe that has any (by recipe id;
    the recipes here already carry the comparable ones' figures)."""

    request: Request
    model: ModelProfile | None
    catalog: HardwareCatalog
    inventory: Inventory
    ranked: tuple[Evaluated, ...]
    runnable: tuple[Evaluated, ...]
    ranks: Ranks
    measured: Mapping[str, Match] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        evaluated: Iterable[Evaluated],
        *,
        request: Request,
        model: ModelProfile | None,
        catalog: HardwareCatalog,
        inventory: Inventory,
        measured: Mapping[str, Match] | None = None,
        ranks: Ranks | None = None,
    ) -> Evaluation:
        """Rank the evaluated recipes, best first; the recipe id breaks ties, so the catalog's
        order never matters."""
        ranks = ranks if ranks is not None else Ranks(catalog)
        judged = list(evaluated)
        ranked = tuple(judged[i] for i in ranks.sort([e.recipe for e in judged]))
        runnable = tuple(e for e in ranked if e.runs_here and e.recipe.type != "general")
        return cls(
            request=request,
            model=model,
            catalog=catalog,
            inventory=inventory,
            ranked=ranked,
            runnable=runnable,
            ranks=ranks,
            measured=measured or {},
        )


@dataclass(frozen=True, slots=True)
class Choice:
    """What a level chose: the recipe, its memory plan, the reasons that explain the level's
    choice, and the recipes that rank equal to it (the catalog must say which is preferred)."""

    level: Level
    recipe: Recipe
    plan: MemoryPlan | None
    notes: tuple[Finding, ...] = ()
    ties: tuple[str, ...] = ()


class DefaultOutcome(NamedTuple):
    choice: Choice | None
    unavailable: tuple[Finding, ...]  # why GPU products got no synthesised recipe


def primary(evaluation: Evaluation) -> Choice | None:
    """The best recipe for this cluster's hardware, when it can be placed now."""
    runnable = evaluation.runnable
    if not runnable or not runnable[0].feasible:
        return None
    best = runnable[0]
    return Choice(
        level="primary", recipe=best.recipe, plan=best.plan, notes=best.notes, ties=_ties(best, runnable, evaluation.ranks)
    )


def secondary(evaluation: Evaluation) -> Choice | None:
    """The best recipe cannot be placed now (capacity): the best one that can."""
    runnable = evaluation.runnable
    if not runnable or runnable[0].feasible:
        return None
    preferred = runnable[0]
    chosen = next((e for e in runnable if e.feasible), None)
    if chosen is None:
        return None
    why = preferred.capacity[0]  # it runs here, so only capacity rules it out
    fallback = Finding(
        code="FALLBACK",
        message=f"preferred {preferred.recipe.recipe_id} cannot be placed now: {why.message}",
        fix=why.fix,
    )
    return Choice(
        level="secondary",
        recipe=chosen.recipe,
        plan=chosen.plan,
        notes=(fallback, *chosen.notes),
        ties=_ties(chosen, runnable, evaluation.ranks),
    )


def tertiary(evaluation: Evaluation) -> Choice | None:
    """A catalog recipe that fails only on size, adapted to the free GPUs (single-node only)."""
    request, model = evaluation.request, evaluation.model
    if model is None or not request.single_pod or request.slo:
        return None  # a derived configuration claims no performance: it cannot be held to an SLO
    variants = derived_variants(
        evaluation.ranked, model=model, request=request, catalog=evaluation.catalog, inventory=evaluation.inventory
    )
    if not variants:
        return None
    best = variants[0]
    recipe = best.recipe
    derived = Finding(
        code="DERIVED",
        message=f"configuration {recipe.description}, max_model_len {recipe.max_model_len}; "
        "untested, so no expected performance is claimed",
        fix="free GPUs for the catalog recipe as written, or add a tested recipe for this configuration",
    )
    return Choice(level="tertiary", recipe=recipe, plan=best.plan, notes=(derived, *_sizing_note(best.sizing)))


def default(evaluation: Evaluation) -> DefaultOutcome:
    """A general catalog recipe that can be placed now, else a generic recipe synthesised from the
    model analysis for a product present (single-node only); not when the request disables it."""
    request, model = evaluation.request, evaluation.model
    if not request.allow_default:
        return DefaultOutcome(choice=None, unavailable=())
    general = next((e for e in evaluation.ranked if e.recipe.type == "general" and e.feasible), None)
    if general is not None:
        choice = Choice(level="default", recipe=general.recipe, plan=general.plan, notes=general.notes)
        return DefaultOutcome(choice=choice, unavailable=())
    if model is None or not request.single_pod:
        return DefaultOutcome(choice=None, unavailable=())
    if request.slo:
        untested = Finding(
            code="SLO_UNKNOWN",
            message=f"a synthesised recipe states no performance, so it cannot be held to the SLO ({request.slo.text()})",
            fix="loosen or drop the SLO, or add a measured recipe for this hardware",
        )
        return DefaultOutcome(choice=None, unavailable=(untested,))
    options, notes = synthesis_options(model, request, evaluation.inventory, evaluation.catalog)
    if not options:
        return DefaultOutcome(choice=None, unavailable=tuple(notes))
    best = options[0]
    packing = packing_note(options, model=model)
    choice = Choice(
        level="default",
        recipe=best.recipe,
        plan=best.plan,
        notes=(*_sizing_note(best.sizing), *((packing,) if packing else ()), *notes),
    )
    return DefaultOutcome(choice=choice, unavailable=tuple(notes))


def _ties(chosen: Evaluated, runnable: Sequence[Evaluated], ranks: Ranks) -> tuple[str, ...]:
    """Ids of the other placeable recipes that rank equal to the chosen one. `runnable` is in rank
    order (Evaluation.of sorts it), so the equal ones are one run of it: the walk stops past it."""
    key = ranks(chosen.recipe)
    out = []
    for e in runnable:
        other = ranks(e.recipe)
        if other == key:
            if e.feasible and e.recipe is not chosen.recipe:
                out.append(e.recipe.recipe_id)
        elif other > key:
            break
    return tuple(out)


def _sizing_note(sizing: Sizing) -> tuple[Finding, ...]:
    return (Finding(code="SIZING", message=sizing.trade, fix=sizing.fix),) if sizing.trade else ()
