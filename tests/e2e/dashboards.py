"""The dashboards' panel queries (dashboards/*.json, tools/gen_dashboards.py) with their variables
filled for one release, as Grafana would send them to its Prometheus. Shared by the monitoring test
(every panel of a one-replica release) and the autoscaling test (the router's panels: a router runs
only in front of several replicas)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .conftest import ROOT

# The router's series (vLLM's router): only a release with a router in front of its replicas has them.
ROUTER_METRIC_PREFIX = "vllm_router_"


@dataclass(frozen=True)
class PanelQuery:
    board: str
    title: str
    expr: str

    @property
    def name(self) -> str:
        return f"{self.board} / {self.title}"


def dashboard_queries(*, namespace: str, recipe: str, model: str = ".*") -> list[PanelQuery]:
    """Every panel target of every dashboard, its variables filled (`model` as the dashboards' model
    variable finds it: the series' model_name, a regular expression)."""
    out: list[PanelQuery] = []
    fill = {
        "$namespace": namespace,
        "$recipe": recipe,
        "$model": model,
        "$__rate_interval": "1m",
        "$__range": "15m",
    }

    def walk(board: str, panels: list[dict[str, object]]) -> None:
        for p in panels:
            walk(board, p.get("panels", []))  # type: ignore[arg-type]
            for t in p.get("targets", []):  # type: ignore[attr-defined]
                expr = str(t["expr"])
                for k, v in fill.items():
                    expr = expr.replace(k, v)
                assert "$" not in expr.replace("$1", ""), f"unfilled variable in {board} / {p['title']}: {expr}"
                out.append(PanelQuery(board, str(p["title"]), expr))

    for f in sorted((ROOT / "dashboards").glob("*.json")):
        walk(f.stem, json.loads(f.read_text())["panels"])
    return out


def is_router_query(q: PanelQuery) -> bool:
    return ROUTER_METRIC_PREFIX in q.expr
