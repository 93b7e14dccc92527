"""Recipe selection, the pure core of seed 004's algorithm:

GPU detection -> model analysis -> recipe filtering -> performance ranking -> resource validation
-> fallback (primary -> secondary -> tertiary -> default; see aim_engine.selection.levels).

Derived and synthesised configurations are sized by size_for_context() (aim_engine.selection.sizing):
more GPUs (within one node's free GPUs) before a much shorter context, and the trade made is said
(reason SIZING).

Explicit overrides (gpu_count, precision, backend, gpu_type, max_model_len, a custom recipe) are
constraints at every level: honoured, or the selection is refused with the reason. Ranking, best
first: recipe type (optimized, preview, unoptimized, general), priority (higher first), expected
output tokens/s per GPU (higher first), the evidence behind that figure (measured, published,
estimated), fewer GPUs, lower precision. Two candidates equal on all of these are a catalog error:
the selection refuses rather than toss a coin.

Measurements (benchmark records of the cluster's own releases, aim_engine.rules.evidence) replace
the figures of the recipes they are comparable with before anything is ranked; the explanation
says which figure each recipe was ranked by, and why a measurement was set aside.

The package, by module: request (what is asked), result (what is answered), feasibility (a recipe
against the overrides, the rules and the cluster's capacity), sizing, derive (tertiary), synthesis
(default), levels (one function per level), and this module, which runs them and explains the
outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

from aim_engine.cluster.inventory import Inventory
from aim_engine.domain.hardware import HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.recipe import Recipe, with_changes
from aim_engine.domain.vllm_args import ArgRegistry
from aim_engine.rules.compat import Finding
from aim_engine.rules.evidence import Match, Measurements, apply_measurements, figure_source, match_findings
from aim_engine.rules.memory import MemoryPlan
from aim_engine.rules.ranking import RankKey, Ranks, gpu_share, pareto_front, tokens_per_second_per_gpu
from aim_engine.rules.slo import nearest_per_target
from aim_engine.selection.feasibility import (
    Evaluated,
    StaticMemo,
    as_advertised,
    capacity_findings,
    evaluate,
    override_findings,
    packing,
)
from aim_engine.selection.levels import Choice, Evaluation, default, primary, secondary, tertiary
from aim_engine.selection.request import DEFAULT_MIN_CONTEXT, Request
from aim_engine.selection.result import (
    VERDICTS,
    Candidate,
    Level,
    ProductSummary,
    Selection,
    hardware_summary,
)
from aim_engine.selection.sizing import CONTEXT_FLOOR, Sizing, size_for_context
from aim_engine.selection.synthesis import synthesize

# The selection API callers import from here (the CLI, the renderers, the tests and tools).
__all__ = [
    "CONTEXT_FLOOR",
    "DEFAULT_MIN_CONTEXT",
    "Candidate",
    "Measurements",
    "Request",
    "Selection",
    "Sizing",
    "capacity_findings",
    "override_findings",
    "select",
    "size_for_context",
    "synthesize",
]


def select(
    *,
    request: Request,
    recipes: Sequence[Recipe],
    models: Mapping[str, ModelProfile],
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    inventory: Inventory,
    measurements: Measurements | None = None,
) -> Selection:
    """Pick a recipe for `request` on `inventory`, ranking each recipe by its comparable
    measurement where `measurements` has one. Pure: no I/O, deterministic."""
    request.validate(catalog)
    model = models.get(request.model_id.lower())
    hardware = hardware_summary(inventory)
    measurements = measurements or Measurements()
    if request.custom_recipe is not None:
        pinned = apply_measurements([request.custom_recipe], measurements)
        return _select_pinned(
            pinned.recipes[0],
            measured=pinned.matches.get(request.custom_recipe.recipe_id),
            request=request,
            model=model,
            catalog=catalog,
            registry=registry,
            inventory=inventory,
            hardware=hardware,
        )
    key = request.model_id.lower()
    applied = apply_measurements([r for r in recipes if r.model_key == key], measurements)
    memo: StaticMemo = {}  # recipes sharing a configuration are judged once
    evaluated = [
        evaluate(r, request=request, model=model, catalog=catalog, registry=registry, inventory=inventory, memo=memo)
        for r in applied.recipes
    ]
    evaluation = Evaluation.of(
        evaluated,
        request=request,
        model=model,
        catalog=catalog,
        inventory=inventory,
        measured=applied.matches,
        ranks=Ranks(catalog),
    )
    choice = primary(evaluation) or secondary(evaluation) or tertiary(evaluation)
    unavailable: tuple[Finding, ...] = ()
    if choice is None:
        choice, unavailable = default(evaluation)
    others = _other_verdicts(evaluation.ranked, choice, evaluation.measured, evaluation.ranks)
    if choice is None:
        return _not_found(evaluation, others, unavailable=unavailable, hardware=hardware)
    if choice.ties:
        return _ambiguous(evaluation, choice, others, hardware=hardware)
    return _selected(evaluation, choice, others, hardware=hardware)


def _selected(
    evaluation: Evaluation, choice: Choice, others: Sequence[Candidate], *, hardware: Mapping[str, ProductSummary]
) -> Selection:
    request = evaluation.request
    recipe = choice.recipe
    overridden = request.max_model_len is not None and recipe.max_model_len != request.max_model_len
    if overridden:
        recipe = with_changes(recipe, args={**recipe.args, "max_model_len": request.max_model_len})
    reasons = [Finding(code="SELECTED", message=_why(recipe, choice.level, choice.plan, evaluation.catalog))]
    if overridden:
        reasons.append(
            Finding(
                code="MAX_MODEL_LEN_OVERRIDE",
                message=f"max_model_len set to the requested {request.max_model_len}; memory was checked at that length",
            )
        )
    reasons += choice.notes
    reasons += _evidence(evaluation.measured.get(choice.recipe.recipe_id), choice.recipe)
    pack = packing(recipe, evaluation.inventory)
    recipe = as_advertised(recipe, evaluation.catalog, pack.resource)
    reasons += _partition_note(recipe, evaluation)
    if pack.reason:
        reasons.append(Finding(code="PACKED", message=pack.reason))
    selected = Candidate(recipe=recipe, verdict="selected", reasons=tuple(reasons), level=choice.level, plan=choice.plan)
    return Selection(
        request=request,
        model=evaluation.model,
        recipe=recipe,
        level=choice.level,
        result="selected",
        message=reasons[0].message,
        candidates=(selected, *_by_verdict(others)),
        placement=pack.nodes[:5],
        packing=pack,
        hardware=hardware,
        pareto=pareto_front(
            [recipe, *(e.recipe for e in evaluation.runnable if e.feasible)], evaluation.catalog, ranks=evaluation.ranks
        ),
    )


def _ambiguous(
    evaluation: Evaluation, choice: Choice, others: Sequence[Candidate], *, hardware: Mapping[str, ProductSummary]
) -> Selection:
    """The best recipes rank equal: each of them is refused, naming the others."""
    listed = [choice.recipe.recipe_id, *choice.ties]
    ids = list(dict.fromkeys(listed))  # a recipe id the catalog repeats is named once
    tied = {e.recipe.recipe_id: e for e in evaluation.ranked if e.recipe.recipe_id in ids}
    refused = [
        Candidate(
            recipe=tied[rid].recipe,
            verdict="rejected",
            reasons=(
                Finding(
                    code="AMBIGUOUS",
                    message=f"ranks equal to {', '.join([other for other in ids if other != rid] or [rid])}",
                    fix="give one of them a higher priority, or pin one with custom_recipe",
                ),
            ),
            level=choice.level,
            plan=tied[rid].plan,
        )
        for rid in ids
    ]
    return Selection(
        request=evaluation.request,
        model=evaluation.model,
        recipe=None,
        level=None,
        result="ambiguous",
        message=f"recipes {', '.join(listed)} rank equal (same type, priority, tokens/s per GPU and its evidence, GPU count "
        "and precision): "
        "the catalog must say which is preferred (set priority), or pin one with custom_recipe",
        candidates=_order((*(c for c in others if c.recipe.recipe_id not in tied), *refused), evaluation.ranks),
        hardware=hardware,
    )


def _not_found(
    evaluation: Evaluation,
    others: Sequence[Candidate],
    *,
    unavailable: Sequence[Finding],
    hardware: Mapping[str, ProductSummary],
) -> Selection:
    return Selection(
        request=evaluation.request,
        model=evaluation.model,
        recipe=None,
        level=None,
        result="not_found",
        message=_not_found_message(evaluation, unavailable),
        candidates=_order(others, evaluation.ranks),
        hardware=hardware,
    )


def _evidence(match: Match | None, recipe: Recipe) -> tuple[Finding, ...]:
    return match_findings(match, recipe) if match is not None else ()


def _other_verdicts(
    ranked: Sequence[Evaluated], choice: Choice | None, measured: Mapping[str, Match], ranks: Ranks
) -> list[Candidate]:
    """The verdict on every catalog candidate but the chosen one (one per recipe id), with what
    the measurements say of it."""
    chosen_id = choice.recipe.recipe_id if choice is not None else None
    level: Level = choice.level if choice is not None else "primary"
    verdicts: dict[str, Candidate] = {}
    chosen_key = ranks(choice.recipe) if choice is not None else None
    for e in ranked:
        recipe = e.recipe
        if recipe.recipe_id == chosen_id:
            continue
        if not e.feasible:
            verdicts[recipe.recipe_id] = Candidate(recipe=recipe, verdict="rejected", reasons=e.findings, plan=e.plan)
        elif recipe.type == "general":
            general = Finding(code="GENERAL_FALLBACK_ONLY", message="general recipes are used only at the default level")
            verdicts[recipe.recipe_id] = Candidate(
                recipe=recipe, verdict="eligible", reasons=(general,), level="default", plan=e.plan
            )
        else:
            outranked = _outranked(recipe, choice.recipe if choice is not None else None, ranks, chosen_key=chosen_key)
            verdicts[recipe.recipe_id] = Candidate(
                recipe=recipe, verdict="eligible", reasons=(outranked,), level=level, plan=e.plan
            )
    return [
        replace(c, reasons=(*c.reasons, *_evidence(measured.get(rid), c.recipe))) if rid in measured else c
        for rid, c in verdicts.items()
    ]


def _share_text(recipe: Recipe, catalog: HardwareCatalog) -> str:
    """' (a MIG 3g.40gb, 3/7 of an H100)' for a partition recipe; '' for whole GPUs."""
    product = catalog.get(recipe.hardware)
    if product is None or product.partition is None:
        return ""
    share = _fraction(gpu_share(recipe, catalog))
    return f" ({recipe.gpu_count} x {product.partition.label}, {share} of an {product.physical.name})"


def _fraction(share: Decimal) -> str:
    f = Fraction(share).limit_denominator(64)
    return f"{f.numerator}/{f.denominator}" if f.denominator != 1 else str(f.numerator)


def _partition_note(recipe: Recipe, evaluation: Evaluation) -> tuple[Finding, ...]:
    """For a recipe on partitions: what it takes of the GPU, and the best recipe of the model on
    whole GPUs beside it (runnable here or not), so the trade is said."""
    catalog = evaluation.catalog
    product = catalog.get(recipe.hardware)
    if product is None or product.partition is None:
        return ()
    mine = f"runs on {recipe.gpu_count} x {product.name}{_share_text(recipe, catalog)}, {product.memory_mib // 1024} GiB each"
    if recipe.performance is not None:
        mine += (
            f"; expects {recipe.performance.tokens_per_second} tok/s, "
            f"{tokens_per_second_per_gpu(recipe, catalog):.0f} per whole GPU"
        )
    whole = [
        e
        for e in evaluation.ranked
        if (p := catalog.get(e.recipe.hardware)) is not None
        and not p.is_partition
        and not p.is_cpu
        and e.recipe.type != "general"
    ]
    if not whole:
        return (Finding(code="PARTITION", message=mine + "; the catalog has no whole-GPU recipe of this model to compare"),)
    best = next((e for e in whole if e.feasible), whole[0])
    other = best.recipe
    theirs = f"{other.recipe_id} on {other.gpu_count} x whole {other.hardware}"
    if other.performance is not None:
        theirs += (
            f" expects {other.performance.tokens_per_second} tok/s ({tokens_per_second_per_gpu(other, catalog):.0f} per GPU)"
        )
    theirs += "; it fits now" if best.feasible else f"; it does not fit now: {best.findings[0].message}"
    return (Finding(code="PARTITION", message=f"{mine}. Against a whole GPU: {theirs}"),)


def _by_verdict(others: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """_order() of _other_verdicts()'s list, which keeps the evaluation's rank order: the eligible
    ones, then the rejected, each in that order (no sort of thousands of keys again)."""
    return (*(c for c in others if c.verdict == "eligible"), *(c for c in others if c.verdict == "rejected"))


def _order(candidates: Sequence[Candidate], ranks: Ranks) -> tuple[Candidate, ...]:
    return tuple(sorted(candidates, key=lambda c: (VERDICTS.index(c.verdict), ranks(c.recipe), c.recipe.recipe_id)))


_LEVEL_SUMMARY: dict[Level, str] = {
    "primary": "best recipe for this cluster's hardware, and capacity is free",
    "secondary": "fallback: an alternative precision, GPU count or product with free capacity",
    "tertiary": "fallback: a catalog recipe adapted to the free GPUs (another GPU count, or a shorter context)",
    "default": "fallback: generic recipe",
}


def _why(recipe: Recipe, level: Level, plan: MemoryPlan | None, catalog: HardwareCatalog) -> str:
    parts = [f"{recipe.recipe_id} ({recipe.gpu_count} x {recipe.hardware}, {recipe.precision}, {recipe.type})"]
    if recipe.performance is not None:
        parts.append(
            f"expects {recipe.performance.tokens_per_second} tok/s ({tokens_per_second_per_gpu(recipe, catalog):.0f} per GPU"
            f"{_share_text(recipe, catalog)}, "
            f"{figure_source(recipe)})"
        )
    if plan is not None:
        parts.append(f"holds {plan.concurrent_sequences} full-length sequences of {plan.max_model_len} tokens")
    summary = _LEVEL_SUMMARY[level]
    if level == "default" and recipe.origin == "synthesized":
        summary += " synthesised from the model analysis"
    return f"{level}: {summary}; " + "; ".join(parts)


def _outranked(recipe: Recipe, chosen: Recipe | None, ranks: Ranks, *, chosen_key: RankKey | None = None) -> Finding:
    if chosen is None:
        return Finding(code="OUTRANKED", message="fits")
    catalog = ranks.catalog
    a, b = ranks(recipe), chosen_key if chosen_key is not None else ranks(chosen)
    if a.type_rank != b.type_rank:
        why = f"type {recipe.type} ranks below {chosen.type}"
    elif a.negated_priority != b.negated_priority:
        why = f"priority {recipe.priority} is below {chosen.priority}"
    elif a.negated_tokens_per_second_per_gpu != b.negated_tokens_per_second_per_gpu:
        why = (
            f"{-a.negated_tokens_per_second_per_gpu:.0f} expected tok/s per GPU{_share_text(recipe, catalog)} "
            f"({figure_source(recipe)}) against {-b.negated_tokens_per_second_per_gpu:.0f}"
            f"{_share_text(chosen, catalog)} ({figure_source(chosen)})"
        )
    elif a.evidence_rank != b.evidence_rank:
        why = f"equal tok/s per GPU, but its figure is {figure_source(recipe)} and {chosen.recipe_id}'s {figure_source(chosen)}"
    elif a.gpu_count != b.gpu_count:
        why = f"uses {recipe.gpu_count} GPUs against {chosen.gpu_count}"
    else:
        why = f"precision {recipe.precision} ranks below {chosen.precision}"
    return Finding(
        code="OUTRANKED",
        message=f"fits, but {chosen.recipe_id} ranks higher: {why}",
        fix="pin it with custom_recipe, or raise its priority in the catalog",
    )


def _not_found_message(evaluation: Evaluation, unavailable: Sequence[Finding]) -> str:
    """What was tried and what stood in the way: the missing catalog entry or model analysis, the
    overrides, why the default level built nothing, and the closest catalog recipe."""
    request, ranked = evaluation.request, evaluation.ranked
    lines: list[str] = []
    if not ranked:
        lines.append(f"the catalog has no recipe for {request.model_id}")
    if evaluation.model is None:
        lines.append(
            f"{request.model_id} is not in the bundled model table; pass --model-config with its config.json "
            "so a default recipe can be synthesised"
        )
    if not evaluation.inventory.products:
        lines.append("no schedulable, ready node with a recognised GPU (see `aim-recipes detect`)")
    overrides = request.overrides
    if overrides:
        lines.append("overrides in force (never relaxed): " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    for line in dict.fromkeys(f"default: {f.message}" + (f" — {f.fix}" if f.fix else "") for f in unavailable):
        lines.append(line)
    if not request.allow_default:
        lines.append("the default (generic) level is disabled")
    slo_lines = _slo_alternatives(evaluation) if request.slo else []
    lines += slo_lines
    near = [e for e in ranked if not e.feasible]
    if near and not any(line.startswith("closest, target by target") for line in slo_lines):
        # A recipe whose hardware is here first, then the fewest findings, then the best rank
        # (`ranked` breaks ties by recipe id).
        closest = min(near, key=lambda e: (any(f.code == "HARDWARE_ABSENT" for f in e.findings), len(e.findings)))
        first = closest.findings[0]
        lines.append(f"closest: {closest.recipe.recipe_id}: {first.message}" + (f" — {first.fix}" if first.fix else ""))
    return "no recipe fits: " + "; ".join(lines)


SLO_CODES = frozenset({"SLO_THROUGHPUT", "SLO_LATENCY", "SLO_TTFT"})


def _slo_alternatives(evaluation: Evaluation) -> list[str]:
    """Under an SLO nothing fit: what would. Recipes that meet the SLO but not this cluster (more
    GPUs, another product), and the targets the recipes that run here do reach."""
    out: list[str] = []
    missed = [e for e in evaluation.ranked if any(f.code in SLO_CODES for f in e.static)]
    if not missed:
        return out
    slo, names = evaluation.request.slo, evaluation.request.slo_names
    out.append(f"{len(missed)} recipe(s) miss the SLO ({', '.join(f'{names[k]} {v}' for k, v in slo.targets())})")
    meeting = [e for e in evaluation.ranked if not any(f.code in SLO_CODES for f in e.static) and not e.feasible]
    for e in meeting[:3]:
        blocker = e.findings[0]
        out.append(
            f"would meet it: {e.recipe.recipe_id} ({e.recipe.gpu_count} x {e.recipe.hardware}), but {blocker.message}"
            + (f" — {blocker.fix}" if blocker.fix else "")
        )
    # Target by target, the recipe nearest it among those that could be placed now but for the
    # SLO; failing any, among those whose hardware is here but that need free capacity.
    placeable = [e.recipe for e in missed if all(f.code in SLO_CODES for f in e.findings)]
    here = [e.recipe for e in missed if all(f.code in SLO_CODES for f in e.static)]
    nearest = nearest_per_target(placeable or here, slo)
    if nearest:
        where = "placeable now" if placeable else "on this cluster's hardware, once GPUs are free"
        out.append(f"closest, target by target ({where}): " + "; ".join(n.text(names) for n in nearest))
    return out


def _select_pinned(
    recipe: Recipe,
    *,
    measured: Match | None,
    request: Request,
    model: ModelProfile | None,
    catalog: HardwareCatalog,
    registry: ArgRegistry,
    inventory: Inventory,
    hardware: Mapping[str, ProductSummary],
) -> Selection:
    """A custom recipe pinned by the user: selected at the primary level if it passes every check,
    else refused with the reasons; the catalog is not consulted. Its figures are its comparable
    measurement's, if it has one (`measured`), as the alerts will hold it to."""
    reasons: list[Finding] = []
    if recipe.model_key != request.model_id.lower():
        reasons.append(
            Finding(
                code="MODEL_MISMATCH",
                message=f"custom recipe {recipe.recipe_id} is for {recipe.huggingface_id}, not {request.model_id}",
                fix=f"set model_id to {recipe.huggingface_id} or fix the recipe",
            )
        )
    evaluated = evaluate(recipe, request=request, model=model, catalog=catalog, registry=registry, inventory=inventory)
    reasons += evaluated.findings
    if reasons:
        message = f"custom recipe {recipe.recipe_id} refused: " + "; ".join(
            r.message + (f" — {r.fix}" if r.fix else "") for r in reasons
        )
        refused = Candidate(recipe=recipe, verdict="rejected", reasons=tuple(reasons), level="primary", plan=evaluated.plan)
        return Selection(
            request=request,
            model=model,
            recipe=None,
            level=None,
            result="not_found",
            message=message,
            candidates=(refused,),
            hardware=hardware,
        )
    notes = [
        Finding(code="SELECTED", message=f"primary: custom recipe {recipe.recipe_id} pinned by the user; it passes every check")
    ]
    if model is None:
        notes.append(
            Finding(
                code="MODEL_UNANALYSED",
                message=f"{recipe.huggingface_id} is not in the bundled model table: memory fit was not checked",
                fix="pass --model-config with the model's config.json",
            )
        )
    notes += _evidence(measured, recipe)
    pack = packing(recipe, inventory)
    recipe = as_advertised(recipe, catalog, pack.resource)
    if pack.reason:
        notes.append(Finding(code="PACKED", message=pack.reason))
    selected = Candidate(recipe=recipe, verdict="selected", reasons=tuple(notes), level="primary", plan=evaluated.plan)
    return Selection(
        request=request,
        model=model,
        recipe=recipe,
        level="primary",
        result="selected",
        message=notes[0].message,
        candidates=(selected,),
        placement=pack.nodes[:5],
        packing=pack,
        hardware=hardware,
    )
