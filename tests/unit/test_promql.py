"""Every PromQL expression the bundle ships — each dashboard panel's target (its Grafana variables
filled as Grafana fills them) and each recording and alerting rule — parses with a PromQL parser
(promql-parser, the Rust crate behind Prometheus-compatible tools), and each names only metric
families the bundle knows of. The e2e monitoring test still runs them against the real Prometheus;
this catches a broken expression in milliseconds. Cost: well under a second."""

from __future__ import annotations

import json
import re

import promql_parser
import pytest
import yaml

from support import ROOT

FILL = {"$__rate_interval": "1m", "$__range": "15m", "$__interval": "30s"}


def panel_exprs() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(board: str, panels: list[dict[str, object]]) -> None:
        for p in panels:
            walk(board, p.get("panels", []))  # type: ignore[arg-type]
            for t in p.get("targets", []):  # type: ignore[attr-defined]
                out.append((f"{board} / {p['title']}", str(t["expr"])))

    for f in sorted((ROOT / "dashboards").glob("*.json")):
        walk(f.stem, json.loads(f.read_text())["panels"])
    return out


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load((ROOT / "alerts" / "aim-engine.rules.yaml").read_text())
    return [(f"{g['name']} / {r.get('record') or r.get('alert')}", str(r["expr"])) for g in doc["groups"] for r in g["rules"]]


def filled(expr: str) -> str:
    for k, v in FILL.items():
        expr = expr.replace(k, v)
    return expr


PANELS, RULES = panel_exprs(), rule_exprs()


@pytest.mark.parametrize(("where", "expr"), PANELS + RULES, ids=[w for w, _ in PANELS + RULES])
def test_every_shipped_expression_parses(where: str, expr: str) -> None:
    try:
        promql_parser.parse(filled(expr))
    except ValueError as e:
        raise AssertionError(f"{where}: {e}\n{expr}") from None


def test_there_are_expressions_and_the_parser_refuses_a_broken_one() -> None:
    assert len(PANELS) > 20 and len(RULES) > 5
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(vllm:generation_tokens_total[5m])")


def test_dashboards_name_only_families_the_rules_engine_router_or_webhook_export() -> None:
    """Each metric name a panel reads is a recording rule of ours, a vLLM, vLLM router, webhook or
    selector family, or a Kubernetes/GPU exporter family the dashboards document."""
    recorded = {r.split(" / ", 1)[1] for r, _ in RULES}
    known_prefixes = ("vllm:", "vllm_router_", "aim_", "kube_", "container_", "DCGM_", "up", "ALERTS")
    # AMD's device-metrics-exporter names its families without a vendor prefix.
    amd_exporter = {"gpu_gfx_activity", "gpu_used_vram"}
    names = set()
    for where, expr in PANELS:
        for name in re.findall(r"(?<![\w:\"'$])([a-zA-Z_:][\w:]*)\s*(?:\{|\[)", filled(expr)):
            names.add((where, name))
    unknown = sorted(f"{w}: {n}" for w, n in names if n not in recorded | amd_exporter and not n.startswith(known_prefixes))
    assert not unknown, unknown
