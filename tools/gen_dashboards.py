#!/usr/bin/env python3
"""Generate the Grafana dashboards in dashboards/ from this file (the source of truth).

    .tools/venv/bin/python tools/gen_dashboards.py          # write dashboards/*.json
    .tools/venv/bin/python tools/gen_dashboards.py --check  # fail if the files drift (make test)

Dashboards use the classic JSON model at schemaVersion 41 (Grafana 12; Grafana 13 still loads it
from files and the sidecar), a Prometheus datasource variable, and
namespace / model / recipe variables. Every panel query is checked against a real Prometheus loaded
with synthetic vLLM V1 series (tests/monitoring)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "dashboards"
SCHEMA_VERSION = 41  # the classic JSON model of Grafana 12 (what file provisioning and the sidecar load)
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", recipe_id=~"$recipe"'
SEL_MODEL = f'{SEL}, model_name=~"$model"'
VLLM_SEL = 'namespace=~"$namespace", aim_engine_io_recipe_id=~"$recipe", model_name=~"$model"'


def variables(*, with_model: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
        },
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": DS,
            "query": {"query": "label_values(aim_performance_tokens_per_second, namespace)", "refId": "ns"},
            "definition": "label_values(aim_performance_tokens_per_second, namespace)",
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "refresh": 2,
            "current": {},
        },
    ]
    if with_model:
        out.append(
            {
                "name": "model",
                "label": "Model",
                "type": "query",
                "datasource": DS,
                "query": {
                    "query": 'label_values(aim_performance_tokens_per_second{namespace=~"$namespace"}, model_name)',
                    "refId": "model",
                },
                "definition": 'label_values(aim_performance_tokens_per_second{namespace=~"$namespace"}, model_name)',
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "refresh": 2,
                "current": {},
            }
        )
    out.append(
        {
            "name": "recipe",
            "label": "Recipe",
            "type": "query",
            "datasource": DS,
            "query": {
                "query": 'label_values(aim_performance_tokens_per_second{namespace=~"$namespace"}, recipe_id)',
                "refId": "recipe",
            },
            "definition": 'label_values(aim_performance_tokens_per_second{namespace=~"$namespace"}, recipe_id)',
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "refresh": 2,
            "current": {},
        }
    )
    return out


class Board:
    def __init__(self, uid: str, title: str, description: str, tags: list[str], *, with_model: bool = True) -> None:
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.with_model = with_model
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y = 0, self.y + h
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        if self.x >= 24:
            self.x, self.y = 0, self.y + h
        return pos

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y = 0, self.y + 8
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "id": len(self.panels) + 1,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self.y += 1

    def panel(
        self,
        kind: str,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        w: int = 12,
        h: int = 8,
        description: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        p: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": DS,
                    "expr": expr,
                    "legendFormat": legend,
                    "range": kind != "table",
                    "instant": kind == "table",
                }
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}}
            if kind == "timeseries"
            else {},
        }
        if extra:
            p.update(extra)
        self.panels.append(p)

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["aim-engine", *self.tags],
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "timezone": "",
            "time": {"from": "now-6h", "to": "now"},
            "refresh": "30s",
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "templating": {"list": variables(with_model=self.with_model)},
            "annotations": {"list": []},
            "links": [{"title": "aim-engine dashboards", "type": "dashboards", "tags": ["aim-engine"], "asDropdown": True}],
            "panels": self.panels,
        }


def selection() -> Board:
    b = Board(
        "aim-engine-selection",
        "AIM Engine Recipe Selection",
        "What the recipe selector chose, and how often it found nothing.",
        ["selection"],
        with_model=False,
    )
    b.row("Selections")
    b.panel(
        "timeseries",
        "Selections by result",
        [
            (
                "sum by (result, level) (max by (namespace, release, result, level) "
                '(increase(aim_recipe_selection_total{namespace=~"$namespace"}[$__range])))',
                "{{result}} / {{level}}",
            )
        ],
        description="Hook runs by outcome (counted in the selection ConfigMaps, exported by every webhook replica: "
        "max by the selection's labels counts them once).",
    )
    b.panel(
        "stat",
        "Not found (range)",
        [
            (
                "sum(max by (namespace, release, result, level) "
                '(increase(aim_recipe_selection_total{namespace=~"$namespace", result=~"not_found|ambiguous"}[$__range])))',
                "",
            )
        ],
        w=6,
        extra={"options": {"colorMode": "background", "reduceOptions": {"calcs": ["lastNotNull"]}}},
    )
    b.panel(
        "stat",
        "Last selection duration",
        [('max(aim_recipe_selection_last_duration_seconds{namespace=~"$namespace"})', "")],
        unit="s",
        w=6,
    )
    b.panel(
        "table",
        "Selected recipe per release",
        [('max by (namespace, release, recipe_id, level) (aim_recipe_selected_info{namespace=~"$namespace"})', "")],
        w=24,
    )
    b.panel(
        "table",
        "Recipes serving now",
        [(f"max by (namespace, recipe_id, gpu_model, model_name) (aim_performance_tokens_per_second{{{SEL}}})", "")],
        w=24,
    )
    return b


def performance() -> Board:
    b = Board(
        "aim-engine-performance",
        "AIM Engine Recipe Performance",
        "Actual against expected throughput per recipe; the expected figure is the release's selected recipe's "
        "(a custom or measured recipe's own), else the catalog's.",
        ["performance"],
    )
    b.row("Throughput")
    b.panel(
        "timeseries",
        "Generated tokens/s: actual vs expected (per replica)",
        [
            (f"aim:recipe_tokens_per_second_per_replica{{{SEL_MODEL}}}", "actual {{recipe_id}}"),
            (f"aim:recipe_expected_tokens_per_second{{{SEL}}}", "expected {{recipe_id}}"),
        ],
        unit="short",
    )
    b.panel(
        "timeseries",
        "Actual ÷ expected",
        [(f"aim:recipe_throughput_vs_expected:ratio{{{SEL_MODEL}}}", "{{recipe_id}}")],
        unit="percentunit",
        description="Below 1 under load means the recipe under-delivers (AIMEngineLowThroughput at 0.5).",
    )
    b.panel(
        "timeseries",
        "Tokens/s per GPU",
        [(f"aim:recipe_tokens_per_second_per_gpu{{{SEL_MODEL}}}", "{{recipe_id}} ({{gpu_model}})")],
    )
    b.panel(
        "timeseries",
        "Total generated tokens/s (aim_performance_tokens_per_second)",
        [(f"aim_performance_tokens_per_second{{{SEL_MODEL}}}", "{{recipe_id}}")],
    )
    b.panel("timeseries", "Prompt tokens/s", [(f"aim:recipe_prompt_tokens_per_second{{{SEL_MODEL}}}", "{{recipe_id}}")])
    b.panel("timeseries", "Replicas", [(f"aim:recipe_replicas{{{SEL}}}", "{{recipe_id}}")])
    b.row("Engine replicas and the router")
    per_pod = f"sum by (namespace, pod) (rate(vllm:request_success_total{{{VLLM_SEL}}}[$__rate_interval]))"
    b.panel(
        "timeseries",
        "Requests/s per engine replica",
        [(per_pod, "{{namespace}}/{{pod}}")],
        unit="reqps",
        description="Each engine pod's own vllm:request_success_total. With the router (router.enabled) the "
        "replicas of a release share its requests; behind a plain Service a client's keep-alive connections "
        "stay on one (AIMEngineReplicaImbalance).",
    )
    b.panel(
        "timeseries",
        "Share of the release's requests per replica",
        [(f"{per_pod} / on (namespace) group_left sum by (namespace) ({per_pod})", "{{namespace}}/{{pod}}")],
        unit="percentunit",
    )
    for title, hist in (("TTFT p99", "time_to_first_token_seconds"), ("Inter-token latency p99", "inter_token_latency_seconds")):
        b.panel(
            "timeseries",
            f"{title} per engine replica",
            [
                (
                    "histogram_quantile(0.99, sum by (le, namespace, pod) "
                    f"(rate(vllm:{hist}_bucket{{{VLLM_SEL}}}[$__rate_interval])))",
                    "{{namespace}}/{{pod}}",
                )
            ],
            unit="s",
        )
    router = 'namespace=~"$namespace"'
    b.panel(
        "timeseries",
        "Router: requests/s and errors/s",
        [
            (f"sum by (namespace, pod) (rate(vllm_router_requests_total{{{router}}}[$__rate_interval]))", "requests {{pod}}"),
            (f"sum by (namespace, pod) (rate(vllm_router_request_errors_total{{{router}}}[$__rate_interval]))", "errors {{pod}}"),
            (f"sum by (namespace, pod) (rate(vllm_router_retries_total{{{router}}}[$__rate_interval]))", "retries {{pod}}"),
        ],
        unit="reqps",
        description="vLLM's router (vllm_router_*): every request it took, those it answered with an error, "
        "and its retries on another engine.",
    )
    b.panel(
        "timeseries",
        "Router: engines it sends to",
        [(f"max by (namespace, pod) (vllm_router_active_workers{{{router}}})", "{{pod}}")],
        description="Ready engine pods the router has discovered (it sends to no other).",
    )
    return b


def latency() -> Board:
    b = Board(
        "aim-engine-latency",
        "AIM Engine Recipe Latency",
        "Time to first token, inter-token and end-to-end latency per recipe.",
        ["latency"],
    )
    for title, rec, mean in (
        ("Time to first token", "ttft_seconds", True),
        ("Inter-token latency", "inter_token_latency_seconds", True),
        ("End-to-end request latency", "e2e_latency_seconds", False),
    ):
        b.row(title)
        queries = [
            (f"aim:recipe_{rec}:p50{{{SEL}}}", "p50 {{recipe_id}}"),
            (f"aim:recipe_{rec}:p99{{{SEL}}}", "p99 {{recipe_id}}"),
        ]
        if mean:  # exact, where the quantiles are only as fine as vLLM's histogram buckets
            queries.append((f"aim:recipe_{rec}:mean{{{SEL}}}", "mean {{recipe_id}}"))
        b.panel("timeseries", f"{title} p50 / p99" + (" / mean" if mean else ""), queries, unit="s")
    b.panel(
        "timeseries",
        "Mean inter-token latency: actual vs expected",
        [
            (f"aim:recipe_inter_token_latency_seconds:mean{{{SEL}}}", "actual {{recipe_id}}"),
            (f"aim:recipe_expected_latency_seconds{{{SEL}}}", "expected {{recipe_id}}"),
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "TTFT SLO errors (share over 2.5 s)",
        [
            (f"aim:recipe_ttft_slo_errors:ratio_rate5m{{{SEL}}}", "5m {{recipe_id}}"),
            (f"aim:recipe_ttft_slo_errors:ratio_rate1h{{{SEL}}}", "1h {{recipe_id}}"),
        ],
        unit="percentunit",
    )
    b.panel(
        "timeseries",
        "Queue time p99",
        [
            (
                "histogram_quantile(0.99, sum by (le, aim_engine_io_recipe_id) "
                f"(rate(vllm:request_queue_time_seconds_bucket{{{VLLM_SEL}}}[$__rate_interval])))",
                "{{aim_engine_io_recipe_id}}",
            )
        ],
        unit="s",
    )
    return b


def resources() -> Board:
    b = Board(
        "aim-engine-resources",
        "AIM Engine Resource Utilisation",
        "GPUs (NVIDIA DCGM exporter and AMD device-metrics-exporter names) and the vLLM KV cache per recipe.",
        ["resources"],
    )
    b.row("GPU")
    b.panel(
        "timeseries",
        "NVIDIA GPU utilisation (DCGM)",
        [('avg by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL{namespace=~"$namespace"})', "{{Hostname}} gpu{{gpu}}")],
        unit="percent",
    )
    b.panel(
        "timeseries",
        "AMD GPU activity (device-metrics-exporter)",
        [('avg by (hostname, gpu_id) (gpu_gfx_activity{namespace=~"$namespace"})', "{{hostname}} gpu{{gpu_id}}")],
        unit="percent",
    )
    b.panel(
        "timeseries",
        "NVIDIA framebuffer used",
        [('sum by (Hostname) (DCGM_FI_DEV_FB_USED{namespace=~"$namespace"}) * 1024 * 1024', "{{Hostname}}")],
        unit="bytes",
    )
    b.panel(
        "timeseries",
        "AMD VRAM used",
        [('sum by (hostname) (gpu_used_vram{namespace=~"$namespace"}) * 1024 * 1024', "{{hostname}}")],
        unit="bytes",
    )
    b.row("vLLM engine")
    b.panel(
        "timeseries",
        "KV cache usage (max over replicas)",
        [(f"aim:recipe_kv_cache_usage:max{{{SEL}}}", "{{recipe_id}}")],
        unit="percentunit",
    )
    b.panel(
        "timeseries",
        "Requests running / waiting",
        [
            (f"aim:recipe_requests_running{{{SEL}}}", "running {{recipe_id}}"),
            (f"aim:recipe_requests_waiting{{{SEL}}}", "waiting {{recipe_id}}"),
        ],
    )
    b.panel("timeseries", "Preemptions/s", [(f"aim:recipe_preemptions:rate5m{{{SEL}}}", "{{recipe_id}}")])
    b.panel(
        "timeseries",
        "Prefix cache hit ratio",
        [
            (
                f"sum by (aim_engine_io_recipe_id) (rate(vllm:prefix_cache_hits_total{{{VLLM_SEL}}}[$__rate_interval])) / "
                f"sum by (aim_engine_io_recipe_id) (rate(vllm:prefix_cache_queries_total{{{VLLM_SEL}}}[$__rate_interval]))",
                "{{aim_engine_io_recipe_id}}",
            )
        ],
        unit="percentunit",
    )
    return b


def webhook() -> Board:
    b = Board(
        "aim-engine-webhook",
        "AIM Engine Admission Webhook",
        "The recipe validator: decisions, latency, errors, certificate.",
        ["webhook"],
        with_model=False,
    )
    b.row("Admission")
    b.panel(
        "timeseries",
        "Reviews/s by outcome",
        [
            (
                'sum by (endpoint, outcome) (rate(aim_webhook_requests_total{namespace=~"$namespace"}[$__rate_interval]))',
                "{{endpoint}} {{outcome}}",
            )
        ],
        unit="reqps",
    )
    b.panel(
        "timeseries",
        "Denials by reason",
        [
            (
                'sum by (reason) (rate(aim_webhook_requests_total{namespace=~"$namespace", outcome="denied"}[$__rate_interval]))',
                "{{reason}}",
            )
        ],
        unit="reqps",
    )
    b.panel(
        "timeseries",
        "Review latency p50 / p99",
        [
            (
                "histogram_quantile(0.5, sum by (le, endpoint) "
                '(rate(aim_webhook_request_duration_seconds_bucket{namespace=~"$namespace"}[$__rate_interval])))',
                "p50 {{endpoint}}",
            ),
            (
                "histogram_quantile(0.99, sum by (le, endpoint) "
                '(rate(aim_webhook_request_duration_seconds_bucket{namespace=~"$namespace"}[$__rate_interval])))',
                "p99 {{endpoint}}",
            ),
        ],
        unit="s",
    )
    b.panel(
        "timeseries",
        "Internal errors and refused bodies",
        [
            (
                'sum(rate(aim_webhook_requests_total{namespace=~"$namespace", outcome="error"}[$__rate_interval]))',
                "internal errors",
            ),
            (
                'sum by (status) (rate(aim_webhook_http_errors_total{namespace=~"$namespace"}[$__rate_interval]))',
                "HTTP {{status}}",
            ),
        ],
        unit="reqps",
    )
    b.panel(
        "stat",
        "Certificate expires in",
        [('min(aim_webhook_certificate_expiry_timestamp_seconds{namespace=~"$namespace"}) - time()', "")],
        unit="s",
        w=12,
    )
    return b


def recommendations() -> Board:
    b = Board(
        "aim-engine-recommendations",
        "AIM Engine Optimisation Recommendations",
        "Where a recipe change would pay: under-delivering recipes, saturated KV caches, idle GPUs.",
        ["recommendations"],
    )
    b.row("Recommendations")
    b.panel(
        "table",
        "Recipes below 80% of their baseline under load",
        [
            (
                f"aim:recipe_throughput_vs_expected:ratio{{{SEL_MODEL}}} < 0.8 and on (namespace, recipe_id) "
                f"aim:recipe_requests_waiting:max5m{{{SEL}}} > 0",
                "",
            )
        ],
        unit="percentunit",
        w=24,
        description="Check the recipe's conditions, KV cache and GPU activity; consider a recipe with more GPUs or fp8.",
    )
    b.panel(
        "table",
        "Saturated KV caches (over 90%)",
        [(f"aim:recipe_kv_cache_usage:max{{{SEL}}} > 0.9", "")],
        unit="percentunit",
        w=12,
        description="Shorten max_model_len, use an FP8 KV cache, or add replicas.",
    )
    b.panel(
        "table",
        "Idle replicas (no running request for 30 min)",
        [(f"max_over_time(aim:recipe_requests_running{{{SEL}}}[30m]) == 0", "")],
        w=12,
        description="GPUs held by replicas that served nothing: scale down or consolidate.",
    )
    b.panel(
        "table", "Tokens/s per GPU by recipe", [(f"sort_desc(aim:recipe_tokens_per_second_per_gpu{{{SEL_MODEL}}})", "")], w=24
    )
    return b


BOARDS = {
    "aim-engine-selection.json": selection,
    "aim-engine-performance.json": performance,
    "aim-engine-latency.json": latency,
    "aim-engine-resources.json": resources,
    "aim-engine-webhook.json": webhook,
    "aim-engine-recommendations.json": recommendations,
}


def render() -> dict[str, str]:
    return {name: json.dumps(fn().json(), indent=2, sort_keys=True) + "\n" for name, fn in BOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="exit 1 when dashboards/ differs from the generator")
    args = parser.parse_args()
    drift = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                drift.append(name)
        else:
            path.write_text(text)
    if drift:
        print(f"dashboards out of date: {', '.join(drift)}; run tools/gen_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
