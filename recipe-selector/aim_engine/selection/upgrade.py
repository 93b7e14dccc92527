"""How a release's engine Deployment replaces its pods when the recipe changes: decided from the
cluster's free devices, not fixed in the chart.

- **surge**: one more pod of the new recipe fits beside the release's current pods (their devices
  counted as used), so the new pod starts first and an old one stops only once it is Ready
  (RollingUpdate, maxSurge 1, maxUnavailable 0): no gap, at any replica count.
- **rolling**: no room for an extra pod and several replicas: one pod at a time is stopped and
  replaced on its devices (maxSurge 0, maxUnavailable 1); the others keep serving.
- **recreate**: no room and one replica: the old pod must free its devices before the new one can
  start, so the release does not serve from the old pod's stop until the new pod is Ready.

A surge where no extra pod fits would leave the new pod Pending and the rollout stuck; a Recreate
where one fits would be a gap for nothing. Pure: the CLI reads the cluster and applies the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aim_engine.cluster.inventory import Inventory
from aim_engine.domain.hardware import GpuProduct
from aim_engine.domain.recipe import Recipe
from aim_engine.selection.feasibility import capacity_findings


class UpgradeKind(StrEnum):
    SURGE = "surge"
    ROLLING = "rolling"
    RECREATE = "recreate"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpgradePlan:
    kind: UpgradeKind
    replicas: int
    recipe_id: str
    reason: str

    @property
    def max_surge(self) -> int:
        return 1 if self.kind is UpgradeKind.SURGE else 0

    @property
    def max_unavailable(self) -> int:
        return 0 if self.kind is UpgradeKind.SURGE else 1

    def deployment_strategy(self) -> dict[str, Any]:
        """The Deployment's spec.strategy (a patch: rollingUpdate is cleared for Recreate)."""
        if self.kind is UpgradeKind.RECREATE:
            return {"type": "Recreate", "rollingUpdate": None}
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": self.max_surge, "maxUnavailable": self.max_unavailable}}

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.kind.value,
            "replicas": self.replicas,
            "recipe_id": self.recipe_id,
            "max_surge": self.max_surge,
            "max_unavailable": self.max_unavailable,
            "reason": self.reason,
        }

    def line(self) -> str:
        return f"UPGRADE: {self.kind.value}: {self.reason}"


def plan_upgrade(*, recipe: Recipe, product: GpuProduct, occupied: Inventory, replicas: int) -> UpgradePlan:
    """`occupied`: the inventory with the release's own pods counted as using what they hold (the
    selection itself counts them as free, since the new recipe replaces them)."""
    replicas = max(replicas, 1)
    blocked = capacity_findings(recipe, product, occupied)
    if not blocked:
        return UpgradePlan(
            kind=UpgradeKind.SURGE,
            replicas=replicas,
            recipe_id=recipe.recipe_id,
            reason=f"one more pod of {recipe.recipe_id} fits beside the release's {replicas} current pod(s), so each new "
            "pod starts before an old one stops (maxSurge 1, maxUnavailable 0): no gap in service",
        )
    why = blocked[0].message
    if replicas > 1:
        return UpgradePlan(
            kind=UpgradeKind.ROLLING,
            replicas=replicas,
            recipe_id=recipe.recipe_id,
            reason=f"no room for an extra pod of {recipe.recipe_id} beside the release's pods ({why}), so one of the "
            f"{replicas} replicas at a time stops and is replaced on its devices (maxSurge 0, maxUnavailable 1); "
            f"{replicas - 1} keep serving",
        )
    return UpgradePlan(
        kind=UpgradeKind.RECREATE,
        replicas=replicas,
        recipe_id=recipe.recipe_id,
        reason=f"one replica and no room for a second pod of {recipe.recipe_id} beside it ({why}): the old pod stops "
        "first, and the release does not serve until the new pod is Ready (its start-up and model load); free one more "
        "pod's devices, or run 2 replicas, to upgrade without a gap",
    )
