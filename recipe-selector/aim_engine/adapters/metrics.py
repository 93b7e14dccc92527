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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from aim_engine.contract import BENCHMARKS_KEY, INSTANCE_LABEL, RECIPE_KEY, SELECTION_METRICS_KEY
from aim_engine.domain.benchmark import BenchmarkResult, parse_history

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


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectedBaseline:
    """The performance figures of the recipe a release's selection holds (catalog or custom)."""

    recipe_id: str
    tokens_per_second: float
    latency_seconds: float | None
    source: str


def _selected_recipe(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recipe.yaml of a selection ConfigMap's data as a document with a recipe_id, or None."""
    try:
        doc = yaml.safe_load(str(data.get(RECIPE_KEY) or ""))
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, dict) and doc.get("recipe_id") else None


def _baseline_of(doc: Mapping[str, Any] | None) -> SelectedBaseline | None:
    if doc is None or not isinstance(doc.get("performance"), dict):
        return None
    perf: dict[str, Any] = doc["performance"]
    tps, lat = perf.get("expected_tokens_per_second"), perf.get("expected_latency_ms")
    if isinstance(tps, bool) or not isinstance(tps, int | float) or tps <= 0:
        return None
    latency = float(lat) / 1000 if isinstance(lat, int | float) and not isinstance(lat, bool) and lat > 0 else None
    provenance = perf.get("provenance")
    kind = ((provenance or {}).get("expected_tokens_per_second") or {}).get("kind") if isinstance(provenance, dict) else None
    return SelectedBaseline(
        recipe_id=str(doc["recipe_id"]), tokens_per_second=float(tps), latency_seconds=latency, source=str(kind or "unspecified")
    )


def _gpu_count_of(doc: Mapping[str, Any] | None) -> tuple[str, int] | None:
    count = None if doc is None else doc.get("gpu_count")
    if doc is None or isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return None
    return str(doc["recipe_id"]), count


def selected_baseline(data: Mapping[str, Any]) -> SelectedBaseline | None:
    """Pure: the baseline in a selection ConfigMap's recipe.yaml, or None when it holds no recipe or
    the recipe states no throughput (a custom recipe may omit performance)."""
    return _baseline_of(_selected_recipe(data))


def selected_gpu_count(data: Mapping[str, Any]) -> tuple[str, int] | None:
    """Pure: (recipe_id, gpu_count) of the recipe a selection ConfigMap holds, or None. A custom
    recipe is in no catalog, so its GPUs per replica come from here."""
    return _gpu_count_of(_selected_recipe(data))


class SelectionCollector(Collector):
    """Renders selection ConfigMaps (as JSON dicts) into Prometheus metrics: the selection counters,
    and the selected recipe's own figures (aim_recipe_selected_expected_tokens_per_second and
    _latency_seconds), which the rules prefer over the catalog's as a release's baseline: a custom
    recipe's figures (written by hand or measured) are what its release is held to."""

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
        baseline_labels = ["namespace", "release", "recipe_id", "source"]
        expected_tps = GaugeMetricFamily(
            "aim_recipe_selected_expected_tokens_per_second",
            "Expected output tokens/s of the recipe a release's selection holds (its recipe.yaml)",
            labels=baseline_labels,
        )
        expected_lat = GaugeMetricFamily(
            "aim_recipe_selected_expected_latency_seconds",
            "Expected mean inter-token latency of the recipe a release's selection holds (its recipe.yaml)",
            labels=baseline_labels,
        )
        gpus = GaugeMetricFamily(
            "aim_recipe_selected_gpu_count",
            "GPUs one replica of the recipe a release's selection holds uses (its recipe.yaml)",
            labels=["namespace", "release", "recipe_id"],
        )
        for cm in self.fetch():
            meta = cm.get("metadata") or {}
            ns = str(meta.get("namespace", ""))
            release = str((meta.get("labels") or {}).get(INSTANCE_LABEL, meta.get("name", "")))
            recipe = _selected_recipe(cm.get("data") or {})  # parsed once for both
            counted = _gpu_count_of(recipe)
            if counted is not None:
                gpus.add_metric([ns, release, counted[0]], float(counted[1]))
            baseline = _baseline_of(recipe)
            if baseline is not None:
                values = [ns, release, baseline.recipe_id, baseline.source]
                expected_tps.add_metric(values, baseline.tokens_per_second)
                if baseline.latency_seconds is not None:
                    expected_lat.add_metric(values, baseline.latency_seconds)
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
        yield expected_tps
        yield expected_lat
        yield gpus


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


class BenchmarkCollector(Collector):
    """Renders benchmark history ConfigMaps (`<release>-recipe-benchmarks`) into the measured series,
    beside the expected ones. For each release, recipe and load shape (`request_rate`: "inf" for a
    run as fast as its concurrency allows, which measures capacity; else the rate it was held to),
    the newest successful measurement: aim_recipe_measured_output_tokens_per_second,
    aim_recipe_measured_ttft_seconds and aim_recipe_measured_itl_seconds (label `stat`: mean, p50,
    p95, p99), aim_recipe_measured_timestamp_seconds; and the outcome of the release's last run,
    aim_recipe_benchmark_last_success (1 measured, 0 failed). A history that cannot be read is
    skipped: a scrape never fails for it."""

    def __init__(self, fetch: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.fetch = fetch

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["namespace", "release", "recipe_id", "hardware", "concurrency", "request_rate"]
        tps = GaugeMetricFamily(
            "aim_recipe_measured_output_tokens_per_second", "Output tokens/s measured by the release's benchmark", labels=labels
        )
        ttft = GaugeMetricFamily(
            "aim_recipe_measured_ttft_seconds", "Time to first token measured by the benchmark client", labels=[*labels, "stat"]
        )
        itl = GaugeMetricFamily(
            "aim_recipe_measured_itl_seconds", "Inter-token latency measured by the benchmark client", labels=[*labels, "stat"]
        )
        when = GaugeMetricFamily("aim_recipe_measured_timestamp_seconds", "When the measurement was taken", labels=labels)
        last = GaugeMetricFamily(
            "aim_recipe_benchmark_last_success",
            "1 if the release's last benchmark measured, 0 if it failed",
            labels=["namespace", "release"],
        )
        for cm in self.fetch():
            meta = cm.get("metadata") or {}
            ns = str(meta.get("namespace", ""))
            release = str((meta.get("labels") or {}).get(INSTANCE_LABEL, meta.get("name", "")))
            try:
                history = parse_history((cm.get("data") or {}).get(BENCHMARKS_KEY))
            except Exception:
                continue
            if not history:
                continue
            last.add_metric([ns, release], 1.0 if history[-1].outcome == "measured" else 0.0)
            newest: dict[tuple[str, str], BenchmarkResult] = {}
            for r in history:
                if r.outcome == "measured":
                    rate = "inf" if r.conditions.request_rate is None else f"{r.conditions.request_rate:g}"
                    newest[(r.provenance.recipe_id, rate)] = r
            for (recipe_id, rate), r in sorted(newest.items()):
                values = [ns, release, recipe_id, r.provenance.hardware, str(r.conditions.concurrency), rate]
                tps.add_metric(values, r.figures["output_throughput"])
                for stat in ("mean", "p50", "p95", "p99"):
                    if f"{stat}_ttft_ms" in r.figures:
                        ttft.add_metric([*values, stat], r.figures[f"{stat}_ttft_ms"] / 1000)
                    if f"{stat}_itl_ms" in r.figures:
                        itl.add_metric([*values, stat], r.figures[f"{stat}_itl_ms"] / 1000)
                stamp = _rfc3339_seconds(r.provenance.time)
                if stamp is not None:
                    when.add_metric(values, stamp)
        yield tps
        yield ttft
        yield itl
        yield when
        yield last


def _rfc3339_seconds(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
