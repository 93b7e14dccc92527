"""Sizing a configuration the selector builds (tertiary and default levels): how many GPUs, and how
much context. More GPUs (within one node's free GPUs) before a much shorter context, and the trade
made is said (reason SIZING)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from aim_engine.selection.request import DEFAULT_MIN_CONTEXT

# The context a configuration keeps when one node cannot hold the whole of it: long enough for
# retrieval-augmented prompts and multi-turn chat; below it, a shorter context is a real loss.
CONTEXT_FLOOR = 32768

# How much context a sizing kept: 0 the whole context wanted; 1 at least the floor; 2 shorter
# (never below min_context). Lower is better.
SizingTier = Literal[0, 1, 2]


@dataclass(frozen=True, slots=True)
class Sizing:
    """A GPU count and context for one node, and the trade made to reach them."""

    gpus: int
    max_model_len: int
    tier: SizingTier
    trade: str = ""  # what was given up, and why; "" when nothing was
    fix: str = ""  # how to make the other trade

    @property
    def shortened(self) -> bool:
        return self.tier > 0


def size_for_context(
    fit: Callable[[int], int],
    *,
    sizes: Sequence[int],
    free: int,
    context: int,
    whose: str,
    where: str,
    requested_len: int | None = None,
    min_context: int = DEFAULT_MIN_CONTEXT,
    floor: int = CONTEXT_FLOOR,
    pinned: bool = False,
) -> Sizing | None:
    """The GPU count a seasoned engineer picks for a configuration built here (default and tertiary
    levels): more GPUs before a much shorter context.

    `fit(n)` is the longest context the memory plan on n GPUs holds (0: the weights do not fit);
    `sizes` the GPU counts allowed (tensor-parallel sizes that divide the model's heads, up to the
    largest node; or the one `gpu_count` override: `pinned`), ascending; `free` the most GPUs free
    on one node; `context` the context wanted (the model's, or the catalog recipe's).

    1. An explicit max_model_len is never changed: the fewest free GPUs that hold it.
    2. Else the fewest free GPUs that hold the whole context.
    3. Else (capacity or memory does not allow it) the fewest free GPUs that hold at least
       min(context, max(floor, min_context)) tokens, with the longest context they hold.
    4. Else the free GPU count that holds the longest context, never below min_context.
    None when no free GPU count holds min_context (or the explicit max_model_len).
    The trade names the count passed over and what it would have held, or what the whole context
    would need."""
    usable = [n for n in sizes if n <= free]
    fit = functools.cache(fit)  # each count's memory plan once, for this call only

    def first(pool: Sequence[int], length: int) -> int | None:
        return next((n for n in pool if fit(n) >= length), None)

    if requested_len is not None:
        n = first(usable, requested_len)
        return None if n is None else Sizing(gpus=n, max_model_len=requested_len, tier=0)
    fewest = first(usable, min(context, min_context))
    if fewest is None:
        return None

    def passed_over(n: int) -> str:
        if n == fewest:
            return ""
        return f"{n} GPUs rather than {fewest}: {fewest} would fit only {fit(fewest):,} tokens of {whose} {context:,} context"

    full = first(usable, context)
    if full is not None:
        trade = passed_over(full)
        fewer = "set gpu_count (and max_model_len) to trade the context for fewer GPUs"
        return Sizing(gpus=full, max_model_len=context, tier=0, trade=trade, fix=fewer if trade else "")

    def needs(length: int) -> str:
        if pinned:
            return f"the requested {fewest} GPUs hold no more"
        n = first(sizes, length)
        if n is None:
            return f"no tensor-parallel size on {where} holds {length:,}"
        return f"{length:,} would need {n} GPUs, more than the {free} free on {where}"

    if pinned:
        fix = "raise the gpu_count override for a longer context"
    elif first(sizes, context) is None:
        fix = "use a GPU with more memory, or a lower precision, for the whole context"
    else:
        fix = f"free GPUs on {where} for the whole context"
    wanted = min(context, max(floor, min_context))
    mid = first(usable, wanted)
    if mid is not None:
        length = min(context, fit(mid))
        trade = f"context {length:,} of {whose} {context:,} tokens: {needs(context)}"
        other = passed_over(mid)
        return Sizing(gpus=mid, max_model_len=length, tier=1, trade=trade + (f"; {other}" if other else ""), fix=fix)
    best = max((n for n in usable if fit(n) >= min_context), key=lambda n: (fit(n), -n))
    length = min(context, fit(best))
    trade = f"context cut to {length:,} of {whose} {context:,} tokens: {needs(wanted)}"
    return Sizing(gpus=best, max_model_len=length, tier=2, trade=trade, fix=fix)
