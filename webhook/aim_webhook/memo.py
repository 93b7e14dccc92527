"""A bounded memo for the webhook's pure judgments.

A Deployment of N replicas is reviewed once, and then each of its N Pods is: the Pods differ only in
their names, yet each would be judged from scratch. `check_workload` and `mutate` are pure functions of
the workload's pod templates, its labels and annotations, the recipe and the (constant) catalog, so
their result for an identical workload is the one already computed. The memo keys a result by the
fingerprint of exactly what those functions read (never the object's name, uid or resourceVersion)
and by the recipe it was computed for: the entry holds that recipe object and a hit requires the
very same object, so a custom recipe the resolver re-read (same id, maybe new content) never meets
an old verdict. Exceptions are not memoised. Least recently used entries go first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import orjson

from aim_engine.domain.recipe import Recipe
from aim_engine.rules.pod import Workload

T = TypeVar("T")

# Metadata the API server or a controller sets per object: not part of what the rules read.
_PER_OBJECT = ("name", "generateName", "uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


def fingerprint(workload: Workload) -> bytes:
    """What check_workload and mutate read of a workload, as one canonical JSON text (orjson: a
    tenth of the standard library's time, and this runs for every review)."""
    return orjson.dumps(
        [
            workload.kind,
            workload.recipe_id,
            workload.recipe_config,
            workload.group_size,
            workload.annotations,
            workload.labels,
            [
                [t.role, t.spec_path, t.meta_path, t.spec, {k: v for k, v in t.metadata.items() if k not in _PER_OBJECT}]
                for t in workload.templates
            ],
        ],
        option=orjson.OPT_SORT_KEYS,
        default=str,
    )


class Memo(Generic[T]):
    def __init__(self, *, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[Recipe, T]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, recipe: Recipe, compute: Callable[[], T]) -> T:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is recipe:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
        value = compute()
        with self._lock:
            self.misses += 1
            self._entries[key] = (recipe, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value
