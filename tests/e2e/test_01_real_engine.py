"""The real engine in every run: the demo's CPU release (the chart, its selector hook and webhook,
vLLM's CPU build serving the test model on the real node; tools/demo.py installs it, this module
installs it the same way if the demo did not) checked end to end, and the engine simulator held to it.

1. The model reaches the engine through the chart's model-cache claim, bound to one of the
   cluster's pre-populated volumes; the pod is Ready on its real `/health`.
2. A chat completion through the release's Service (cluster IP, kube-proxy to the pod).
3. The cluster's Prometheus, configured by prometheus-operator from the chart's ServiceMonitor,
   scrapes the engine's `vllm:` series, with the recipe's labels copied onto them; the chart's
   PrometheusRule is loaded.
4. One recording rule against vLLM's own benchmark client: `aim_performance_tokens_per_second` is
   the release's output tokens per second over five minutes; a short run of the client (from the
   host: a client pod beside the engine is starved on this 2-core node, docs/monitoring.md) falls
   inside that window, so the rule times five minutes must be the tokens the client received, within
   15 % (the few tokens of the completions above are in the window too). The full comparison, every
   rule over a steady 345 s run, is the engine suite's (`make test-engine`,
   test_1_monitoring.py).
5. Conformance of the simulator: aim-engine-sim (the same image, `workload.engine=simulator`'s
   command) and this engine each serve a completion; every metric family, label name and histogram
   bucket the simulator exports must be one the real engine exports.

Then the release is uninstalled: the node's two cores are for what follows. Every wait polls, with
a bound. Cost: about 70 s (bench client 20 s and its start, the rule evaluation after it)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import realcluster
from localcluster import wait_for
from support.promtext import conformance_problems, series

from .conftest import ROOT, E2ECluster, require_monitoring_stack

NS = realcluster.CPU_NAMESPACE
RELEASE = realcluster.CPU_RELEASE
MAX_TOKENS = 16
# The benchmark run: evenly spaced requests, 128 tokens in and out (the catalog's conditions).
RUN_RATE = 4
RUN_PROMPTS = 80
RUN_TOKENS = 128
TOLERANCE = 0.15
WINDOW = 300  # the rules' rate window, seconds
SIM = "aim-engine-sim"


@dataclass
class Release:
    e2e: E2ECluster
    base: str  # http://<cluster IP>:8000
    prometheus: str


def get(e2e: E2ECluster, *args: str) -> Any:
    return json.loads(e2e.kubectl("get", *args, "-o", "json", check=True).stdout)


def http_json(url: str, body: dict[str, Any] | None = None, *, timeout: float = 60) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _try(fn: Any) -> Any:
    try:
        return fn()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def query(prom: str, q: str, *, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": q, **({"time": f"{at:.3f}"} if at is not None else {})}
    return list(http_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode(params))["data"]["result"])


def chat(base: str) -> dict[str, Any]:
    body = {
        "model": realcluster.TEST_MODEL_ID,
        "messages": [{"role": "user", "content": "say hello"}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
    }
    return dict(http_json(f"{base}/v1/chat/completions", body))


def inference_pods(e2e: E2ECluster, ns: str, release: str) -> list[dict[str, Any]]:
    sel = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=inference"
    return [p for p in get(e2e, "pods", "-n", ns, "-l", sel)["items"] if "deletionTimestamp" not in p["metadata"]]


@pytest.fixture(scope="module")
def release(e2e: E2ECluster) -> Iterator[Release]:
    require_monitoring_stack(e2e)
    if e2e.helm("status", RELEASE, "-n", NS).returncode != 0:
        print(f"\nthe demo's release {NS}/{RELEASE} is not there: installing it as the demo does")
        e2e.helm("install", RELEASE, str(ROOT / "chart"), "-n", NS, "--create-namespace", *realcluster.cpu_release_sets(),
                 "--wait", "--timeout", "10m", check=True)  # fmt: skip
        realcluster.wait_settled(e2e.kubeconfig, NS, RELEASE)
    try:
        svc = get(e2e, "service", f"{RELEASE}-service", "-n", NS)
        yield Release(e2e, f"http://{svc['spec']['clusterIP']}:8000", realcluster.prometheus_url(e2e.kubeconfig))
    finally:
        print(e2e.kubectl("get", "pods,pvc,events", "-n", NS).stdout[-3000:])
        e2e.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m")
        e2e.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")


def test_the_model_reaches_the_engine_through_the_charts_model_cache_claim(release: Release) -> None:
    e2e = release.e2e
    (pod,) = inference_pods(e2e, NS, RELEASE)
    assert pod["spec"]["nodeName"] == realcluster.NODE
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v)
    pvc = get(e2e, "pvc", claim, "-n", NS)
    assert pvc["status"]["phase"] == "Bound"
    pv = get(e2e, "pv", pvc["spec"]["volumeName"])
    assert pv["metadata"]["labels"]["aim-engine.io/e2e"] == "model-cache"
    repo = "models--" + realcluster.TEST_MODEL_ID.replace("/", "--")
    hub = Path(pv["spec"]["hostPath"]["path"]) / "hub" / repo
    if e2e.local or hub.is_dir():  # the volume is on this machine (not inside a kind node)
        revision = (hub / "refs" / "main").read_text()
        assert (hub / "snapshots" / revision / "model.safetensors").is_file()
    vllm = pod["spec"]["containers"][0]
    assert vllm["command"][:2] == ["vllm", "serve"], vllm["command"]


def test_a_chat_completion_through_the_service(release: Release) -> None:
    models = wait_for(lambda: _try(lambda: http_json(f"{release.base}/v1/models")), timeout=60, what="/v1/models")
    assert [m["id"] for m in models["data"]] == [realcluster.TEST_MODEL_ID]
    t0 = time.monotonic()
    reply = chat(release.base)
    assert reply["object"] == "chat.completion" and reply["model"] == realcluster.TEST_MODEL_ID
    assert reply["usage"]["completion_tokens"] == MAX_TOKENS
    print(f"\n{MAX_TOKENS}-token chat completion through service/{RELEASE}-service in {time.monotonic() - t0:.2f} s")


def test_prometheus_scrapes_the_engine_and_loads_the_charts_rules(release: Release) -> None:
    prom = release.prometheus
    families = wait_for(
        lambda: _try(lambda: query(prom, f'count by (__name__) ({{__name__=~"vllm:.+", namespace="{NS}"}})')) or None,
        timeout=180,
        what="vllm: series of the release in Prometheus",
    )
    names = {r["metric"]["__name__"] for r in families}
    assert {"vllm:num_requests_running", "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket"} <= names
    labelled = query(prom, f'vllm:num_requests_running{{namespace="{NS}"}}')
    assert labelled and labelled[0]["metric"].get("aim_engine_io_recipe_id") == "tiny-llama-cpu-x86-bf16", labelled
    # Offline (HF_HUB_OFFLINE, no token), the model's id, not its snapshot path, names every series.
    models = {r["metric"].get("model_name") for r in query(prom, f'{{__name__=~"vllm:.+", namespace="{NS}", model_name!=""}}')}
    assert models == {realcluster.TEST_MODEL_ID}, models
    done = wait_for(
        lambda: [r for r in query(prom, f'sum(vllm:request_success_total{{namespace="{NS}"}})') if float(r["value"][1]) >= 1],
        timeout=90,
        what="vllm:request_success_total >= 1",
    )
    assert float(done[0]["value"][1]) >= 1

    def loaded() -> bool:
        rules = _try(lambda: http_json(f"{prom}/api/v1/rules"))
        return bool(rules) and any(f"{NS}-{RELEASE}" in g["file"] for g in rules["data"]["groups"])

    wait_for(loaded, timeout=120, what="the release's PrometheusRule loaded by Prometheus")
    print(f"\nPrometheus holds {len(names)} vllm: families of {NS}/{RELEASE}; its rules are loaded")


def test_the_throughput_rule_agrees_with_vllms_benchmark_client(release: Release, tmp_path: Path) -> None:
    prom = release.prometheus
    sel = f'{{namespace="{NS}", recipe_id="tiny-llama-cpu-x86-bf16"}}'
    before = time.time()
    hub = realcluster.tokenizer_cache(tmp_path)  # the tokenizer (volume 0 can be a released claim, emptied)
    cmd = [
        str(ROOT / ".tools/vllm-venv/bin/vllm"), "bench", "serve", "--backend", "openai", "--base-url", release.base,
        "--endpoint", "/v1/completions", "--model", realcluster.TEST_MODEL_ID, "--dataset-name", "random",
        "--random-input-len", str(RUN_TOKENS), "--random-output-len", str(RUN_TOKENS), "--ignore-eos",
        "--num-prompts", str(RUN_PROMPTS), "--request-rate", str(RUN_RATE), "--burstiness", "100", "--max-concurrency", "16",
        "--disable-tqdm", "--save-result", "--result-dir", str(tmp_path), "--result-filename", "result.json",
    ]  # fmt: skip
    env = {
        **release.e2e.env(),
        "HF_HOME": str(hub),
        "HF_HUB_OFFLINE": "1",
        "TMPDIR": str(tmp_path),
        "VLLM_CACHE_ROOT": str(tmp_path),
    }
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ended = time.time()
    run = json.loads((tmp_path / "result.json").read_text())
    assert run["completed"] == RUN_PROMPTS, {k: v for k, v in run.items() if not isinstance(v, list)}
    tokens = run["total_output_tokens"]
    assert ended - before < WINDOW - 60, f"the run took {ended - before:.0f} s: too long for one window"
    # The rule's value after a scrape and an evaluation that follow the run's end (scrape 5 s,
    # evaluation 15 s), while its five-minute window still holds the whole run.
    at = ended + 25

    def evaluated() -> list[dict[str, Any]] | None:
        if time.time() < at:
            return None
        return query(prom, f"aim_performance_tokens_per_second{sel}", at=at) or None

    (row,) = wait_for(evaluated, timeout=120, what="aim_performance_tokens_per_second after the run")
    rule = float(row["value"][1])
    assert at - WINDOW < before, "the window must start before the run"
    client = tokens / WINDOW
    print(
        f"\nrun: {run['completed']} requests at {RUN_RATE}/s in {run['duration']:.0f} s, {tokens} output tokens "
        f"({run['output_throughput']:.0f} tok/s while it ran)\n"
        f"aim_performance_tokens_per_second (5-minute average) {rule:.2f}; the client's tokens / {WINDOW} s {client:.2f}; "
        f"diff {(rule - client) / client:+.1%}"
    )
    assert abs(rule - client) <= TOLERANCE * client


def test_the_simulator_exports_only_what_the_real_engine_exports(release: Release) -> None:
    """aim-engine-sim in a pod of the same image, beside the real engine: after a completion each,
    every family, label name and bucket bound of the simulator's /metrics is the real engine's."""
    e2e = release.e2e
    image = realcluster.vllm_image()
    labels = {"app.kubernetes.io/name": SIM, "app.kubernetes.io/part-of": "aim-engine-e2e"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": SIM, "namespace": NS, "labels": labels},
        "spec": {
            "nodeSelector": {"aim-engine.io/node": "real"},
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "sim",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": [SIM, "serve", realcluster.TEST_MODEL_ID],
                    "args": ["--max-num-seqs", "16", "--max-model-len", "2048", "--enforce-eager"],
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                }
            ],
        },
    }
    e2e.kubectl("apply", "-f", "-", stdin=json.dumps(pod), check=True)
    try:

        def ready() -> str | None:
            p = get(e2e, "pod", SIM, "-n", NS)
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            return p["status"]["podIP"] if ok else None

        ip = wait_for(ready, timeout=120, what="the simulator pod Ready")
        sim = f"http://{ip}:8000"
        chat(sim)
        chat(release.base)
        with urllib.request.urlopen(f"{sim}/metrics", timeout=30) as r:
            simulated = series(r.read().decode())
        with urllib.request.urlopen(f"{release.base}/metrics", timeout=30) as r:
            real = series(r.read().decode())
        with urllib.request.urlopen(f"{sim}/version", timeout=30) as r:
            assert json.loads(r.read())["version"].startswith(SIM)
    finally:
        e2e.kubectl("delete", "pod", SIM, "-n", NS, "--wait=false")
    ours = {n: f for n, f in simulated.items() if n.startswith("vllm:")}
    assert len(ours) >= 30, sorted(ours)
    problems = conformance_problems(simulated, real)
    print(f"\nthe simulator exports {len(ours)} vllm: series, each with the real engine's labels and buckets")
    assert not problems, "\n".join(problems)
