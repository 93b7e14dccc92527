"""What a selection answers: the level that chose, the verdict on every candidate with its reasons,
and the result. The string values are written to ConfigMaps, annotations, metrics and JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TypedDict, get_args

from aim_engine.cluster.inventory import Inventory
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import GIB
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.compat import Finding
from aim_engine.rules.evidence import figure_provenance, figure_source
from aim_engine.rules.memory import MemoryPlan
from aim_engine.rules.ranking import ParetoPoint
from aim_engine.selection.request import Request

# The fallback levels, in the order they are tried (see aim_engine.selection.levels).
Level = Literal["primary", "secondary", "tertiary", "default"]
LEVELS: tuple[Level, ...] = get_args(Level)


@dataclass(frozen=True, slots=True, kw_only=True)
class Packing:
    """Where one pod of the recipe goes, densest first: the usable nodes of its device with room,
    nodes that already run something (any device of the node in use) before empty ones, then the
    fullest. `preferred`: the node pods are steered to (a node in use, when one has room), with
    `reason` saying so; `resource`: the name that node advertises the device as (a partition can be
    nvidia.com/mig-3g.40gb or, under the single strategy, nvidia.com/gpu)."""

    nodes: tuple[str, ...]
    resource: str | None = None
    preferred: str | None = None
    preferred_hostname: str | None = None
    reason: str = ""


# A candidate's verdict: the one selected, one that fits but was not chosen, one that does not fit.
Verdict = Literal["selected", "eligible", "rejected"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

# The selection's result: a recipe; none fits; or two rank equal and the catalog must say which.
Result = Literal["selected", "not_found", "ambiguous"]


class ProductSummary(TypedDict):
    """One GPU product's capacity as the selection saw it (the JSON output's `hardware`)."""

    nodes: int
    allocatable: int
    free: int
    max_free_on_one_node: int


def hardware_summary(inventory: Inventory) -> dict[str, ProductSummary]:
    return {
        name: ProductSummary(nodes=cap.nodes, allocatable=cap.allocatable, free=cap.free, max_free_on_one_node=cap.max_free)
        for name, cap in sorted(inventory.products.items())
    }


@dataclass(frozen=True, slots=True)
class Candidate:
    recipe: Recipe
    verdict: Verdict
    reasons: tuple[Finding, ...]
    level: Level | None = None
    plan: MemoryPlan | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "recipe_id": self.recipe.recipe_id,
            "hardware": self.recipe.hardware,
            "gpu_count": self.recipe.gpu_count,
            "precision": self.recipe.precision,
            "type": self.recipe.type,
            "origin": self.recipe.origin,
            "verdict": self.verdict,
            "level": self.level,
            "reasons": [r.as_dict() for r in self.reasons],
        }
        if self.recipe.performance is not None:
            out["expected_tokens_per_second"] = float(self.recipe.performance.tokens_per_second)
            out["expected_latency_ms"] = float(self.recipe.performance.latency_ms)
            out["figure_source"] = figure_source(self.recipe)
            out["figure_provenance"] = figure_provenance(self.recipe)
        if self.plan is not None:
            out["memory"] = {
                "per_gpu_budget_gib": round(float(self.plan.budget / GIB), 1),
                "weights_per_gpu_gib": round(float(self.plan.weights / GIB), 1),
                "kv_cache_per_gpu_gib": round(float(max(self.plan.kv_budget, Decimal(0)) / GIB), 1),
                "max_model_len": self.plan.max_model_len,
                "max_model_len_that_fits": self.plan.max_model_len_fit,
                "full_length_sequences": self.plan.concurrent_sequences,
            }
        return out


@dataclass(frozen=True, slots=True)
class Selection:
    request: Request
    model: ModelProfile | None
    recipe: Recipe | None
    level: Level | None
    result: Result
    message: str
    candidates: tuple[Candidate, ...]  # the selected one first, then eligible, then rejected
    placement: tuple[str, ...] = ()  # nodes the selected recipe fits on now (at most 5)
    hardware: Mapping[str, ProductSummary] = field(default_factory=dict)
    # The recipes that could be placed now (and meet the SLO), none beaten on both tokens/s per
    # GPU and latency: the trade the selection chose a point of (rules.ranking.pareto_front).
    pareto: tuple[ParetoPoint, ...] = ()
    # Where the selected recipe's pods go first (dense packing) and the device name they ask for.
    packing: Packing | None = None

    @property
    def ok(self) -> bool:
        return self.recipe is not None
