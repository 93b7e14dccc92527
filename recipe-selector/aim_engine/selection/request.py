"""What a selection is asked for: the model, and the explicit overrides that are constraints at
every level (honoured, or the selection is refused with the reason)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import PRECISIONS, HardwareCatalog
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.slo import CLI_NAMES, Slo, TargetNames

DEFAULT_MIN_CONTEXT = 4096

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, slots=True)
class Request:
    model_id: str
    gpu_count: int | None = None
    precision: str | None = None
    backend: str | None = None
    gpu_type: str | None = None
    max_model_len: int | None = None
    min_context: int = DEFAULT_MIN_CONTEXT
    custom_recipe: Recipe | None = None
    allow_default: bool = True
    # The workload's shape: None = any; 1 = one pod (Deployment); N > 1 = a LeaderWorkerSet group
    # of N pods, one per node. Only recipes spanning exactly that many nodes fit.
    nodes: int | None = None
    # Service-level targets: recipes whose figures miss them are refused (aim_engine.rules.slo).
    slo: Slo = field(default_factory=Slo)
    slo_names: TargetNames = field(default_factory=lambda: CLI_NAMES)  # how the user named the targets

    def validate(self, catalog: HardwareCatalog) -> None:
        if not _MODEL_ID.match(self.model_id):
            raise InputError(f"model {self.model_id!r}: expected a Hugging Face id such as Qwen/Qwen3-32B")
        if self.gpu_count is not None and not 1 <= self.gpu_count <= 256:
            raise InputError(f"gpu_count {self.gpu_count}: must be between 1 and 256")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.backend is not None and self.backend != "vllm":
            raise InputError(f"backend {self.backend!r}: aim-engine serves with vllm only")
        if self.gpu_type is not None:
            catalog.require(self.gpu_type)
        if self.max_model_len is not None and self.max_model_len < 1:
            raise InputError(f"max_model_len {self.max_model_len}: must be positive")
        if self.nodes is not None and not 1 <= self.nodes <= 64:
            raise InputError(f"nodes {self.nodes}: must be between 1 and 64")

    @property
    def overrides_any(self) -> bool:
        """Any override feasibility.override_findings() checks a recipe against."""
        return (
            self.backend is not None
            or self.gpu_count is not None
            or self.precision is not None
            or self.nodes is not None
            or self.gpu_type is not None
        )

    @property
    def single_pod(self) -> bool:
        """The workload is (or may be) one pod: derived and synthesised configurations, which are
        single-node, may serve it; a multi-node group needs a catalog recipe of its size."""
        return self.nodes in (None, 1)

    @property
    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("gpu_count", "precision", "backend", "gpu_type", "max_model_len", "nodes"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.custom_recipe is not None:
            out["custom_recipe"] = self.custom_recipe.recipe_id
        for key, value in self.slo.targets():
            out[f"slo.{key}"] = float(value)
        return out
