"""The webhook's own rollout refuses no Pod (issue 15).

A release of its own (`aim-rollout` in namespace `aim-rollout`) with `failure_policy: Fail`; recipe
Pods are created through the real API server in a loop (a few client threads, bounded in count and
time) while `kubectl rollout restart` replaces the webhook's replicas; every creation must succeed
and carry the webhook's injection. What makes it hold: a new replica is ready (all workers up)
before an old one goes (maxUnavailable 0, maxSurge 1, minReadySeconds), and a going replica drains
(`--shutdown-delay`: still serving, /readyz 503, `Connection: close` on every response) while its
endpoint removal reaches the API server, before gunicorn stops.

The Pods select a node label no node has, so they would stay Pending and take no (kwok) GPU another
test may need; each is deleted right after its creation. To measure another configuration with the
same loop: AIM_ROLLOUT_CHART (a checkout of an older chart, say), AIM_ROLLOUT_SET (extra
`--set key=value`, comma-separated; e.g. admission_controller.shutdown_delay_seconds=0) and
AIM_ROLLOUT_RATE (creations per second, default 20)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from localcluster import wait_for

from .conftest import IMAGE_VALUES, ROOT, E2ECluster

NS = "aim-rollout"
RELEASE = "aim-rollout"
VALIDATOR = f"{RELEASE}-recipe-validator"
RECIPE = "qwen3-32b-mi300x-1gpu-fp8"
CREATORS = 6  # client threads creating Pods
RATE = float(os.environ.get("AIM_ROLLOUT_RATE", "20"))  # Pod creations per second, all threads together
MAX_PODS = 4000  # bound on what the loop creates
MAX_SECONDS = 240.0  # bound on how long it runs


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"aim-engine.io/recipe-id": RECIPE, "aim-rollout/loop": "1"}},
        "spec": {
            "nodeSelector": {"aim-rollout/never": "true"},  # stays Pending: takes no GPU
            "containers": [{"name": "vllm", "image": "rocm/vllm:latest", "args": ["--model", "Qwen/Qwen3-32B"]}],
        },
    }


class CreationLoop:
    """Threads creating Pods through the API server until stopped (or the bounds are reached)."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api_client)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.attempted = 0
        self.created: list[str] = []
        self.failures: list[tuple[float, str]] = []
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(CREATORS)]

    def run(self, index: int) -> None:
        from kubernetes.client.exceptions import ApiException

        n = 0
        period = CREATORS / RATE
        next_at = time.monotonic() + index * period / CREATORS
        while not self.stop.is_set():
            self.stop.wait(max(0.0, next_at - time.monotonic()))
            next_at += period
            with self.lock:
                if self.attempted >= MAX_PODS or time.monotonic() - self.started > MAX_SECONDS:
                    return
                self.attempted += 1
            n += 1
            name = f"loop-{index}-{n}"
            try:
                out = self.core.create_namespaced_pod(NS, _pod(name))
                self.core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
                labels = out.metadata.labels or {}
                with self.lock:
                    if labels.get("aim-engine.io/gpu-model") == "MI300X":
                        self.created.append(name)
                    else:  # admitted without the webhook: not what Fail promises
                        self.failures.append((time.monotonic() - self.started, f"{name} admitted unmutated: {labels}"))
            except ApiException as e:
                message = e.body if isinstance(e.body, str) else str(e)
                with self.lock:
                    self.failures.append((time.monotonic() - self.started, f"{name}: {e.status} {message[:400]}"))
            except Exception as e:  # transport errors to the API server itself
                with self.lock:
                    self.failures.append((time.monotonic() - self.started, f"{name}: {e!r}"[:400]))

    def __enter__(self) -> CreationLoop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def _validator_pods(e2e: E2ECluster) -> dict[str, dict[str, Any]]:
    out = e2e.kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=recipe-validator", "-o", "json", check=True)
    return {p["metadata"]["name"]: p for p in json.loads(out.stdout)["items"]}


@pytest.fixture(scope="module")
def rollout_release(e2e: E2ECluster) -> Any:
    chart = os.environ.get("AIM_ROLLOUT_CHART", str(ROOT / "chart"))
    # A previous run's namespace may still be terminating.
    wait_for(
        lambda: "Terminating" not in e2e.kubectl("get", "namespace", NS, "-o", "jsonpath={.status.phase}").stdout,
        timeout=180,
        what=f"namespace {NS} of an earlier run deleted",
    )
    e2e.kubectl("create", "namespace", NS)
    sets = [
        "aim_engine.model_id=Qwen/Qwen3-32B",
        "admission_controller.enabled=true",
        "admission_controller.webhook.failure_policy=Fail",
        # its webhook judges its own namespace only: while it rolls, no other module's Pod is refused
        f"admission_controller.webhook.namespaces={{{NS}}}",
        "workload.replicas=0",
        "model_cache.enabled=false",
        "monitoring.enabled=false",
        *(f"{k}={v}" for k, v in IMAGE_VALUES.items()),
        *(kv for kv in os.environ.get("AIM_ROLLOUT_SET", "").split(",") if kv),
    ]
    out = e2e.helm("install", RELEASE, chart, "-n", NS, *(x for kv in sets for x in ("--set", kv)), "--wait", "--timeout", "5m")
    if out.returncode != 0:
        diag = e2e.kubectl("get", "pods,jobs,events", "-n", NS).stdout
        e2e.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "3m")
        e2e.kubectl("delete", "namespace", NS, "--wait=false")
        raise AssertionError(f"helm install failed:\n{out.stdout}\n{out.stderr}\n{diag}")
    try:
        yield e2e
    finally:
        e2e.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "3m")
        e2e.kubectl("delete", "namespace", NS, "--wait=false")


def test_rollout_restart_of_the_webhook_refuses_no_pod(rollout_release: E2ECluster) -> None:
    e2e = rollout_release
    old = _validator_pods(e2e)
    before = set(old)
    assert len(before) == 2
    ips = {p["status"].get("podIP"): f"old {name}" for name, p in old.items()}
    # The old replicas' logs to their end: they must drain before they stop.
    followers = [
        subprocess.Popen(
            [str(ROOT / ".tools/bin/kubectl"), "logs", "-f", "-n", NS, pod],
            env=e2e.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pod in sorted(before)
    ]
    with CreationLoop(e2e.kubeconfig) as loop:
        time.sleep(5)  # the loop is running and Pods are admitted
        warm = (loop.attempted, len(loop.failures))
        restarted_at = time.monotonic() - loop.started
        restart = e2e.kubectl("rollout", "restart", f"deployment/{VALIDATOR}", "-n", NS)
        assert restart.returncode == 0, restart.stderr
        status = e2e.run(
            str(ROOT / ".tools/bin/kubectl"), "rollout", "status", f"deployment/{VALIDATOR}", "-n", NS, "--timeout=180s"
        )
        assert status.returncode == 0, status.stdout + status.stderr
        # The old replicas drain and exit after the rollout reports done: keep creating until they are gone.
        wait_for(lambda: not (before & set(_validator_pods(e2e))), timeout=90, what="the old webhook pods gone")
        time.sleep(5)
        rollout_seconds = time.monotonic() - loop.started
    logs = []
    for f in followers:
        try:
            logs.append(f.communicate(timeout=30)[0])
        except subprocess.TimeoutExpired:
            f.kill()
            logs.append(f.communicate()[0])
    new = _validator_pods(e2e)
    after = set(new)
    ips.update({p["status"].get("podIP"): f"new {name}" for name, p in new.items()})
    kinds = Counter(msg.split(":", 1)[1].strip()[:60] for _, msg in loop.failures)
    print(
        f"\nrollout of {VALIDATOR}: {loop.attempted} Pod creations attempted in {rollout_seconds:.0f} s "
        f"({warm[0]} before the restart), {len(loop.created)} admitted with the recipe injected, "
        f"{len(loop.failures)} failed; webhook pods {sorted(before)} -> {sorted(after)}"
    )
    for kind, n in kinds.most_common(5):
        print(f"  {n} x {kind}")
    if loop.failures:  # a timeline to tell which replica, in which phase, failed what
        print(f"  restart at {restarted_at:.1f} s; pods by IP: {ips}")
        for at, msg in loop.failures[:10]:
            tail = msg[msg.find("message") : msg.find("message") + 330] if "message" in msg else msg[:330]
            print(f"  {at:.2f} s: {tail}")
        events = e2e.kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp").stdout
        print("\n".join(line for line in events.splitlines() if "validator" in line)[-3000:])
    assert warm[1] == 0, loop.failures[:3]
    assert loop.attempted > 100, "the loop created too few Pods to say anything"
    assert not (before & after) and len(after) == 2
    assert loop.failures == [], loop.failures[:5]
    for text in logs:
        assert "SIGTERM: draining for 5 s" in text, text[-2000:]
    assert len(loop.created) == loop.attempted
