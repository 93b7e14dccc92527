"""How recipes rank, best first: recipe type (optimized, preview, unoptimized, general), priority
(higher first), expected output tokens/s per GPU (higher first), the evidence behind that figure
(measured, published, estimated: aim_engine.rules.evidence), fewer GPUs, lower precision.

A comparable measurement on the cluster replaces a recipe's figure before it is ranked
(rules.evidence.apply_measurements), so "measured > published > estimated" decides which figure
a recipe is ranked by, and breaks ties between equal figures."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from aim_engine.domain.hardware import PRECISION_ORDER
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


def rank_key(recipe: Recipe) -> RankKey:
    return RankKey(
        type_rank=TYPE_RANK.get(recipe.type, len(TYPE_RANK)),
        negated_priority=-recipe.priority,
        negated_tokens_per_second_per_gpu=-recipe.tokens_per_second_per_gpu,
        evidence_rank=EVIDENCE_RANK[figure_source(recipe)],
        gpu_count=recipe.gpu_count,
        precision_rank=PRECISION_ORDER.get(recipe.precision, 99),
    )
