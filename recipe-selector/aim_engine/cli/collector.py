"""The cyclic garbage collector paused while the CLI builds an inventory or selects.

Both allocate tens of thousands of small objects (a record per node, a judgement and a verdict
per recipe) that the cyclic collector scans again at every generation threshold, though none of
them forms a cycle: reference counting frees them. A one-shot command pays ~15 % of a 10,000-recipe
selection for those scans (tools/bench_selection.py measures it, as the CLI runs). Pausing the
collector for the call, and restoring it after, costs nothing but the cycles such a call might
leave, which the next collection after it frees.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block; re-enable it after if it was enabled."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
