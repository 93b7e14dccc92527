"""Synthetic but realistic series: vLLM V1 metric names and label sets (as a ServiceMonitor with
podTargetLabels scrapes them), several recipes on AMD and NVIDIA GPUs, the catalog baselines and
the webhook's and selector's series, DCGM and AMD device-metrics-exporter GPU metrics, and
kube-state-metrics' Job status. Written as OpenMetrics for `promtool tsdb create-blocks-from`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

STEP = 15  # seconds between samples, a typical scrape interval


@dataclass(frozen=True)
class Replica:
    namespace: str
    pod: str
    recipe: str
    gpu_model: str
    model: str
    tokens_per_s: float
    waiting: float
    running: float
    kv: float
    ttft_fast_share: float  # share of first tokens within 2.5 s


REPLICAS = [
    # On baseline (3140 tok/s expected), two replicas, AMD.
    Replica("inference", "qwen-0", "qwen3-32b-mi300x-1gpu-fp8", "MI300X", "Qwen/Qwen3-32B", 3000, 2, 60, 0.6, 0.999),
    Replica("inference", "qwen-1", "qwen3-32b-mi300x-1gpu-fp8", "MI300X", "Qwen/Qwen3-32B", 3100, 3, 62, 0.62, 0.999),
    # Under-delivering and saturated, NVIDIA (baseline 920 tok/s).
    Replica(
        "inference-b",
        "llama-0",
        "llama-3.1-70b-instruct-h100-2gpu-fp8",
        "H100",
        "meta-llama/Llama-3.1-70B-Instruct",
        300,
        25,
        40,
        0.97,
        0.7,
    ),
    # Idle, NVIDIA.
    Replica("inference", "qwen8b-0", "qwen3-8b-h100-1gpu-bf16", "H100", "Qwen/Qwen3-8B", 0, 0, 0, 0.01, 1.0),
]
BASELINES = {
    "qwen3-32b-mi300x-1gpu-fp8": (3140, 0.0172, 1),
    "llama-3.1-70b-instruct-h100-2gpu-fp8": (920, 0.0366, 2),
    "qwen3-8b-h100-1gpu-bf16": (3140, 0.0183, 1),
}
BUCKETS = ["0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"]


def _labels(d: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in d.items()) + "}"


def series(start: int, end: int) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """metric name -> label string -> [(timestamp, value)]"""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}

    def add(name: str, labels: dict[str, str], fn) -> None:  # type: ignore[no-untyped-def]
        out.setdefault(name, {})[_labels(labels)] = [(t, float(fn(t - start))) for t in range(start, end + 1, STEP)]

    for r in REPLICAS:
        base = {
            "namespace": r.namespace,
            "pod": r.pod,
            "job": "aim-engine-service",
            "instance": f"{r.pod}:8000",
            "model_name": r.model,
            "aim_engine_io_recipe_id": r.recipe,
            "aim_engine_io_gpu_model": r.gpu_model,
            "aim_engine_io_tensor_parallel_size": "1",
        }
        target = {k: v for k, v in base.items() if k != "model_name"}
        add("up", target, lambda t: 1)
        add("vllm:generation_tokens_total", base, lambda t, r=r: r.tokens_per_s * t)
        add("vllm:prompt_tokens_total", base, lambda t, r=r: r.tokens_per_s * 0.8 * t)
        add("vllm:request_success_total", {**base, "finished_reason": "stop"}, lambda t, r=r: r.tokens_per_s / 500 * t)
        add("vllm:num_requests_running", base, lambda t, r=r: r.running)
        add("vllm:num_requests_waiting", base, lambda t, r=r: r.waiting + (t / 600 if r.waiting > 10 else 0))
        add("vllm:kv_cache_usage_perc", base, lambda t, r=r: r.kv)
        add("vllm:num_preemptions_total", base, lambda t, r=r: (0.5 if r.kv > 0.9 else 0) * t)
        add("vllm:prefix_cache_queries_total", base, lambda t, r=r: r.tokens_per_s * t)
        add("vllm:prefix_cache_hits_total", base, lambda t, r=r: r.tokens_per_s * 0.3 * t)
        rate = max(r.tokens_per_s / 500, 0.01)
        for hist, scale in (
            ("vllm:time_to_first_token_seconds", 1.0),
            ("vllm:inter_token_latency_seconds", 0.02),
            ("vllm:e2e_request_latency_seconds", 8.0),
            ("vllm:request_queue_time_seconds", 0.5),
        ):
            for le in BUCKETS:
                if le == "+Inf":
                    share = 1.0
                elif hist == "vllm:time_to_first_token_seconds" and le == "2.5":
                    share = r.ttft_fast_share
                else:
                    share = min(1.0, 1 - math.exp(-float(le) / scale))
                add(f"{hist}_bucket", {**base, "le": le}, lambda t, s=share, rt=rate: rt * s * t)
            add(f"{hist}_count", base, lambda t, rt=rate: rt * t)
            add(f"{hist}_sum", base, lambda t, rt=rate, sc=scale: rt * sc * t)
    for recipe, (tps, itl, gpus) in BASELINES.items():
        for pod in ("aim-engine-recipe-validator-0", "aim-engine-recipe-validator-1"):
            common = {"namespace": "aim-engine", "pod": pod, "job": "aim-engine-recipe-validator"}
            add(
                "aim_recipe_expected_tokens_per_second",
                {**common, "recipe_id": recipe, "source": "estimated"},
                lambda t, v=tps: v,
            )
            add("aim_recipe_expected_latency_seconds", {**common, "recipe_id": recipe, "source": "estimated"}, lambda t, v=itl: v)
            add("aim_recipe_gpu_count", {**common, "recipe_id": recipe}, lambda t, v=gpus: v)
    hook = {"namespace": "aim-engine", "pod": "aim-engine-recipe-validator-0", "job": "aim-engine-recipe-validator"}
    # Every webhook replica exports the selection counters from the same ConfigMaps: identical series
    # that differ only in pod (and instance).
    for pod in ("aim-engine-recipe-validator-0", "aim-engine-recipe-validator-1"):
        add(
            "aim_recipe_selection_total",
            {**hook, "pod": pod, "release": "aim-engine", "result": "selected", "level": "primary"},
            lambda t: 1 + t // 1800,
        )
        add(
            "aim_recipe_selection_total",
            {**hook, "pod": pod, "release": "aim-engine-llama", "result": "not_found", "level": "none"},
            lambda t: 1 + t // 3000,
        )
    add("aim_recipe_selection_last_duration_seconds", {**hook, "release": "aim-engine"}, lambda t: 0.41)
    add(
        "aim_recipe_selected_info",
        {**hook, "release": "aim-engine", "recipe_id": "qwen3-32b-mi300x-1gpu-fp8", "level": "primary"},
        lambda t: 1,
    )
    for outcome, reason, per_s in (
        ("allowed", "", 5.0),
        ("patched", "", 2.0),
        ("denied", "GPU_COUNT_MISMATCH", 0.2),
        ("error", "INTERNAL", 0.01),
    ):
        for endpoint in ("validate", "mutate"):
            add(
                "aim_webhook_requests_total",
                {**hook, "endpoint": endpoint, "kind": "Deployment", "operation": "CREATE", "outcome": outcome, "reason": reason},
                lambda t, p=per_s: p * t,
            )
    for endpoint in ("validate", "mutate"):
        for le, share in (("0.001", 0.3), ("0.0025", 0.8), ("0.005", 0.95), ("0.01", 0.99), ("0.1", 1.0), ("+Inf", 1.0)):
            add(
                "aim_webhook_request_duration_seconds_bucket",
                {**hook, "endpoint": endpoint, "le": le},
                lambda t, s=share: 7 * s * t,
            )
    add("aim_webhook_http_errors_total", {**hook, "status": "400"}, lambda t: 0.05 * t)
    add("aim_webhook_certificate_expiry_timestamp_seconds", hook, lambda t: start + 300 * 86400)
    for gpu in range(2):
        add(
            "DCGM_FI_DEV_GPU_UTIL",
            {"Hostname": "h100-node-0", "gpu": str(gpu), "namespace": "inference-b", "pod": "llama-0"},
            lambda t: 85,
        )
        add(
            "DCGM_FI_DEV_FB_USED",
            {"Hostname": "h100-node-0", "gpu": str(gpu), "namespace": "inference-b", "pod": "llama-0"},
            lambda t: 76000,
        )
    for gpu in range(2):
        add(
            "gpu_gfx_activity",
            {"hostname": "mi300x-node-0", "gpu_id": str(gpu), "namespace": "inference", "pod": f"qwen-{gpu}"},
            lambda t: 70,
        )
        add(
            "gpu_used_vram",
            {"hostname": "mi300x-node-0", "gpu_id": str(gpu), "namespace": "inference", "pod": f"qwen-{gpu}"},
            lambda t: 180000,
        )
    # vLLM's router in front of the two qwen replicas (router.enabled).
    router = {"namespace": "inference", "pod": "qwen-router-0", "job": "aim-engine-router", "instance": "qwen-router-0:29000"}
    add("vllm_router_requests_total", {**router, "route": "/v1/chat/completions"}, lambda t: 12.4 * t)
    add(
        "vllm_router_request_errors_total",
        {**router, "route": "/v1/chat/completions", "error_type": "upstream"},
        lambda t: 0.01 * t,
    )
    add("vllm_router_retries_total", {**router, "route": "/v1/chat/completions"}, lambda t: 0.02 * t)
    add("vllm_router_active_workers", router, lambda t: 2)
    add(
        "kube_job_status_failed",
        {"namespace": "aim-engine", "job_name": "aim-engine-llama-recipe-selector", "job": "kube-state-metrics"},
        lambda t: 1,
    )
    return out


def openmetrics(start: int, end: int) -> Iterator[str]:
    for name, by_labels in sorted(series(start, end).items()):
        for labels, samples in by_labels.items():
            for t, v in samples:
                yield f"{name}{labels} {v} {t}\n"
    yield "# EOF\n"
