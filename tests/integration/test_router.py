"""vLLM's router (vllm-router, the binary the chart runs) on loopback in front of the engine
simulator and one dead worker (a port nothing listens on): every vllm_router_* series the dashboards
and alerts name is one the router exposes, with the labels they use. The e2e suite reads the router's
series through Prometheus (tests/e2e/test_07_autoscaling.py), but a healthy cluster run never
retries; the dead worker makes the router retry here. Cost: about 8 s (the simulator's start)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import ROOT
from support.loopback import MODEL, free_port, serving, simulator

VLLM_ROUTER = ROOT / ".tools" / "venv" / "bin" / "vllm-router"
FAMILY = re.compile(r"\bvllm_router_[a-z_]+")
LABEL_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
SKIP_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container"}  # added by the scrape


def named_by_the_bundle() -> dict[str, set[str]]:
    """Every vllm_router_* family in the dashboards and the alert rules, with the series labels
    their queries match or group by (other than those Prometheus adds when it scrapes)."""
    texts = [p.read_text() for p in sorted((ROOT / "dashboards").glob("*.json"))]
    for p in sorted((ROOT / "chart").rglob("*.yaml")):
        if "vllm_router_" in (t := p.read_text()):
            texts.append(t)
    exprs = [e for t in texts for e in re.findall(r"[^\"\n]*vllm_router_[^\"\n]*", t)]
    found: dict[str, set[str]] = {}
    for expr in exprs:
        for m in FAMILY.finditer(expr):
            labels = found.setdefault(m.group(0), set())
            selector = re.match(r"\{([^}]*)\}", expr[m.end() :])
            if selector:
                labels |= set(LABEL_MATCHER.findall(selector.group(1))) - SKIP_LABELS
    return found


def _post(url: str, model: str) -> int:
    body = json.dumps({"model": model, "prompt": "route me", "max_tokens": 2}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.fixture(scope="module")
def router() -> Iterator[tuple[str, str]]:
    if not VLLM_ROUTER.exists():
        pytest.fail(f"{VLLM_ROUTER} is missing: run make setup")
    with simulator("--ttft-ms", "2", "--itl-ms", "1") as engine:
        port, metrics, dead = free_port(), free_port(), free_port()
        cmd = [
            str(VLLM_ROUTER), "--host", "127.0.0.1", "--port", str(port), "--policy", "round_robin",
            "--prometheus-port", str(metrics), "--worker-urls", engine, f"http://127.0.0.1:{dead}",
        ]  # fmt: skip
        with serving(cmd, health=f"http://127.0.0.1:{port}/health", what="vllm-router"):
            yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics}/metrics"


def test_every_router_series_the_dashboards_and_alerts_name_is_the_routers(router: tuple[str, str]) -> None:
    base, metrics_url = router
    # round robin over a live and a dead worker: every other request is retried on the live one
    codes = [_post(f"{base}/v1/completions", MODEL) for _ in range(4)]
    assert codes == [200] * 4, codes
    assert _post(f"{base}/v1/completions", "no-such-model") == 404  # the engine's 404: a non-retryable error
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    samples_of = {f.name: f.samples for f in text_string_to_metric_families(text)}
    named = named_by_the_bundle()
    assert {"vllm_router_requests_total", "vllm_router_retries_total", "vllm_router_active_workers"} <= set(named), named
    problems = []
    for family, labels in sorted(named.items()):
        samples = [s for s in samples_of.get(family.removesuffix("_total"), []) if s.name == family]
        if not samples:
            problems.append(f"{family}: not on the router's /metrics")
        for label in sorted(labels):
            if not any(label in s.labels for s in samples):
                problems.append(f"{family}: no sample has the label {label!r}")
    print(f"\nrouter series the bundle names: {sorted(named)}")
    assert not problems, "\n".join(problems)
    retries = sum(s.value for s in samples_of["vllm_router_retries"])
    assert retries >= 1, "the router retried nothing on its dead worker"
    errors = [s.labels.get("error_type") for s in samples_of["vllm_router_request_errors"] if s.name.endswith("_total")]
    assert errors == ["non_retryable_error"], errors
