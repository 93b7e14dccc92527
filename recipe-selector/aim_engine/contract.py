"""The contract between the selector (and its Helm hook), the admission webhook and the chart.

Every label, annotation, ConfigMap name and key that more than one side writes or reads is defined
here once; the chart's templates use the same literal strings (tests/unit/test_contract.py checks
the chart against this module). The node affinity the selector writes for the webhook is a typed
value with one writer (`NodeAffinity.to_json`) and one reader (`NodeAffinity.parse`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from aim_engine.domain.errors import InputError

# ---- Labels and annotations on workloads (Deployments, StatefulSets, LeaderWorkerSets, Pods) ----
# The recipe a workload runs: a recipe id, or SELECTED (whatever its release's selection ConfigMap
# holds; the webhook injects that recipe into each Pod at creation and sets the label to its id).
RECIPE_LABEL: Final = "aim-engine.io/recipe-id"
SELECTED: Final = "selected"
# The selection ConfigMap (same namespace) a SELECTED workload reads.
RECIPE_CONFIG_ANNOTATION: Final = "aim-engine.io/recipe-config"
# Which container is the engine, when a pod has several.
CONTAINER_ANNOTATION: Final = "aim-engine.io/container"
# A workload's service-level targets (the chart sets them from aim_engine.slo.*), held to its
# recipe's figures by rules.slo, the selector's own check: by target key, the annotation.
SLO_TPS_ANNOTATION: Final = "aim-engine.io/slo-min-tokens-per-second"
SLO_LATENCY_ANNOTATION: Final = "aim-engine.io/slo-max-latency-ms"  # inter-token latency, p95
SLO_TTFT_ANNOTATION: Final = "aim-engine.io/slo-ttft-p95-ms"
SLO_ANNOTATIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ttft_p95_ms": SLO_TTFT_ANNOTATION,
        "itl_p95_ms": SLO_LATENCY_ANNOTATION,
        "min_output_tokens_per_second": SLO_TPS_ANNOTATION,
    }
)
# The engine simulator's command (tools/engine/simulator.py; the chart's workload.engine=simulator):
# it takes vLLM's `serve MODEL [flags]` command line, so the rules read it as they read `vllm serve`,
# and its /version answers with this name first (a benchmark of it says so in its provenance).
SIMULATOR_PROGRAM: Final = "aim-engine-sim"
# On the pod template: the Hugging Face id of the weights the container loads, when the command
# line names them by a local path, a bucket URI or a mirror (`vllm serve /models/qwen3-32b`).
SERVED_MODEL_ANNOTATION: Final = "aim-engine.io/served-model"
# Set by the mutating webhook on each Pod it injects a recipe into: the recipe's
# serving_fingerprint (domain.recipe); the reconcile Job replaces Pods whose fingerprint is not their
# selection's (a recipe changed with no change to the pod template, e.g. by a measurement).
RECIPE_FINGERPRINT_ANNOTATION: Final = "aim-engine.io/recipe-fingerprint"
# Set by the mutating webhook on the Pods it injects a recipe into (the dashboards group by them).
GPU_MODEL_LABEL: Final = "aim-engine.io/gpu-model"
TP_LABEL: Final = "aim-engine.io/tensor-parallel-size"
PRECISION_LABEL: Final = "aim-engine.io/precision"

# ---- The selection ConfigMap, written by `aim-recipes select --write-configmap` ----
RECIPE_CONFIG_SUFFIX: Final = "-recipe-config"
RECIPE_KEY: Final = "recipe.yaml"  # the selected recipe, seed format (also a custom recipe ConfigMap's key)
SELECTION_KEY: Final = "selection.json"
EXPLANATION_KEY: Final = "explanation.txt"
LAST_ATTEMPT_JSON_KEY: Final = "last-attempt.json"
LAST_ATTEMPT_TEXT_KEY: Final = "last-attempt.txt"
# The nodeSelectorTerms that keep pods on the selected product's nodes (NodeAffinity below).
NODE_AFFINITY_KEY: Final = "node-affinity.json"
SELECTION_METRICS_KEY: Final = "selection-metrics.json"
# How the release is configured, in every mode: "auto" (the selector chose), "pinned" (a custom or
# catalog recipe named in values), "manual" (auto_select=false: GPUs and precision set by hand, the
# hook only checks where they fit). Manual mode writes PLACEMENT_KEY instead of a recipe.
MODE_KEY: Final = "mode"
PLACEMENT_KEY: Final = "placement.json"
# How the engine Deployment replaces its pods at the next recipe change (surge, rolling, recreate),
# decided by the hook from the free devices (workload.strategy=auto) and applied to the Deployment.
UPGRADE_KEY: Final = "upgrade.json"
# Set by the reconcile Job on the engine Deployment's pod template to roll it when the selection
# changed but the template did not: the fingerprint of the recipe the new pods get.
RECIPE_ROLLOUT_ANNOTATION: Final = "aim-engine.io/recipe-rollout"
# A release's benchmark history (`helm test`): ConfigMap <release>-recipe-benchmarks, key benchmarks.json.
BENCHMARKS_SUFFIX: Final = "-recipe-benchmarks"
BENCHMARKS_KEY: Final = "benchmarks.json"
SELECTION_RESULT_ANNOTATION: Final = "aim-engine.io/selection-result"
SELECTION_LEVEL_ANNOTATION: Final = "aim-engine.io/selection-level"

# ---- Standard labels ----
NAME_LABEL: Final = "app.kubernetes.io/name"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
APP_NAME: Final = "aim-engine"
RECIPE_CONFIG_COMPONENT: Final = "recipe-config"
ADMISSION_COMPONENT: Final = "admission-controller"
RECIPE_CONFIG_SELECTOR: Final = f"{COMPONENT_LABEL}={RECIPE_CONFIG_COMPONENT}"
BENCHMARKS_COMPONENT: Final = "recipe-benchmarks"
BENCHMARKS_SELECTOR: Final = f"{COMPONENT_LABEL}={BENCHMARKS_COMPONENT}"


def benchmarks_name(release: str) -> str:
    """The benchmark history ConfigMap of a release."""
    return f"{release}{BENCHMARKS_SUFFIX}"


def recipe_config_name(release: str) -> str:
    """The selection ConfigMap of a release."""
    return f"{release}{RECIPE_CONFIG_SUFFIX}"


def release_of(configmap_name: str) -> str:
    """The release a selection ConfigMap belongs to (the name itself when it has no suffix)."""
    return configmap_name.removesuffix(RECIPE_CONFIG_SUFFIX)


def recipe_config_labels(*, release: str, recipe_id: str | None, managed_by: str) -> dict[str, str]:
    labels = {
        NAME_LABEL: APP_NAME,
        INSTANCE_LABEL: release,
        COMPONENT_LABEL: RECIPE_CONFIG_COMPONENT,
        MANAGED_BY_LABEL: managed_by,
    }
    if recipe_id:
        labels[RECIPE_LABEL] = recipe_id
    return labels


# ---- Node affinity: selector -> webhook ----
@dataclass(frozen=True, slots=True)
class LabelIn:
    """A node label that must take one of these values (a matchExpression with operator In)."""

    key: str
    values: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "operator": "In", "values": list(self.values)}


@dataclass(frozen=True, slots=True)
class NodeTerm:
    """One nodeSelectorTerm: every expression must hold."""

    expressions: tuple[LabelIn, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"matchExpressions": [e.as_dict() for e in self.expressions]}


@dataclass(frozen=True, slots=True)
class NodeAffinity:
    """nodeSelectorTerms, ORed: where the selected recipe's pods may run; and `preferred`: the
    nodes they should go to first (dense packing: nodes already in use that still fit them), which
    the webhook writes as preferred scheduling terms."""

    terms: tuple[NodeTerm, ...]
    preferred: tuple[NodeTerm, ...] = ()

    def as_terms(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in self.terms]

    def to_json(self) -> str:
        doc: dict[str, Any] = {"nodeSelectorTerms": self.as_terms()}
        if self.preferred:
            doc["preferred"] = [t.as_dict() for t in self.preferred]
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @staticmethod
    def parse(text: str, *, where: str) -> NodeAffinity:
        """Anything but non-empty terms of In expressions with string values is refused: the
        webhook would otherwise require a node affinity nobody can read."""
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise InputError(f"{where}: not JSON ({e})") from e
        raw_terms = doc.get("nodeSelectorTerms") if isinstance(doc, dict) else None
        if not isinstance(raw_terms, list) or not raw_terms:
            raise InputError(f"{where}: expected a non-empty nodeSelectorTerms list")
        raw_preferred = doc.get("preferred", [])
        if not isinstance(raw_preferred, list):
            raise InputError(f"{where}: preferred must be a list of terms")
        return NodeAffinity(_terms(raw_terms, where=where), _terms(raw_preferred, where=where))


def _terms(raw_terms: list[Any], *, where: str) -> tuple[NodeTerm, ...]:
    terms: list[NodeTerm] = []
    for term in raw_terms:
        exprs = term.get("matchExpressions") if isinstance(term, dict) else None
        if not isinstance(exprs, list) or not exprs:
            raise InputError(f"{where}: each term needs matchExpressions")
        terms.append(NodeTerm(tuple(_label_in(expr, where=where) for expr in exprs)))
    return tuple(terms)


def _label_in(expr: object, *, where: str) -> LabelIn:
    if isinstance(expr, Mapping):
        key, values = expr.get("key"), expr.get("values")
        if (
            isinstance(key, str)
            and expr.get("operator") == "In"
            and isinstance(values, list)
            and values
            and all(isinstance(v, str) for v in values)
        ):
            return LabelIn(key, tuple(values))
    raise InputError(f"{where}: each expression needs a key, operator In and string values, got {expr!r}")


# No constraint: a pod may run on any node (the selection named no nodes).
ANYWHERE: Final = NodeAffinity(())
