#!/usr/bin/env python3
"""make demo: the product on a real Kubernetes cluster assembled on this machine, from a fresh clone.

1. brings the local cluster up (tools/realcluster.py): etcd, kube-apiserver, controller-manager,
   scheduler, one real kubelet node with containerd running images built from this repository's
   Dockerfile, kube-proxy, and kwok nodes simulating MI300X, H100 and A100 GPU servers;
2. shows the GPU inventory the selector sees (`aim-recipes detect` against the live API);
3. installs the chart with the seed's Production Deployment command: the pre-install hook Job runs
   the recipe selector in a container, the webhook Deployment starts and registers itself;
4. prints the selected recipe and its explanation (`kubectl logs job/aim-engine-recipe-selector`)
   and the vLLM pod with the recipe injected, scheduled on a simulated MI300X node;
5. applies a bad Deployment with kubectl: the API server refuses it with the webhook's message;
6. serves for real: a second release asks for CPU (`aim_engine.hardware.gpu_type=CPU-x86`) and the
   test model `aim-engine/tiny-llama`; the selector picks its CPU recipe, the webhook injects it,
   vLLM's CPU build (an image built here) loads the model from the chart's model-cache volume, and
   a chat completion goes through the release's Service; its /health and /metrics are shown;
7. leaves the cluster running and says how to use it and tear it down (`make cluster-down`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import realcluster  # noqa: E402

NS = "aim-engine"
CPU_NS = realcluster.CPU_NAMESPACE
CPU_RELEASE = realcluster.CPU_RELEASE
TOOLS = ROOT / ".tools"
KUBECTL = str(TOOLS / "bin" / "kubectl")
HELM = str(TOOLS / "bin" / "helm")


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(
    cmd: list[str], env: dict[str, str], *, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    shown = " ".join(Path(c).name if c in (KUBECTL, HELM) else c for c in cmd)
    print(f"$ {shown}", flush=True)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, input=stdin, check=False)
    print((out.stdout + out.stderr).rstrip(), flush=True)
    if check and out.returncode != 0:
        raise SystemExit(f"demo step failed ({shown}: exit {out.returncode})")
    return out


def main() -> int:
    reuse = os.environ.get("AIM_DEMO_KUBECONFIG")
    if reuse:
        # The e2e suite's cluster (tests/e2e/test_00_demo.py): the demo's steps on it, left installed.
        step(f"Using the running local cluster ({reuse})")
        kubeconfig = Path(reuse)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    else:
        state = Path(os.environ.get("AIM_CLUSTER_STATE", realcluster.DEFAULT_STATE))
        step("Bringing up the local cluster (control plane, a real kubelet node, kwok GPU nodes)")
        cluster = realcluster.up(state)
        env = cluster.env()
        kubeconfig = cluster.kubeconfig

    step("GPU inventory of the live cluster, as the selector sees it: aim-recipes detect")
    show([str(TOOLS / "venv" / "bin" / "aim-recipes"), "detect"], env)

    step("helm install — the seed's Production Deployment command (plus this cluster's locally built image)")
    t0 = time.monotonic()
    show(
        [
            HELM,
            "install",
            "aim-engine",
            str(ROOT / "chart"),
            "-n",
            NS,
            "--create-namespace",
            *realcluster.SEED_PRODUCTION_SETS,
            *realcluster.LOCAL_IMAGE_SETS,
            "--wait",
            "--timeout",
            "5m",
        ],
        env,
    )
    print(f"(installed in {time.monotonic() - t0:.0f} s: hook Job, webhook, vLLM Deployment ready)")

    step("What was selected, and why — the hook Job's log")
    show([KUBECTL, "logs", "job/aim-engine-recipe-selector", "-n", NS], env)

    step("The vLLM pod: the webhook injected the recipe; it runs on a (simulated) MI300X node")
    show(
        [
            KUBECTL,
            "get",
            "pods",
            "-n",
            NS,
            "-o",
            "wide",
            "-L",
            "aim-engine.io/recipe-id,aim-engine.io/gpu-model",
        ],
        env,
    )
    listing = subprocess.run(
        [KUBECTL, "get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=inference", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    pod = json.loads(listing.stdout)["items"][0]
    c = pod["spec"]["containers"][0]
    print(f"limits: {c['resources']['limits']}")
    print("args:   " + " ".join(c.get("args", [])))
    print("env:    " + ", ".join(f"{e['name']}={e.get('value')}" for e in c.get("env", [])))

    step("A bad Deployment (2 GPUs for a 1-GPU recipe), applied with kubectl: refused by the API server")
    bad = json.loads((ROOT / "tests/fixtures/admission/deployment-gpu-count-mismatch.json").read_text())["request"]["object"]
    bad["metadata"]["namespace"] = "default"
    bad["metadata"].pop("annotations", None)
    out = show([KUBECTL, "apply", "-f", "-"], env, check=False, stdin=json.dumps(bad))
    if out.returncode == 0:
        print("unexpected: the bad Deployment was admitted")
        return 1

    if serve_for_real(env) != 0:
        return 1

    step("Done. The cluster stays up for you to explore:")
    print(f"  export KUBECONFIG={kubeconfig}")
    print(f"  {KUBECTL} get pods -A")
    print("Tear it down (stops every process it started, nothing left behind): make cluster-down")
    return 0


def serve_for_real(env: dict[str, str]) -> int:
    step("A real engine: aim-engine/tiny-llama on vLLM's CPU build, on the real node (the release asks for CPU)")
    t0 = time.monotonic()
    show(
        [HELM, "install", CPU_RELEASE, str(ROOT / "chart"), "-n", CPU_NS, "--create-namespace",
         *realcluster.cpu_release_sets(), "--wait", "--timeout", "10m"],
        env,
    )  # fmt: skip
    # The release has settled once its reconcile Job has replaced any pod that started before the
    # webhook served (docs/chart.md): the completion goes to the pod that stays.
    realcluster.wait_settled(Path(env["KUBECONFIG"]), CPU_NS, CPU_RELEASE)
    installed = time.monotonic() - t0
    show([KUBECTL, "logs", f"job/{CPU_RELEASE}-recipe-selector", "-n", CPU_NS], env)
    service = json.loads(
        subprocess.run(
            [KUBECTL, "get", "service", f"{CPU_RELEASE}-service", "-n", CPU_NS, "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    base = f"http://{service['spec']['clusterIP']}:8000"
    body = {
        "model": realcluster.TEST_MODEL_ID,
        "messages": [{"role": "user", "content": "say hello world"}],
        "max_tokens": 16,
    }
    print(f"$ curl -s {base}/v1/chat/completions -d '{json.dumps(body)}'   (service/{CPU_RELEASE}-service port 8000)")
    started = time.monotonic()
    answer = _http_json(f"{base}/v1/chat/completions", body)
    took = time.monotonic() - started
    text = answer["choices"][0]["message"]["content"]
    usage = answer.get("usage", {})
    print(f"completion: {text!r} ({usage.get('completion_tokens')} tokens in {took * 1000:.0f} ms; random weights, so no sense)")
    print(f"(helm install to the first completion: {installed + took:.0f} s)")
    health = urllib.request.urlopen(f"{base}/health", timeout=10).status
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    series = [line for line in metrics.splitlines() if line.startswith("vllm:")]
    print(f"/health: {health}; /metrics: {len(series)} vllm: series, e.g. {series[0] if series else 'none'}")
    if not text or not series:
        print("unexpected: no completion or no vllm: metrics")
        return 1
    return 0


def _http_json(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return dict(json.loads(r.read()))


if __name__ == "__main__":
    sys.exit(main())
