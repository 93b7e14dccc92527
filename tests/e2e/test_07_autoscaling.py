"""Autoscaling on the engine's own signals, for real: KEDA (built from its Go module, running in the
local cluster behind the API server's aggregation layer) scales the chart's engine Deployment
through the chart's ScaledObject. The engine is the session's (conftest.ENGINE): the engine
simulator in `make e2e` (KEDA, the chart's triggers and the HPA are what is tested), vLLM's CPU build
in `make test-engine` (autoscaling on real replicas). A load (the chart's `helm test` benchmark: vLLM's own client, 32
requests in flight) scales it from 1 to 2 replicas on the recipe-capacity trigger (output tokens/s
over the recipe's expected tokens/s, here with a low target so that this node's throughput calls for
two). The chart puts its router in front of the replicas (router.enabled is on with autoscaling):
one client throughout, its keep-alive connections to the router, and once the second replica is
Ready the router sends it requests too (behind a plain Service the second replica served nothing
until the client was replaced). The load lasts until each replica has served SERVED_BY_EACH
requests since both were Ready, then the test stops it; it is bounded all the same (at most MAX_PROMPTS
requests per client and the client pod's deadline). When the load has ended the Deployment scales
back to 1 after the stabilization window. The timeline (replicas, ready replicas and the trigger's
input over time) is printed.

The queue trigger alone would flap here: once two engines of 16 sequences hold the 32 requests
nothing waits, so it asks for one again (production's 300 s scale-down stabilization absorbs that;
this test shortens the window to 10 s). Output tokens/s does not drop when a replica is added, so
the capacity trigger holds the count while the load lasts.

The recipe is the catalog's CPU recipe for the test model under its own id with half a core
requested and one core at most per replica, so that two replicas, their client and the cluster's
own pods fit the 2-core node and a second replica can start while the first serves."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

import realcluster
from localcluster import wait_for

from .conftest import ENGINE, IMAGE_VALUES, ROOT, E2ECluster, engine_sets, own_webhook, require_monitoring_stack
from .dashboards import dashboard_queries, is_router_query

NS = "aim-engine-scale"
RELEASE = "scale"
CUSTOM_CM = "tiny-llama-small"
RECIPE_ID = "tiny-llama-cpu-x86-bf16-small"
CATALOG_RECIPE = ROOT / "recipes" / "catalog" / "tiny-llama" / "tiny-llama-cpu-x86-bf16.yaml"
DEPLOYMENT = RELEASE
MAX_PROMPTS = 20000  # the load's bound: about 15 minutes of this node's throughput
SERVED_BY_EACH = 20  # requests each replica serves before the test stops the load


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    rows: list[tuple[float, int, int, str]] = field(default_factory=list)

    def add(self, replicas: int, ready: int, note: str = "", *, sample: bool = False) -> None:
        """A row; a `sample` is kept only when the counts changed or 10 s have passed."""
        now = time.monotonic() - self.t0
        if sample and self.rows:
            last = self.rows[-1]
            if (last[1], last[2]) == (replicas, ready) and now - last[0] < 10:
                return
        self.rows.append((now, replicas, ready, note))

    def text(self) -> str:
        return "\n".join(f"  t={t:6.0f} s  replicas {r}  ready {rd}  {n}" for t, r, rd, n in self.rows)


def small_recipe() -> dict[str, Any]:
    recipe = yaml.safe_load(CATALOG_RECIPE.read_text())
    recipe["recipe_id"] = RECIPE_ID
    recipe["description"] = "aim-engine/tiny-llama on vLLM's CPU build with half a core requested (the autoscaling e2e test)"
    # The simulator needs a sliver of a core (the lanes beside this one share the node's two).
    recipe["resources"]["requests"]["cpu"] = "100m" if ENGINE == "simulator" else "500m"
    # One core at most per replica: an engine serving a load busy-polls every core it may use, and a
    # second replica starting beside an unlimited one did not become Ready in ten minutes (with the
    # load at its end it took five).
    recipe["resources"]["limits"]["cpu"] = "1"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CUSTOM_CM, "namespace": NS},
        "data": {"recipe.yaml": yaml.safe_dump(recipe, sort_keys=False)},
    }


def query_all(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return list(json.loads(r.read())["data"]["result"])


def query(prometheus: str, expr: str) -> float | None:
    result = query_all(prometheus, expr)
    return float(result[0]["value"][1]) if result else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@pytest.fixture(scope="module")
def scaled(e2e: E2ECluster) -> Iterator[tuple[E2ECluster, str]]:
    require_monitoring_stack(e2e)
    if not (realcluster.IMAGES / "keda.json").exists():
        pytest.fail("the KEDA images are missing: run make images")
    if ENGINE == "vllm":  # the node's two CPUs serve one real engine at a time: the monitoring test's must be gone
        wait_for(
            lambda: e2e.kubectl("get", "namespace", "aim-engine-perf").returncode != 0, timeout=300, what="aim-engine-perf gone"
        )
    realcluster.install_keda(e2e.kubeconfig)
    prometheus = realcluster.prometheus_url(e2e.kubeconfig)
    repository, _, tag = realcluster.vllm_image().rpartition(":")
    e2e.kubectl("create", "namespace", NS, check=True)
    e2e.kubectl("apply", "-f", "-", stdin=json.dumps(small_recipe()), check=True)
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
        "--set", "monitoring.enabled=true",
        "--set", "monitoring.prometheus.scrape_interval=5s",
        # every replica mounts the one cache: the chart asks for ReadWriteMany when replicas can be
        # more than one (the local volumes are hostPaths offering it)
        "--set", "model_cache.access_modes={ReadWriteMany}",
        "--set", "autoscaling.enabled=true",
        "--set", f"autoscaling.prometheus_url={prometheus}",
        "--set", "autoscaling.max_replicas=2",
        "--set", "autoscaling.polling_interval_seconds=5",
        "--set", "autoscaling.scale_up_stabilization_seconds=0",
        "--set", "autoscaling.scale_down_stabilization_seconds=10",
        "--set-json", "autoscaling.target_capacity_ratio=0.2",
        "--set", "autoscaling.waiting_requests_per_replica=4",
        "--set", "benchmark.concurrency=32",
        "--set", f"benchmark.num_prompts={MAX_PROMPTS}",
        "--set", "benchmark.timeout_seconds=1200",
        "--set", "benchmark.resources.requests.cpu=200m",
        "--set-json", "benchmark.max_error_ratio=0.01",
        *engine_sets(ttft_ms=20, itl_ms=5),
        *own_webhook(NS),
    ]  # fmt: skip
    try:
        e2e.run(
            str(ROOT / ".tools/bin/helm"),
            "install", RELEASE, str(ROOT / "chart"), "-n", NS, *values, "--wait", "--timeout", "10m",
            check=True,
        )  # fmt: skip
        yield e2e, prometheus
    finally:
        print(e2e.kubectl("get", "scaledobject,hpa,deploy,pods,events", "-n", NS).stdout[-5000:])
        e2e.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m")
        e2e.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")
        realcluster.uninstall_keda(e2e.kubeconfig)


def start_load(e2e: E2ECluster) -> subprocess.Popen[str]:
    """`helm test`: the chart's benchmark client at the values' conditions."""
    return e2e.helm_test(RELEASE, NS, timeout="20m")


def stop_load(e2e: E2ECluster, bench: subprocess.Popen[str]) -> None:
    """The client's pod goes (its run is then recorded as failed, not as a figure)."""
    e2e.kubectl("delete", "pod", f"{RELEASE}-benchmark", "-n", NS, "--wait=true", "--timeout=120s", check=True)
    bench.communicate(timeout=120)


def deployment(e2e: E2ECluster) -> dict[str, Any]:
    return json.loads(e2e.kubectl("get", "deployment", DEPLOYMENT, "-n", NS, "-o", "json", check=True).stdout)


def test_keda_scales_the_engine_up_under_load_and_back_down_after(scaled: tuple[E2ECluster, str]) -> None:
    e2e, prometheus = scaled
    so = json.loads(e2e.kubectl("get", "scaledobject", RELEASE, "-n", NS, "-o", "json", check=True).stdout)
    wait_for(
        lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in so_status(e2e)),
        timeout=120,
        what="the ScaledObject Ready (KEDA reached Prometheus)",
    )
    assert deployment(e2e)["spec"]["replicas"] == 1
    assert [t["name"] for t in so["spec"]["triggers"]] == ["recipe-capacity", "queue"]
    timeline = Timeline()
    timeline.add(1, 1, "before the load")
    load = (
        f'sum(rate(vllm:generation_tokens_total{{namespace="{NS}"}}[1m])) '
        f'/ scalar(max(aim_recipe_selected_expected_tokens_per_second{{namespace="{NS}",release="{RELEASE}"}}))'
    )
    bench = start_load(e2e)
    try:

        def observe() -> int:
            d = deployment(e2e)
            replicas, ready = d["spec"].get("replicas", 1), d["status"].get("readyReplicas", 0)
            timeline.add(replicas, ready, f"load {fmt(query(prometheus, load))} of the recipe's capacity", sample=True)
            if bench.poll() is not None and replicas < 2:
                raise AssertionError(
                    f"the load ended before the scale-up:\n{timeline.text()}\n{bench.stdout.read() if bench.stdout else ''}"
                )
            return replicas

        wait_for(lambda: observe() >= 2, timeout=300, what="KEDA scaling the Deployment to 2 replicas")
        up = timeline.rows[-1][0]

        def second_ready() -> bool:
            n = observe()
            return n >= 2 and deployment(e2e)["status"].get("readyReplicas", 0) >= 2

        wait_for(second_ready, timeout=600, what="the second replica Ready while the load lasts")
        timeline.add(2, 2, "second replica Ready")

        # The router in front of the replicas (router.enabled: on with autoscaling) follows the
        # scale-up: the same client's requests, on its keep-alive connections to the router, reach
        # the new replica (behind a plain Service they stayed on the first: the second served
        # nothing until the client was replaced). Counted from the second replica Ready on.
        def served() -> dict[str, float]:
            return {
                r["metric"]["pod"]: float(r["value"][1])
                for r in query_all(prometheus, f'sum by (pod) (vllm:request_success_total{{namespace="{NS}"}})')
            }

        at_ready = served()

        def both_served() -> dict[str, float] | None:
            observe()
            if bench.poll() is not None:
                raise AssertionError(f"the load ended before both replicas served:\n{timeline.text()}\n{served()}")
            now = {pod: n - at_ready.get(pod, 0.0) for pod, n in served().items()}
            return now if len(now) >= 2 and min(now.values()) >= SERVED_BY_EACH else None

        per_pod = wait_for(both_served, timeout=300, what=f"both replicas serving {SERVED_BY_EACH} requests")
        d = deployment(e2e)
        note = f"served per pod since both Ready, one client {per_pod}"
        timeline.add(d["spec"]["replicas"], d["status"].get("readyReplicas", 0), note)
        stop_load(e2e, bench)
        d = deployment(e2e)
        timeline.add(d["spec"]["replicas"], d["status"].get("readyReplicas", 0), "load stopped")
        ended = timeline.rows[-1][0]

        def scaled_down() -> bool:
            d = deployment(e2e)
            timeline.add(
                d["spec"].get("replicas", 1),
                d["status"].get("readyReplicas", 0),
                f"load {fmt(query(prometheus, load))} of the recipe's capacity",
                sample=True,
            )
            return bool(d["spec"].get("replicas") == 1)

        wait_for(scaled_down, timeout=300, what="KEDA scaling the Deployment back to 1 replica")
        down = timeline.rows[-1][0]
    finally:
        if bench.poll() is None:
            bench.kill()
        print(f"\nautoscaling timeline (KEDA, chart ScaledObject, engine {ENGINE}):\n" + timeline.text())
    print(f"scale-up {up:.0f} s after the load started; scale-down {down - ended:.0f} s after it ended")
    hpa = json.loads(e2e.kubectl("get", "hpa", "-n", NS, "-o", "json", check=True).stdout)["items"]
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpa] == [DEPLOYMENT]  # KEDA's HPA, driven by the real HPA controller


def so_status(e2e: E2ECluster) -> list[dict[str, Any]]:
    so = json.loads(e2e.kubectl("get", "scaledobject", RELEASE, "-n", NS, "-o", "json", check=True).stdout)
    return list(so.get("status", {}).get("conditions", []))


def test_the_dashboards_router_panels_show_the_router_in_front_of_the_replicas(scaled: tuple[E2ECluster, str]) -> None:
    """The router's panels (the Performance board's replica row) against this Prometheus: a release
    with one replica has no router, so the monitoring test leaves them to this one. One request for
    a model the release does not serve makes the router's error series (a non-retryable error, the
    engine's 404); a healthy run retries nothing, so the retries series is held to the router's own
    /metrics on loopback instead (tests/integration/test_router.py, a dead worker)."""
    e2e, prometheus = scaled
    service = json.loads(e2e.kubectl("get", "service", f"{RELEASE}-service", "-n", NS, "-o", "json", check=True).stdout)
    body = json.dumps({"model": "no-such-model", "prompt": "x", "max_tokens": 1}).encode()
    req = urllib.request.Request(
        f"http://{service['spec']['clusterIP']}:8000/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        urllib.request.urlopen(req, timeout=30).close()
        raise AssertionError("the router answered a request for a model the release does not serve")
    except urllib.error.HTTPError as e:
        assert e.code == 404, e.code
    checked, empty = [], []
    for pq in (q for q in dashboard_queries(namespace=NS, recipe=RECIPE_ID) if is_router_query(q)):
        if "vllm_router_retries_total" in pq.expr:
            continue
        try:
            wait_for(lambda e=pq.expr: query_all(prometheus, e) or None, timeout=60, what=pq.name)
            checked.append(pq.expr)
        except AssertionError:
            empty.append(f"{pq.name}: {pq.expr}")
    print(f"\nrouter panel queries with data: {len(checked)}")
    assert checked and not empty, "router panel queries without data:\n" + "\n".join(empty)


def test_the_webhook_stayed_ready_through_the_load_and_answered_within_a_second(scaled: tuple[E2ECluster, str]) -> None:
    """Through the load above (the suite's heaviest on the engine pods, a scale-up whose Pod the
    webhook admitted): the webhook's pods (the chart's PriorityClass by default) never failed a
    readiness probe nor restarted, and admission's p99 (its own histogram, scraped by the
    operator's Prometheus) stayed under a second."""
    e2e, prometheus = scaled
    webhook = f"{RELEASE}-recipe-validator"
    pods = json.loads(
        e2e.kubectl(
            "get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=recipe-validator", "-o", "json", check=True
        ).stdout
    )["items"]  # fmt: skip
    assert pods, "no webhook pod"
    assert all(p["spec"].get("priorityClassName") == f"{webhook}-{NS}" for p in pods), [
        p["spec"].get("priorityClassName") for p in pods
    ]
    restarts = {
        p["metadata"]["name"]: sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses", [])) for p in pods
    }
    events = json.loads(e2e.kubectl("get", "events", "-n", NS, "-o", "json", check=True).stdout)["items"]
    unhealthy = [
        f"{e['involvedObject']['name']}: {e.get('message', '')}"
        for e in events
        if e.get("reason") == "Unhealthy"
        and e["involvedObject"].get("name", "").startswith(webhook)
        and not e.get("message", "").startswith("Startup probe")  # before it first served
    ]
    window = "30m"
    p99 = query(
        prometheus,
        "histogram_quantile(0.99, sum by (le) (increase("
        f'aim_webhook_request_duration_seconds_bucket{{namespace="{NS}"}}[{window}])))',
    )
    reviews = query(prometheus, f'sum(increase(aim_webhook_request_duration_seconds_count{{namespace="{NS}"}}[{window}]))')
    print(
        f"\nwebhook through the load: {len(pods)} pod(s), restarts {restarts}, readiness failures {len(unhealthy)}, "
        f"admission p99 {fmt(p99)} s over {fmt(reviews)} review(s)"
    )
    assert not unhealthy, unhealthy
    assert not any(restarts.values()), restarts
    assert reviews and reviews >= 1, "no admission review scraped"
    assert p99 is not None and p99 < 1.0, p99
