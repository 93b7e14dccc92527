"""How the selector's outcome reaches Prometheus after its Job has exited.

The hook Job cannot be scraped (it lives for seconds), and a Pushgateway would be one more thing
to run. Instead the selection ConfigMap carries cumulative counters (key `selection-metrics.json`,
updated by every hook run with a conflict-checked write), and any long-running exporter renders them
as the counter `aim_recipe_selection_total{namespace, release, result, level}`: the webhook's
/metrics does, and `aim-recipes metrics` prints the same exposition for a textfile collector.
Counters survive Job deletion, pod restarts and exporter restarts because the ConfigMap does."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from aim_engine.contract import INSTANCE_LABEL, SELECTION_METRICS_KEY

RESULTS = ("selected", "not_found", "ambiguous", "error")


def updated_counts(
    current: Mapping[str, str] | None,
    *,
    result: str,
    level: str | None,
    duration_seconds: float,
    timestamp: float,
    recipe_id: str | None,
) -> str:
    """The new `selection-metrics.json` after one run, from the ConfigMap's current data."""
    counts: dict[str, Any] = {}
    if current and SELECTION_METRICS_KEY in current:
        try:
            counts = json.loads(current[SELECTION_METRICS_KEY])
        except ValueError:
            counts = {}
    raw_totals = counts.get("totals")
    totals: dict[str, Any] = raw_totals if isinstance(raw_totals, dict) else {}
    key = f"{result}/{level or 'none'}"
    totals[key] = int(totals.get(key, 0)) + 1
    return json.dumps(
        {
            "totals": dict(sorted(totals.items())),
            "last": {
                "result": result,
                "level": level,
                "recipe_id": recipe_id,
                "duration_seconds": round(duration_seconds, 6),
                "timestamp": timestamp,
            },
        },
        sort_keys=True,
    )


class SelectionCollector(Collector):
    """Renders selection ConfigMaps (as JSON dicts) into Prometheus metrics."""

    def __init__(self, fetch: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.fetch = fetch

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        total = CounterMetricFamily(
            "aim_recipe_selection",
            "Recipe selections by outcome (from selection ConfigMaps)",
            labels=["namespace", "release", "result", "level"],
        )
        duration = GaugeMetricFamily(
            "aim_recipe_selection_last_duration_seconds", "Duration of the last selection", labels=["namespace", "release"]
        )
        stamp = GaugeMetricFamily(
            "aim_recipe_selection_last_timestamp_seconds", "When the last selection ran", labels=["namespace", "release"]
        )
        info = GaugeMetricFamily(
            "aim_recipe_selected_info",
            "The recipe the last successful selection chose",
            labels=["namespace", "release", "recipe_id", "level"],
        )
        for cm in self.fetch():
            meta = cm.get("metadata") or {}
            ns = str(meta.get("namespace", ""))
            release = str((meta.get("labels") or {}).get(INSTANCE_LABEL, meta.get("name", "")))
            raw = (cm.get("data") or {}).get(SELECTION_METRICS_KEY)
            if not raw:
                continue
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            for key, value in sorted((doc.get("totals") or {}).items()):
                result, _, level = str(key).partition("/")
                total.add_metric([ns, release, result, level or "none"], float(value))
            last = doc.get("last") or {}
            if "duration_seconds" in last:
                duration.add_metric([ns, release], float(last["duration_seconds"]))
            if "timestamp" in last:
                stamp.add_metric([ns, release], float(last["timestamp"]))
            if last.get("result") == "selected" and last.get("recipe_id"):
                info.add_metric([ns, release, str(last["recipe_id"]), str(last.get("level"))], 1.0)
        yield total
        yield duration
        yield stamp
        yield info


class BaselineCollector(Collector):
    """The catalog's expected figures as series, so actual / expected is one PromQL division:
    aim_recipe_expected_tokens_per_second, aim_recipe_expected_latency_seconds and
    aim_recipe_gpu_count, labelled by recipe_id, model, hardware, precision and provenance kind."""

    def __init__(self, recipes: Iterable[Any]) -> None:
        self.recipes = list(recipes)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["recipe_id", "model", "hardware", "precision", "source"]
        tps = GaugeMetricFamily(
            "aim_recipe_expected_tokens_per_second",
            "Expected output tokens/s of a recipe under its stated conditions (catalog)",
            labels=labels,
        )
        lat = GaugeMetricFamily(
            "aim_recipe_expected_latency_seconds",
            "Expected mean inter-token latency of a recipe under its stated conditions (catalog)",
            labels=labels,
        )
        gpus = GaugeMetricFamily("aim_recipe_gpu_count", "GPUs one replica of the recipe uses", labels=["recipe_id"])
        for r in self.recipes:
            gpus.add_metric([r.recipe_id], float(r.gpu_count))
            if r.performance is None:
                continue
            source = str((r.performance.provenance.get("expected_tokens_per_second") or {}).get("kind", "unspecified"))
            values = [r.recipe_id, r.huggingface_id, r.hardware, r.precision, source]
            tps.add_metric(values, float(r.performance.tokens_per_second))
            lat.add_metric(values, float(r.performance.latency_ms) / 1000)
        yield tps
        yield lat
        yield gpus
