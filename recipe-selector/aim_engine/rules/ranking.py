"""How recipes rank, best first: recipe type (optimized, preview, unoptimized, general), priority
(higher first), expected output tokens/s per GPU (higher first), the evidence behind that figure
(measured, published, estimated: aim_engine.rules.evidence), fewer GPUs, lower precision.

"Per GPU" is per physical GPU the recipe occupies: a recipe on partitions (a MIG 3g.40gb is 3/7
of an H100, a CPX partition 1/8 of an MI300X) is charged its share, so a small model that serves
nearly as fast on a partition as on a whole GPU ranks above the whole GPU — the rest of the GPU
serves other releases. A request's throughput target (an SLO) is what keeps a partition that is
too slow from being chosen.

A comparable measurement on the cluster replaces a recipe's figure before it is ranked
(rules.evidence.apply_measurements), so "measured > published > estimated" decides which figure
a recipe is ranked by, and breaks ties between equal figures."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

from aim_engine.domain.hardware import PRECISION_ORDER, HardwareCatalog
from aim_engine.domain.recipe import TYPE_RANK, Recipe
from aim_engine.rules.evidence import EVIDENCE_RANK, figure_source


class RankKey(NamedTuple):
    """Compared field by field; smaller is better."""

    type_rank: int
    negated_priority: int
    negated_tokens_per_second_per_gpu: Decimal
    evidence_rank: int
    gpu_count: int
    precision_rank: int


def gpu_share(recipe: Recipe, catalog: HardwareCatalog) -> Decimal:
    """How many physical GPUs the recipe occupies (gpu_count x the share of a GPU each device is)."""
    product = catalog.get(recipe.hardware)
    return recipe.gpu_count * (product.gpu_share if product is not None else Decimal(1))


def tokens_per_second_per_gpu(recipe: Recipe, catalog: HardwareCatalog) -> Decimal:
    """Expected output tokens/s per physical GPU occupied (0 without figures)."""
    if recipe.performance is None:
        return Decimal(0)
    return recipe.performance.tokens_per_second / gpu_share(recipe, catalog)


def rank_key(recipe: Recipe, catalog: HardwareCatalog) -> RankKey:
    return RankKey(
        type_rank=TYPE_RANK.get(recipe.type, len(TYPE_RANK)),
        negated_priority=-recipe.priority,
        negated_tokens_per_second_per_gpu=-tokens_per_second_per_gpu(recipe, catalog),
        evidence_rank=EVIDENCE_RANK[figure_source(recipe)],
        gpu_count=recipe.gpu_count,
        precision_rank=PRECISION_ORDER.get(recipe.precision, 99),
    )


class ParetoPoint(NamedTuple):
    """A recipe as a point of the trade between cost and speed: output tokens/s per GPU (higher
    is better) against mean inter-token latency (lower is better), with the evidence behind them."""

    recipe_id: str
    tokens_per_second_per_gpu: Decimal
    latency_ms: Decimal
    source: str


def pareto_front(recipes: Iterable[Recipe], catalog: HardwareCatalog) -> tuple[ParetoPoint, ...]:
    """The recipes no other beats on both tokens/s per GPU and latency (ties kept), best
    throughput first. Recipes without figures have no point."""
    points = [
        ParetoPoint(
            recipe_id=r.recipe_id,
            tokens_per_second_per_gpu=tokens_per_second_per_gpu(r, catalog),
            latency_ms=r.performance.latency_ms,
            source=figure_source(r),
        )
        for r in recipes
        if r.performance is not None
    ]

    def dominated(p: ParetoPoint) -> bool:
        return any(
            q.tokens_per_second_per_gpu >= p.tokens_per_second_per_gpu
            and q.latency_ms <= p.latency_ms
            and (q.tokens_per_second_per_gpu > p.tokens_per_second_per_gpu or q.latency_ms < p.latency_ms)
            for q in points
        )

    front = {p.recipe_id: p for p in points if not dominated(p)}
    return tuple(sorted(front.values(), key=lambda p: (-p.tokens_per_second_per_gpu, p.latency_ms, p.recipe_id)))
