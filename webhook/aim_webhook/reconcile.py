"""`aim-webhook reconcile`: replace the Pods that were created before the webhook could give them
their recipe, once per install or upgrade (a Job of the release, one per revision).

Helm creates the webhook configurations after the Deployments, so a release's first Pods can be
created before the webhook is registered; their recipe label still reads `selected`. This command
waits until the webhook Deployment has an available replica (it has then written its CA bundle and
serves), then deletes such Pods when a controller owns them, so the controller recreates them
through the webhook. Bare Pods are left alone (nothing would recreate them) and reported.

It runs as its own short-lived component with its own service account: the long-running webhook
needs no permission to list or delete Pods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aim_engine.contract import RECIPE_LABEL, SELECTED

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
    return Outcome(ok=True, message="; ".join(parts), deleted=stale.owned)
