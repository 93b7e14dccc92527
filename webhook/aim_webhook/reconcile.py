"""`aim-webhook reconcile`: replace the Pods that were created before the webhook could give them
their recipe, once per install or upgrade (a Job of the release, one per revision).

Helm creates the webhook configurations after the Deployments, so a release's first Pods can be
created before the webhook is registered; their recipe label still reads `selected`. This command
waits until the webhook Deployment has an available replica (it has then written its CA bundle and
serves), then deletes such Pods when a controller owns them, so the controller recreates them
through the webhook. Bare Pods are left alone (nothing would recreate them) and reported.

Then it replaces the release's Pods that serve an outdated recipe: the selection (the release's
`<release>-recipe-config`) can change with no change to the pod template — a measurement that
reranks the recipes, a catalog update, an edited custom recipe — and Helm then rolls nothing. Each
Pod carries the fingerprint of the recipe the webhook gave it (RECIPE_FINGERPRINT_ANNOTATION). First
it waits for a rollout Helm started (a changed pod template gives the new Pods the new recipe
already). The engine Deployment's outdated Pods are then replaced by a rollout of the Deployment
(RECIPE_ROLLOUT_ANNOTATION on its pod template), so the strategy the selector set applies: with room
for one more pod the new one is Ready before an old one stops, and the last Ready pod is never
removed while its replacement can be scheduled. Other controllers' outdated Pods are deleted one at
a time, the next only once a Pod with the current recipe is ready, so a recipe that does not serve
never takes every replica down.

It runs as its own short-lived component with its own service account: the long-running webhook
needs no permission to list or delete Pods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aim_engine.contract import RECIPE_FINGERPRINT_ANNOTATION, RECIPE_LABEL, SELECTED

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"

log = logging.getLogger("aim_webhook.reconcile")
SELECTOR = f"{RECIPE_LABEL}={SELECTED}"


@dataclass(frozen=True, slots=True)
class Stale:
    """Pods without their recipe: those a controller will recreate, and bare ones it will not."""

    owned: tuple[str, ...]
    bare: tuple[str, ...]


def stale_pods(pods: Sequence[Mapping[str, Any]]) -> Stale:
    """Pure: of the Pods still labelled `selected`, which are being deleted is skipped."""
    owned: list[str] = []
    bare: list[str] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = meta.get("name")
        if not name or meta.get("deletionTimestamp"):
            continue
        (owned if meta.get("ownerReferences") else bare).append(str(name))
    return Stale(owned=tuple(sorted(owned)), bare=tuple(sorted(bare)))


def outdated_pods(pods: Sequence[Mapping[str, Any]], *, fingerprint: str, recipe_id: str) -> Stale:
    """Pure: the Pods given a recipe other than the selection's. A Pod carries the fingerprint the
    webhook gave it; one without (injected by an older webhook) is judged by its recipe id alone.
    Pods still `selected` are stale_pods()' business; Pods being deleted are skipped."""
    owned: list[str] = []
    bare: list[str] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = meta.get("name")
        label = (meta.get("labels") or {}).get(RECIPE_LABEL)
        if not name or meta.get("deletionTimestamp") or label in (None, SELECTED):
            continue
        have = (meta.get("annotations") or {}).get(RECIPE_FINGERPRINT_ANNOTATION)
        if (have is not None and have != fingerprint) or (have is None and label != recipe_id):
            (owned if meta.get("ownerReferences") else bare).append(str(name))
    return Stale(owned=tuple(sorted(owned)), bare=tuple(sorted(bare)))


def ready_with(pods: Sequence[Mapping[str, Any]], fingerprint: str) -> int:
    """How many Pods given the current recipe are Ready."""
    count = 0
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or (meta.get("annotations") or {}).get(RECIPE_FINGERPRINT_ANNOTATION) != fingerprint:
            continue
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            count += 1
    return count


def owned_by_deployment(pod: Mapping[str, Any], deployment: str) -> bool:
    """Pure: the Pod belongs to a ReplicaSet of this Deployment (named `<deployment>-<pod-template-hash>`)."""
    meta = pod.get("metadata") or {}
    pod_hash = (meta.get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL)
    return bool(pod_hash) and any(
        ref.get("kind") == "ReplicaSet" and ref.get("name") == f"{deployment}-{pod_hash}"
        for ref in meta.get("ownerReferences") or []
    )


def rolled_out(deployment: Mapping[str, Any] | None) -> bool:
    """Pure: the Deployment's latest spec is observed and every replica is updated and available,
    with no pod of an older template left (what `kubectl rollout status` waits for)."""
    if deployment is None:
        return True
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    want = int(spec.get("replicas", 1) or 0)
    return (
        int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) >= want
        and int(status.get("replicas") or 0) <= want
        and int(status.get("availableReplicas") or 0) >= want
    )


@dataclass(frozen=True, slots=True)
class Engine:
    """The release's engine Deployment: read it, and roll it to the current recipe."""

    name: str
    read: Callable[[], Mapping[str, Any] | None]
    roll: Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Current:
    """The recipe the release's selection holds now, and how to list the release's Pods."""

    recipe_id: str
    fingerprint: str
    list_pods: Callable[[], list[dict[str, Any]]]
    engine: Engine | None = None


def available(deployment: Mapping[str, Any] | None) -> bool:
    status = (deployment or {}).get("status") or {}
    return int(status.get("availableReplicas") or 0) >= 1


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    message: str
    deleted: tuple[str, ...] = ()


def run(
    *,
    namespace: str,
    deployment: str | None,
    read_deployment: Callable[[], Mapping[str, Any] | None] | None,
    list_pods: Callable[[], list[dict[str, Any]]],
    delete_pod: Callable[[str], None],
    timeout_seconds: float,
    current: Current | None = None,
    poll_seconds: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    deadline = clock() + timeout_seconds
    while read_deployment is not None and not available(read_deployment()):
        if clock() >= deadline:
            return Outcome(
                ok=False,
                message=(
                    f"deployment {namespace}/{deployment} has no available replica after {timeout_seconds:.0f} s, so Pods "
                    f"labelled {SELECTOR} cannot be recreated through the webhook yet: see "
                    f"`kubectl -n {namespace} describe deployment {deployment}` and its pods' logs"
                ),
            )
        sleep(poll_seconds)
    stale = stale_pods(list_pods())
    for name in stale.owned:
        delete_pod(name)
        log.info("deleted pod %s/%s: it was created before the webhook could give it its recipe", namespace, name)
    parts = [f"{len(stale.owned)} pod(s) without their recipe replaced" + (f": {', '.join(stale.owned)}" if stale.owned else "")]
    if stale.bare:
        parts.append(f"{len(stale.bare)} bare pod(s) left (no controller would recreate them): {', '.join(stale.bare)}")
    deleted = list(stale.owned)
    if current is not None:
        engine = current.engine

        def wait_rollout(what: str) -> str | None:
            while engine is not None and not rolled_out(engine.read()):
                if clock() >= deadline:
                    return (
                        f"deployment {namespace}/{engine.name}: {what} not complete after {timeout_seconds:.0f} s: see "
                        f"`kubectl -n {namespace} rollout status deployment/{engine.name}` and the new pod's logs"
                    )
                sleep(poll_seconds)
            return None

        stuck = wait_rollout("the rollout Helm started")
        if stuck is not None:
            return Outcome(ok=False, message="; ".join([*parts, stuck]), deleted=tuple(deleted))
        pods = current.list_pods()
        outdated = outdated_pods(pods, fingerprint=current.fingerprint, recipe_id=current.recipe_id)
        if engine is not None:
            by_name = {str((p.get("metadata") or {}).get("name")): p for p in pods}
            rolled = tuple(n for n in outdated.owned if owned_by_deployment(by_name.get(n) or {}, engine.name))
            if rolled:
                engine.roll(current.fingerprint)
                log.info(
                    "rolling deployment %s/%s to recipe %s: %s serve another recipe",
                    namespace,
                    engine.name,
                    current.recipe_id,
                    ", ".join(rolled),
                )
                stuck = wait_rollout(f"the rollout to recipe {current.recipe_id}")
                if stuck is not None:
                    return Outcome(ok=False, message="; ".join([*parts, stuck]), deleted=tuple(deleted))
                parts.append(
                    f"{len(rolled)} pod(s) with an outdated recipe replaced by {current.recipe_id} through a rollout of "
                    f"deployment {engine.name}: {', '.join(rolled)}"
                )
            outdated = Stale(owned=tuple(n for n in outdated.owned if n not in rolled), bare=outdated.bare)
        for i, name in enumerate(outdated.owned):
            if i > 0:  # the next only once a Pod with the current recipe is ready beside the others
                want = i
                while ready_with(current.list_pods(), current.fingerprint) < want:
                    if clock() >= deadline:
                        left = ", ".join(outdated.owned[i:])
                        return Outcome(
                            ok=False,
                            message="; ".join(parts)
                            + f"; recipe {current.recipe_id}: no ready pod after replacing {', '.join(outdated.owned[:i])} "
                            f"in {timeout_seconds:.0f} s, so {left} keep the previous recipe: see `kubectl -n {namespace} "
                            "get pods` and the new pod's logs",
                            deleted=tuple(deleted),
                        )
                    sleep(poll_seconds)
            delete_pod(name)
            deleted.append(name)
            log.info("deleted pod %s/%s: it serves a recipe other than the selection's %s", namespace, name, current.recipe_id)
        parts.append(
            f"{len(outdated.owned)} pod(s) with an outdated recipe replaced by {current.recipe_id}"
            + (f": {', '.join(outdated.owned)}" if outdated.owned else "")
        )
        if outdated.bare:
            parts.append(f"{len(outdated.bare)} bare pod(s) with an outdated recipe left: {', '.join(outdated.bare)}")
    return Outcome(ok=True, message="; ".join(parts), deleted=tuple(deleted))
