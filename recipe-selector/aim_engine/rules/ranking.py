"""How recipes rank, best first: recipe type (optimized, preview, unoptimized, general), priority
(higher first), expected output tokens/s per GPU (higher first), fewer GPUs, lower precision."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from aim_engine.domain.hardware import PRECISION_ORDER
from aim_engine.domain.recipe import TYPE_RANK, Recipe


class RankKey(NamedTuple):
    """Compared field by field; smaller is better."""

    type_rank: int
    negated_priority: int
    negated_tokens_per_second_per_gpu: Decimal
    gpu_count: int
    precision_rank: int


def rank_key(recipe: Recipe) -> RankKey:
    return RankKey(
        type_rank=TYPE_RANK.get(recipe.type, len(TYPE_RANK)),
        negated_priority=-recipe.priority,
        negated_tokens_per_second_per_gpu=-recipe.tokens_per_second_per_gpu,
        gpu_count=recipe.gpu_count,
        precision_rank=PRECISION_ORDER.get(recipe.precision, 99),
    )
