"""A real inference engine on the local cluster, without the chart: what the chart's vLLM pods will
stand on. vLLM's CPU build (the image `make images` builds, imported into the node's containerd)
serves the test model `aim-engine/tiny-llama`, which reaches the pod through a PersistentVolumeClaim
shaped like the chart's model cache (its access modes, size, storage class and mount path, read from
chart/values.yaml) bound to one of the cluster's pre-populated volumes, never through the image. Its
real /health answers the probes; a chat completion goes through the Service's cluster IP (kube-proxy
to the pod: traffic only to the cluster's own pods); and the cluster's Prometheus, configured by
prometheus-operator from a ServiceMonitor labelled like the chart's, scrapes its `vllm:` series and
loads the chart's PrometheusRule.

Every wait polls, with a bound: the engine Ready within 5 minutes (about 40 s here), a completion
within a minute, the series within two (scrape interval 5 s)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import realcluster
from localcluster import wait_for

from .conftest import ROOT, E2ECluster, require_monitoring_stack

NS = "aim-engine-infra"
NAME = "vllm-cpu"
# app.kubernetes.io/part-of=aim-engine is what the cluster's Prometheus selects monitoring objects by
# (tools/monitoring/stack.yaml), as it selects the chart's.
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": "infra", "app.kubernetes.io/part-of": "aim-engine"}
SELECTOR = ",".join(f"{k}={v}" for k, v in LABELS.items())
MAX_TOKENS = 16


@dataclass
class Engine:
    e2e: E2ECluster
    cluster_ip: str
    prometheus: str
    ready_seconds: float


def get(e2e: E2ECluster, *args: str) -> Any:
    return json.loads(e2e.kubectl("get", *args, "-o", "json", check=True).stdout)


def http_json(url: str, body: dict[str, Any] | None = None, *, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def manifests(image: str) -> list[dict[str, Any]]:
    """Namespace, model-cache claim, vLLM Deployment, Service, ServiceMonitor."""
    cache = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text())["model_cache"]
    claim: dict[str, Any] = {
        "accessModes": cache["access_modes"],
        "resources": {"requests": {"storage": cache["size"]}},
    }
    if cache.get("storage_class"):
        claim["storageClassName"] = cache["storage_class"]
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "model-cache", "namespace": NS},
            "spec": claim,
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NS, "labels": LABELS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": LABELS},
                "template": {
                    "metadata": {"labels": LABELS},
                    "spec": {
                        "nodeSelector": {"aim-engine.io/node": "real"},
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": "vllm",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["vllm", "serve", realcluster.TEST_MODEL_ID],
                                "args": ["--host", "0.0.0.0", "--port", "8000", "--enforce-eager", "--max-model-len", "2048"],
                                "env": [
                                    # The chart's setting: the model cache is HF_HOME (offline: the image sets HF_HUB_OFFLINE=1).
                                    {"name": "HF_HOME", "value": cache["mount_path"]},
                                    {"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"},
                                ],
                                "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                                "startupProbe": {**probe, "periodSeconds": 3, "failureThreshold": 100},
                                "readinessProbe": {**probe, "periodSeconds": 5},
                                "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 6},
                                "resources": {"requests": {"cpu": "1", "memory": "3Gi"}, "limits": {"memory": "6Gi"}},
                                "volumeMounts": [
                                    {"name": "model-cache", "mountPath": cache["mount_path"]},
                                    {"name": "dshm", "mountPath": "/dev/shm"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}},
                            # vLLM's engine core needs more shared memory than the runtime's 64 MiB.
                            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": NS, "labels": LABELS},
            "spec": {"selector": LABELS, "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]},
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": NAME, "namespace": NS, "labels": LABELS},
            "spec": {
                "selector": {"matchLabels": LABELS},
                "namespaceSelector": {"matchNames": [NS]},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "5s"}],
            },
        },
    ]


def ready_pod(e2e: E2ECluster) -> dict[str, Any] | None:
    for p in get(e2e, "pods", "-n", NS, "-l", SELECTOR)["items"]:
        st = p.get("status", {})
        for c in st.get("containerStatuses", []):
            # A crash would restart it: fail at once with its log rather than wait out the bound.
            if c.get("restartCount", 0) or "terminated" in c.get("state", {}):
                log = e2e.kubectl("logs", "-n", NS, p["metadata"]["name"], "--previous").stdout[-3000:]
                raise AssertionError(f"vLLM container terminated: {c}\n{log}")
        if any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", [])):
            return p
    return None


def _iso(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def chat(engine: Engine) -> tuple[dict[str, Any], float]:
    """A chat completion through the Service's cluster IP (kube-proxy picks the pod), and its time."""
    t0 = time.monotonic()
    reply = http_json(
        f"http://{engine.cluster_ip}:8000/v1/chat/completions",
        {
            "model": realcluster.TEST_MODEL_ID,
            "messages": [{"role": "user", "content": "say hello"}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "ignore_eos": True,
        },
        timeout=60,
    )
    return reply, time.monotonic() - t0


@pytest.fixture(scope="module")
def engine(e2e: E2ECluster) -> Iterator[Engine]:
    require_monitoring_stack(e2e)
    image = realcluster.vllm_image()
    assert (realcluster.IMAGES / "vllm-cpu.tar").exists(), "the vLLM CPU image is missing: make images"
    e2e.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true")
    out = e2e.kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests(image)))
    assert out.returncode == 0, out.stderr
    try:
        pod = wait_for(lambda: ready_pod(e2e), timeout=300, what="the vLLM pod Ready (its /health probes passing)")
        ready_at = next(c["lastTransitionTime"] for c in pod["status"]["conditions"] if c["type"] == "Ready")
        ready_seconds = _iso(ready_at) - _iso(pod["metadata"]["creationTimestamp"])
        svc = get(e2e, "service", NAME, "-n", NS)
        yield Engine(e2e, svc["spec"]["clusterIP"], realcluster.prometheus_url(e2e.kubeconfig), ready_seconds)
    finally:
        if out.returncode == 0:
            diag = e2e.kubectl("get", "pods,pvc,events", "-n", NS).stdout
            print(f"\n{diag}")
        e2e.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")


def test_the_model_reaches_the_engine_through_the_model_cache_claim(engine: Engine) -> None:
    e2e = engine.e2e
    pod = ready_pod(e2e)
    assert pod is not None
    assert pod["spec"]["nodeName"] == realcluster.NODE
    # The claim, shaped like the chart's, bound one of the pre-populated volumes.
    pvc = get(e2e, "pvc", "model-cache", "-n", NS)
    assert pvc["status"]["phase"] == "Bound"
    pv = get(e2e, "pv", pvc["spec"]["volumeName"])
    assert pv["metadata"]["labels"]["aim-engine.io/e2e"] == "model-cache"
    # The engine loaded it from there: the snapshot it served sits under the volume's hub/.
    repo = "models--" + realcluster.TEST_MODEL_ID.replace("/", "--")
    hub = Path(pv["spec"]["hostPath"]["path"]) / "hub" / repo
    if e2e.local or hub.is_dir():  # the volume is on this machine (not inside a kind node)
        revision = (hub / "refs" / "main").read_text()
        assert (hub / "snapshots" / revision / "model.safetensors").is_file()
    logs = e2e.kubectl("logs", "-n", NS, pod["metadata"]["name"]).stdout
    assert "Starting vLLM" in logs or "vLLM API server" in logs, logs[-2000:]
    print(f"\nvLLM pod Ready {engine.ready_seconds:.0f} s after it was created")


def test_a_chat_completion_through_the_service(engine: Engine) -> None:
    base = f"http://{engine.cluster_ip}:8000"
    models = wait_for(lambda: _try(lambda: http_json(f"{base}/v1/models")), timeout=60, what="/v1/models through the Service")
    assert [m["id"] for m in models["data"]] == [realcluster.TEST_MODEL_ID]
    reply, took = chat(engine)
    assert reply["object"] == "chat.completion"
    assert reply["model"] == realcluster.TEST_MODEL_ID
    assert reply["usage"]["completion_tokens"] == MAX_TOKENS
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    print(f"\n{MAX_TOKENS}-token chat completion through service/{NAME} in {took:.2f} s")


def test_prometheus_scrapes_the_engine_through_the_operator(engine: Engine) -> None:
    prom = engine.prometheus
    pool = f"serviceMonitor/{NS}/{NAME}/0"  # the scrape job the operator generated from the ServiceMonitor

    seen: list[Any] = []

    def target_up() -> Any:
        targets = _try(lambda: http_json(f"{prom}/api/v1/targets?state=active"))
        pool_targets = [t for t in (targets or {}).get("data", {}).get("activeTargets", []) if t["scrapePool"] == pool]
        seen[:] = [(t.get("health"), t.get("lastError")) for t in pool_targets]
        return [t for t in pool_targets if t["health"] == "up"]

    # Discovery, a config reload and the first scrape (30 s interval); slower when the node is busy.
    try:
        targets = wait_for(target_up, timeout=300, what=f"an up target in scrape pool {pool}")
    except AssertionError as e:
        raise AssertionError(f"{e}; the pool's targets (health, last error): {seen}") from e
    assert targets[0]["labels"]["namespace"] == NS
    assert targets[0]["labels"]["service"] == NAME

    def query(q: str) -> list[dict[str, Any]]:
        return list(http_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q}))["data"]["result"])

    families = wait_for(
        lambda: query(f'count by (__name__) ({{__name__=~"vllm:.+", namespace="{NS}", service="{NAME}"}})'),
        timeout=60,
        what="vllm: series in Prometheus",
    )
    names = {r["metric"]["__name__"] for r in families}
    assert {"vllm:num_requests_running", "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket"} <= names
    # A completion is counted (by a scrape after it: poll).
    chat(engine)
    done = wait_for(
        lambda: [r for r in query(f'sum(vllm:request_success_total{{namespace="{NS}"}})') if float(r["value"][1]) >= 1],
        timeout=60,
        what="vllm:request_success_total >= 1",
    )
    assert float(done[0]["value"][1]) >= 1
    print(f"\nPrometheus holds {len(names)} vllm: families from {pool}")


def test_prometheus_loads_the_charts_rules_through_the_operator(engine: Engine) -> None:
    e2e = engine.e2e
    rendered = e2e.helm(
        "template",
        "infra",
        str(ROOT / "chart"),
        "-n",
        NS,
        "--set",
        "monitoring.enabled=true",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--show-only",
        "templates/monitoring/prometheusrule.yaml",
        check=True,
    ).stdout
    rule = yaml.safe_load(rendered)
    assert rule["kind"] == "PrometheusRule"
    e2e.kubectl("apply", "-n", NS, "-f", "-", stdin=rendered, check=True)
    want = {g["name"] for g in rule["spec"]["groups"]}

    def loaded() -> set[str]:
        rules = _try(lambda: http_json(f"{engine.prometheus}/api/v1/rules"))
        got = {g["name"] for g in rules["data"]["groups"] if f"{NS}-infra" in g["file"]} if rules else set()
        return got if want <= got else set()

    wait_for(loaded, timeout=120, what=f"the chart's rule groups {sorted(want)} loaded by Prometheus")


def _try(fn: Any) -> Any:
    """fn(), or None while the endpoint is not there yet (connection refused, 503)."""
    try:
        return fn()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
