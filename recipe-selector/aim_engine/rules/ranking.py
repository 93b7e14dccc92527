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

from collections.abc import Iterable, Sequence
from decimal import Decimal
from operator import itemgetter
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


_ONE = Decimal(1)
_new_tuple = tuple.__new__


def rank_key(recipe: Recipe, catalog: HardwareCatalog) -> RankKey:
    perf = recipe.performance
    if perf is None:
        per_gpu = Decimal(0)
    else:  # tokens_per_second_per_gpu(), inlined: this runs once per recipe of every selection
        product = catalog.get(recipe.hardware)
        share = product.gpu_share if product is not None and product.partition is not None else _ONE
        per_gpu = perf.tokens_per_second / (recipe.gpu_count * share)
    # tuple.__new__ in RankKey's field order: a NamedTuple's own __new__ is a Python call, and
    # this runs once per recipe of every selection.
    return _new_tuple(
        RankKey,
        (
            TYPE_RANK.get(recipe.type, len(TYPE_RANK)),
            -recipe.priority,
            -per_gpu,
            EVIDENCE_RANK[figure_source(recipe)],
            recipe.gpu_count,
            PRECISION_ORDER.get(recipe.precision, 99),
        ),
    )


class Ranks:
    """rank_key of each recipe, computed once for one selection: a selection sorts, compares and
    explains the same recipes several times, and recipes are immutable. Keyed by identity (the
    recipe is held, so its id is not reused while the memo lives)."""

    __slots__ = ("_memo", "catalog")

    def __init__(self, catalog: HardwareCatalog) -> None:
        self.catalog = catalog
        self._memo: dict[int, tuple[Recipe, RankKey]] = {}

    def sort(self, recipes: Sequence[Recipe]) -> list[int]:
        """The indices of `recipes` best first, the recipe id breaking ties (so the catalog's
        order never matters); their keys stay memoised. One C-level sort of plain tuples."""
        keyed = []
        for i, r in enumerate(recipes):
            key = rank_key(r, self.catalog)
            self._memo[id(r)] = (r, key)
            keyed.append((key, r.recipe_id, i))
        keyed.sort()
        return [i for _, _, i in keyed]

    def __call__(self, recipe: Recipe) -> RankKey:
        hit = self._memo.get(id(recipe))
        if hit is not None and hit[0] is recipe:
            return hit[1]
        key = rank_key(recipe, self.catalog)
        self._memo[id(recipe)] = (recipe, key)
        return key


class ParetoPoint(NamedTuple):
    """A recipe as a point of the trade between cost and speed: output tokens/s per GPU (higher
    is better) against mean inter-token latency (lower is better), with the evidence behind them."""

    recipe_id: str
    tokens_per_second_per_gpu: Decimal
    latency_ms: Decimal
    source: str


def pareto_front(recipes: Iterable[Recipe], catalog: HardwareCatalog, *, ranks: Ranks | None = None) -> tuple[ParetoPoint, ...]:
    """The recipes no other beats on both tokens/s per GPU and latency (ties kept), best
    throughput first. Recipes without figures have no point. One sort and a sweep (n log n):
    q beats p when q's tokens/s per GPU are higher and its latency no worse, or equal and its
    latency lower. `ranks`: the selection's rank keys, which hold the tokens/s per GPU."""
    # (tokens/s per GPU, latency, recipe): the point of each recipe with figures; a ParetoPoint
    # (with its evidence) is built only for the front.
    points: list[tuple[Decimal, Decimal, Recipe]] = []
    for r in recipes:
        if r.performance is None:
            continue
        tps = -ranks(r).negated_tokens_per_second_per_gpu if ranks is not None else tokens_per_second_per_gpu(r, catalog)
        points.append((tps, r.performance.latency_ms, r))
    points.sort(key=itemgetter(1))  # then by tokens/s per GPU, best first: a stable sort keeps latency order
    points.sort(key=itemgetter(0), reverse=True)
    front: dict[str, ParetoPoint] = {}
    best_faster: Decimal | None = None  # the lowest latency among points with more tokens/s per GPU
    i = 0
    while i < len(points):
        j = i
        while j < len(points) and points[j][0] == points[i][0]:
            j += 1
        lowest = points[i][1]  # of this group of equal tokens/s per GPU (sorted by latency)
        for tps, latency, r in points[i:j]:
            if not ((best_faster is not None and best_faster <= latency) or lowest < latency):
                front[r.recipe_id] = ParetoPoint(
                    recipe_id=r.recipe_id, tokens_per_second_per_gpu=tps, latency_ms=latency, source=figure_source(r)
                )
        best_faster = lowest if best_faster is None else min(best_faster, lowest)
        i = j
    return tuple(sorted(front.values(), key=lambda p: (-p.tokens_per_second_per_gpu, p.latency_ms, p.recipe_id)))
