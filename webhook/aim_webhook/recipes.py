"""Which recipe a workload names: the release's selection ConfigMap, or the catalog.

Pods read the ConfigMap fresh: a `helm upgrade` rewrites it moments before the rollout creates the
new Pods, and a cached copy would inject the previous recipe (found on a real control plane). Reviews
of controllers (Deployments, ...) go through a short TTL cache: they are only judged, never given
the recipe, and may be reviewed often."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aim_engine.adapters.catalog import Bundle, parse_yaml_documents, recipe_documents, typed_recipe
from aim_engine.adapters.kube import Forbidden
from aim_engine.contract import (
    ANYWHERE,
    LAST_ATTEMPT_TEXT_KEY,
    NODE_AFFINITY_KEY,
    RECIPE_CONFIG_ANNOTATION,
    RECIPE_KEY,
    RECIPE_LABEL,
    SELECTED,
    NodeAffinity,
)
from aim_engine.domain.errors import AimError
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.pod import Workload

from .offload import before_io

ConfigMapReader = Callable[[str, str], Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Resolution:
    recipe: Recipe | None
    problem: str = ""
    # Where the pods must run: the selected product's nodes (from the selection).
    node_affinity: NodeAffinity = ANYWHERE
    # The selection lives where this webhook may not read (another release's namespace): that
    # release's own webhook judges the object; this one lets it pass with a warning.
    not_ours: bool = False


class RecipeResolver:
    def __init__(self, bundle: Bundle, *, read_configmap: ConfigMapReader | None, ttl_seconds: float = 10.0) -> None:
        self.bundle = bundle
        self.read_configmap = read_configmap
        self.ttl = ttl_seconds
        self.by_id = {r.recipe_id: r for r in bundle.recipes}
        self._cache: dict[tuple[str, str], tuple[float, Resolution]] = {}
        self._lock = threading.Lock()

    def resolve(self, workload: Workload) -> Resolution:
        if workload.recipe_config:
            if workload.kind == "Pod":
                res = self._load(workload.namespace, workload.recipe_config)
            else:
                res = self._from_configmap(workload.namespace, workload.recipe_config)
            if res.recipe is not None and workload.recipe_id not in (SELECTED, res.recipe.recipe_id):
                return Resolution(
                    None,
                    f"label {RECIPE_LABEL}={workload.recipe_id} but ConfigMap "
                    f"{workload.recipe_config} holds recipe {res.recipe.recipe_id}; set the label to "
                    f"{res.recipe.recipe_id} (helm upgrade does) or remove the {RECIPE_CONFIG_ANNOTATION} annotation",
                )
            return res
        if workload.recipe_id == SELECTED:
            return Resolution(
                None,
                f"label {RECIPE_LABEL}={SELECTED} needs the annotation {RECIPE_CONFIG_ANNOTATION} "
                "naming the release's selection ConfigMap",
            )
        recipe = self.by_id.get(workload.recipe_id)
        if recipe is None:
            return Resolution(
                None,
                f"recipe {workload.recipe_id} is not in the catalog and no "
                f"{RECIPE_CONFIG_ANNOTATION} annotation names a ConfigMap holding it "
                "(aim-recipes list shows the catalog)",
            )
        return Resolution(recipe)

    def _from_configmap(self, namespace: str, name: str) -> Resolution:
        key = (namespace, name)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        res = self._load(namespace, name)
        with self._lock:
            self._cache[key] = (now, res)
        return res

    def selection(self, namespace: str, name: str) -> Resolution:
        """The recipe a selection ConfigMap holds now, read fresh (what a Pod created now is given)."""
        return self._load(namespace, name)

    def _load(self, namespace: str, name: str) -> Resolution:
        if self.read_configmap is None:
            return Resolution(None, f"recipe ConfigMap {namespace}/{name} cannot be read: the webhook runs without API access")
        before_io(f"reading ConfigMap {namespace}/{name}")
        try:
            cm = self.read_configmap(namespace, name)
        except Forbidden:
            return Resolution(
                None,
                f"not judged here: {namespace}/{name} is not readable (Forbidden); the release in {namespace} judges it",
                not_ours=True,
            )
        except AimError as e:
            return Resolution(None, f"recipe ConfigMap {namespace}/{name} cannot be read: {e}")
        if cm is None:
            return Resolution(
                None, f"recipe ConfigMap {namespace}/{name} not found; run the selector (helm upgrade) or remove the annotation"
            )
        try:
            data = cm.get("data") or {}
            if RECIPE_KEY not in data:
                return Resolution(
                    None,
                    f"ConfigMap {namespace}/{name} has no {RECIPE_KEY}: the last selection found no recipe "
                    f"(see its {LAST_ATTEMPT_TEXT_KEY})",
                )
            docs = parse_yaml_documents(str(data[RECIPE_KEY]), where=f"ConfigMap {namespace}/{name} recipe.yaml")
            found = [
                typed_recipe(self.bundle.validator, raw, where=where, origin="custom")
                for doc in docs
                for where, raw in recipe_documents(doc, where=f"ConfigMap {namespace}/{name}")
            ]
        except AimError as e:
            return Resolution(None, str(e))
        if len(found) != 1:
            return Resolution(None, f"ConfigMap {namespace}/{name} recipe.yaml holds {len(found)} recipes, expected one")
        affinity = ANYWHERE
        if NODE_AFFINITY_KEY in data:
            try:
                where = f"ConfigMap {namespace}/{name} {NODE_AFFINITY_KEY}"
                affinity = NodeAffinity.parse(str(data[NODE_AFFINITY_KEY]), where=where)
            except AimError as e:
                return Resolution(None, f"{e}; run the selector again (helm upgrade)")
        return Resolution(found[0], node_affinity=affinity)
