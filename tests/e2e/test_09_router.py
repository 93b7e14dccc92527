"""The router in front of a release's engine replicas (chart: router.*), on the local cluster with the
engine simulator (two replicas of a small CPU recipe; `make test-engine` runs it on the real engine
too if its job is listed there).

A Kubernetes Service balances connections: one client's keep-alive connections stay on the replicas
they were opened to. The router (vLLM's router, in the aim-engine image) balances requests. What
each replica served is counted from each engine pod's own `vllm:request_success_total`, read from
the pod, not from the router's word. Checked here:

- a keep-alive client through service/<release>-service (the router) → each of two replicas serves
  at least 30 % of the requests; the same client through service/<release>-engine (the engine pods
  behind a plain Service) is measured in the same test, for contrast, and printed;
- a scale-down from 2 to 1 while the client runs → 0 failed requests (the router drops the pod
  when it starts terminating; the pod drains what it has, workload.drain);
- an engine pod killed mid-load (deleted with no grace period) → the router stops sending to it;
  failed requests ≤ those in flight on it when it was killed (counts printed);
- the router's pod is not a recipe workload: the webhook leaves it alone (no recipe labels), and
  an engine pod that bypasses the recipe is still refused;
- no Ready engine → the router answers 503 at once, it never hangs;
- a recipe change (`helm upgrade` after the custom recipe's ConfigMap changed) under that client:
  the selector decides how the Deployment replaces its pods (surge where one more pod fits) and the
  reconcile Job rolls the Deployment; with 2 replicas, and with 1 replica and room, 0 requests fail;
  with no room (Recreate) the gap is measured and printed.

Traffic goes only to the cluster's own Services and pods, bounded in count and time."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

import realcluster
from localcluster import wait_for

from .conftest import ENGINE, IMAGE_VALUES, ROOT, E2ECluster, engine_sets, own_webhook

NS = "aim-engine-router"
RELEASE = "route"
CUSTOM_CM = "tiny-llama-routed"
RECIPE_ID = "tiny-llama-cpu-x86-bf16-routed"
CATALOG_RECIPE = ROOT / "recipes" / "catalog" / "tiny-llama" / "tiny-llama-cpu-x86-bf16.yaml"
CLIENT_THREADS = 4  # one keep-alive connection each
MAX_TOKENS = 8
SHARE = 0.30  # each of two replicas serves at least this share through the router


def small_recipe(*, max_num_seqs: int = 16) -> dict[str, Any]:
    recipe = yaml.safe_load(CATALOG_RECIPE.read_text())
    recipe["recipe_id"] = RECIPE_ID
    recipe["config"]["args"]["max_num_seqs"] = max_num_seqs  # changed by the upgrade tests: a new recipe
    recipe["description"] = "aim-engine/tiny-llama on vLLM's CPU build, a sliver of a core (the router e2e test)"
    recipe["resources"]["requests"] = {"cpu": "100m" if ENGINE == "simulator" else "500m", "memory": "5Gi"}
    recipe["resources"]["limits"] = {"cpu": "1", "memory": "6Gi"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CUSTOM_CM, "namespace": NS},
        "data": {"recipe.yaml": yaml.safe_dump(recipe, sort_keys=False)},
    }


@dataclass
class Load:
    """A keep-alive client: CLIENT_THREADS connections, each sending completions one after another
    until stopped or `limit` requests in all have been sent."""

    host: str
    port: int
    limit: int
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    sent: int = 0
    in_flight: int = 0
    failed_at: list[float] = field(default_factory=list)  # monotonic times of the failures
    served_at: list[float] = field(default_factory=list)  # and of the answers
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for _ in range(CLIENT_THREADS):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self.sent >= self.limit:
                return False
            self.sent += 1
            self.in_flight += 1
            return True

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        body = json.dumps({"model": realcluster.TEST_MODEL_ID, "prompt": "route me", "max_tokens": MAX_TOKENS})
        while self._take():
            error = ""
            try:
                conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    error = f"HTTP {resp.status}: {data[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                error = f"{type(e).__name__}: {e}"
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            with self._lock:
                self.in_flight -= 1
                if error:
                    self.failed.append(error)
                    self.failed_at.append(time.monotonic())
                else:
                    self.ok += 1
                    self.served_at.append(time.monotonic())
        conn.close()

    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def stop(self) -> Load:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=90)
        return self


def get(e2e: E2ECluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(e2e.kubectl("get", *args, "-o", "json", check=True).stdout))


def engine_pods(e2e: E2ECluster, *, ready_only: bool = True) -> list[dict[str, Any]]:
    sel = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=inference"
    pods = [p for p in get(e2e, "pods", "-n", NS, "-l", sel)["items"] if "deletionTimestamp" not in p["metadata"]]
    if ready_only:
        pods = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    return pods


def pod_metric(ip: str, family: str, *, port: int = 8000) -> float:
    """The sum of one family's samples on a pod's own /metrics (an engine's at 8000 by default)."""
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((family + "{", family + " ")))


def served(ips: list[str]) -> dict[str, float]:
    return {ip: pod_metric(ip, "vllm:request_success_total") for ip in ips}


def run_load(host: str, *, requests: int, timeout: float = 180) -> Load:
    load = Load(host, 8000, requests).start()
    wait_for(load.done, timeout=timeout, what=f"{requests} requests through {host}")
    return load.stop()


def service_ip(e2e: E2ECluster, name: str) -> str:
    return str(get(e2e, "service", name, "-n", NS)["spec"]["clusterIP"])


def scale(e2e: E2ECluster, replicas: int) -> None:
    e2e.kubectl("scale", "deployment", RELEASE, "-n", NS, f"--replicas={replicas}", check=True)


def wait_ready_replicas(e2e: E2ECluster, n: int, *, timeout: float = 300) -> list[dict[str, Any]]:
    return list(wait_for(lambda: p if len(p := engine_pods(e2e)) == n else None, timeout=timeout, what=f"{n} Ready engine pods"))


def router_workers(e2e: E2ECluster) -> int:
    """vllm_router_active_workers from the router's own metrics (through its Service)."""
    return int(pod_metric(service_ip(e2e, f"{RELEASE}-router"), "vllm_router_active_workers", port=29000))


@pytest.fixture(scope="module")
def routed(e2e: E2ECluster) -> Iterator[E2ECluster]:
    e2e.kubectl("create", "namespace", NS, check=True)
    e2e.kubectl("apply", "-f", "-", stdin=json.dumps(small_recipe()), check=True)
    repository, _, tag = realcluster.vllm_image().rpartition(":")
    values = [
        "--set", f"aim_engine.model_id={realcluster.TEST_MODEL_ID}",
        "--set", "aim_engine.hardware.gpu_type=CPU-x86",
        "--set", f"aim_engine.custom_recipe={CUSTOM_CM}",
        "--set-string", "aim_engine.env_vars.HF_HUB_OFFLINE=1",
        "--set", f"image.vllm.repository={repository}",
        "--set", f"image.vllm.tag={tag}",
        "--set", "image.vllm.pull_policy=Never",
        *[a for k, v in IMAGE_VALUES.items() for a in ("--set", f"{k}={v}")],
        "--set", "service.type=ClusterIP",
        "--set", "workload.replicas=2",
        "--set", "model_cache.access_modes={ReadWriteMany}",
        "--set", "benchmark.enabled=false",
        # the router's own health checks every 2 s (besides pod readiness): a killed pod is dropped fast
        "--set", "router.health_check_interval_seconds=2",
        *engine_sets(ttft_ms=20, itl_ms=5),
        *own_webhook(NS),
    ]  # fmt: skip
    try:
        e2e.helm("install", RELEASE, str(ROOT / "chart"), "-n", NS, *values, "--wait", "--timeout", "8m", check=True)
        wait_ready_replicas(e2e, 2)
        wait_for(lambda: router_workers(e2e) == 2, timeout=120, what="the router watching both engine pods")
        yield e2e
    finally:
        print(e2e.kubectl("get", "deploy,pods,endpoints,events", "-n", NS).stdout[-4000:])
        print(e2e.kubectl("logs", f"deployment/{RELEASE}-router", "-n", NS, "--tail=40").stdout[-4000:])
        e2e.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m")
        e2e.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")


def test_one_keep_alive_client_is_spread_over_both_replicas_by_the_router_not_by_the_service(routed: E2ECluster) -> None:
    e2e = routed
    ips = [p["status"]["podIP"] for p in engine_pods(e2e)]
    shares: dict[str, dict[str, float]] = {}
    for via in (f"{RELEASE}-engine", f"{RELEASE}-service"):  # the plain Service first, for contrast
        before = served(ips)
        load = run_load(service_ip(e2e, via), requests=80)
        after = served(ips)
        assert not load.failed, load.failed[:5]
        counts = {ip: after[ip] - before[ip] for ip in ips}
        assert sum(counts.values()) == load.ok == 80, (counts, load.ok)
        shares[via] = {ip: n / load.ok for ip, n in counts.items()}
    print(
        f"\n{CLIENT_THREADS} keep-alive connections, 80 requests each way; each replica's share (its own request_success_total):"
    )
    for via, s in shares.items():
        print(f"  service/{via}: " + ", ".join(f"{ip} {v:.0%}" for ip, v in s.items()))
    assert all(v >= SHARE for v in shares[f"{RELEASE}-service"].values()), shares


def test_a_scale_down_under_load_fails_no_request(routed: E2ECluster) -> None:
    e2e = routed
    load = Load(service_ip(e2e, f"{RELEASE}-service"), 8000, limit=5000).start()
    try:
        wait_for(lambda: load.ok >= 20, timeout=60, what="the load under way")
        scale(e2e, 1)
        wait_for(lambda: len(engine_pods(e2e, ready_only=False)) == 1, timeout=120, what="one engine pod left")
        wait_for(lambda: router_workers(e2e) == 1, timeout=60, what="the router down to one engine")
        mark = load.ok
        wait_for(lambda: load.ok >= mark + 20, timeout=60, what="requests served after the scale-down")
    finally:
        load.stop()
    print(f"\nscale-down 2 → 1 under load: {load.ok} served, {len(load.failed)} failed")
    assert not load.failed, load.failed[:5]
    scale(e2e, 2)
    wait_ready_replicas(e2e, 2)
    wait_for(lambda: router_workers(e2e) == 2, timeout=120, what="the router watching both engine pods again")


def test_an_engine_killed_mid_load_is_dropped_and_fails_at_most_what_it_had_in_flight(routed: E2ECluster) -> None:
    e2e = routed
    load = Load(service_ip(e2e, f"{RELEASE}-service"), 8000, limit=5000).start()
    try:
        wait_for(lambda: load.ok >= 20, timeout=60, what="the load under way")
        victim = engine_pods(e2e)[0]
        in_flight = pod_metric(victim["status"]["podIP"], "vllm:num_requests_running") + pod_metric(
            victim["status"]["podIP"], "vllm:num_requests_waiting"
        )
        e2e.kubectl(
            "delete", "pod", victim["metadata"]["name"], "-n", NS, "--grace-period=0", "--force", "--wait=false", check=True
        )
        mark = load.ok
        wait_for(lambda: load.ok >= mark + 40, timeout=90, what="requests served after the kill")
    finally:
        load.stop()
    print(
        f"\nengine pod {victim['metadata']['name']} killed under load: {load.ok} served, {len(load.failed)} failed, "
        f"{in_flight:.0f} in flight on it at the kill"
    )
    assert len(load.failed) <= max(in_flight, 1), load.failed[:5]
    wait_ready_replicas(e2e, 2)


def test_the_webhook_leaves_the_router_alone_and_still_refuses_an_engine_pod_bypassing_the_recipe(routed: E2ECluster) -> None:
    e2e = routed
    (router,) = get(e2e, "pods", "-n", NS, "-l", f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=router")[
        "items"
    ]
    assert not any(k.startswith("aim-engine.io/") for k in router["metadata"].get("labels", {})), router["metadata"]["labels"]
    # An engine pod as the chart makes it, asking for a GPU its CPU recipe does not have.
    engine = engine_pods(e2e)[0]
    spec = {k: v for k, v in engine["spec"].items() if k not in ("nodeName",)}
    spec["containers"][0].setdefault("resources", {}).setdefault("limits", {})["nvidia.com/gpu"] = "1"
    rogue = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rogue-engine", "namespace": NS, "labels": engine["metadata"]["labels"]},
        "spec": spec,
    }
    out = e2e.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(rogue))
    assert out.returncode != 0, "a pod bypassing the recipe was admitted"
    assert "denied the request" in out.stderr, out.stderr
    print(f"\nthe webhook refused an engine pod bypassing the recipe: {out.stderr.strip()[:300]}")


def test_with_no_ready_engine_the_router_answers_503_at_once(routed: E2ECluster) -> None:
    e2e = routed
    scale(e2e, 0)
    try:
        wait_for(lambda: not engine_pods(e2e, ready_only=False), timeout=120, what="no engine pod")
        wait_for(lambda: router_workers(e2e) == 0, timeout=60, what="the router with no engine")
        conn = http.client.HTTPConnection(service_ip(e2e, f"{RELEASE}-service"), 8000, timeout=10)
        t0 = time.monotonic()
        body = json.dumps({"model": realcluster.TEST_MODEL_ID, "prompt": "anyone?", "max_tokens": 4})
        conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read().decode()
        took = time.monotonic() - t0
        conn.close()
        print(f"\nno Ready engine: HTTP {resp.status} in {took:.2f} s: {text[:200]}")
        assert resp.status == 503, (resp.status, text)
        assert took < 5
    finally:
        scale(e2e, 2)


# ---- Recipe changes under load (issue 26): nothing lost that need not be ----

FINGERPRINT = "aim-engine.io/recipe-fingerprint"


def fingerprints(e2e: E2ECluster) -> set[str]:
    return {p["metadata"].get("annotations", {}).get(FINGERPRINT, "") for p in engine_pods(e2e, ready_only=False)}


def rolled(e2e: E2ECluster, *, old: set[str], replicas: int) -> bool:
    sel = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=inference"
    every = get(e2e, "pods", "-n", NS, "-l", sel)["items"]  # terminating ones too
    ready = engine_pods(e2e)
    return (
        len(every) == replicas
        and len(ready) == replicas
        and not any(p["metadata"].get("annotations", {}).get(FINGERPRINT) in old for p in every)
    )


def change_recipe_under_load(e2e: E2ECluster, *, max_num_seqs: int, replicas: int) -> tuple[dict[str, Any], Load, float]:
    """Edit the custom recipe, `helm upgrade --reuse-values` (the hook selects the new recipe and
    decides the strategy; the reconcile Job rolls the Deployment) while a keep-alive client runs
    through service/<release>-service; returns the decision, the load and the seconds it took."""
    old = fingerprints(e2e)
    load = Load(service_ip(e2e, f"{RELEASE}-service"), 8000, limit=20_000).start()
    t0 = time.monotonic()
    try:
        wait_for(lambda: load.ok >= 20, timeout=60, what="the load under way")
        e2e.kubectl("apply", "-f", "-", stdin=json.dumps(small_recipe(max_num_seqs=max_num_seqs)), check=True)
        e2e.helm("upgrade", RELEASE, str(ROOT / "chart"), "-n", NS, "--reuse-values", "--wait", "--timeout", "5m", check=True)
        wait_for(lambda: rolled(e2e, old=old, replicas=replicas), timeout=300, what="every engine pod on the new recipe")
        mark = load.ok
        wait_for(lambda: load.ok >= mark + 20, timeout=60, what="requests served after the rollout")
    finally:
        load.stop()
    took = time.monotonic() - t0
    plan = json.loads(get(e2e, "configmap", f"{RELEASE}-recipe-config", "-n", NS)["data"]["upgrade.json"])
    strategy = get(e2e, "deployment", RELEASE, "-n", NS)["spec"]["strategy"]
    print(
        f"\nrecipe change, {replicas} replica(s), strategy {plan['strategy']} ({strategy}): {load.ok} served, "
        f"{len(load.failed)} failed, {took:.0f} s; the selector: {plan['reason']}"
    )
    return plan, load, took


def gap_seconds(load: Load) -> float:
    """The longest time between two answers while requests failed (a Recreate's gap)."""
    if not load.failed_at:
        return 0.0
    first, last = min(load.failed_at), max(load.failed_at)
    before = max((t for t in load.served_at if t < first), default=first)
    after = min((t for t in load.served_at if t > last), default=last)
    return after - before


def test_a_recipe_change_with_two_replicas_fails_no_request(routed: E2ECluster) -> None:
    e2e = routed
    wait_ready_replicas(e2e, 2)
    wait_for(lambda: router_workers(e2e) == 2, timeout=120, what="the router watching both engine pods")
    plan, load, _ = change_recipe_under_load(e2e, max_num_seqs=12, replicas=2)
    assert plan["strategy"] in ("surge", "rolling"), plan
    job = e2e.kubectl("logs", "-n", NS, "-l", "app.kubernetes.io/component=recipe-validator-reconcile", "--tail=-1").stdout
    assert f"through a rollout of deployment {RELEASE}" in job, job
    assert not load.failed, load.failed[:5]


def test_a_recipe_change_with_one_replica_fails_none_with_room_and_says_the_gap_without(routed: E2ECluster) -> None:
    e2e = routed
    sets = ["--set", "workload.replicas=1", "--set", "router.enabled=true"]
    e2e.helm("upgrade", RELEASE, str(ROOT / "chart"), "-n", NS, "--reuse-values", *sets, "--wait", "--timeout", "5m", check=True)
    wait_ready_replicas(e2e, 1)
    wait_for(lambda: router_workers(e2e) == 1, timeout=120, what="the router down to one engine")
    plan, load, _ = change_recipe_under_load(e2e, max_num_seqs=8, replicas=1)
    if plan["strategy"] == "surge":
        assert not load.failed, load.failed[:5]
    else:
        assert plan["strategy"] == "recreate", plan
        print(f"no room for a second pod: Recreate, {len(load.failed)} failed over a gap of {gap_seconds(load):.1f} s")
