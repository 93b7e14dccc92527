"""The end-to-end suite's cluster: the local one (tools/realcluster.py: a real kubelet node that runs
our images, kwok GPU nodes), brought up once by tools/e2e.py (`make e2e`), which runs the modules in
lanes side by side against it (AIM_E2E_KUBECONFIG, AIM_E2E_LOCAL=1) and tears it down; `make
demo`'s checks run on it too. Run alone (`pytest tests/e2e/...`), a session starts and stops its own;
AIM_E2E_KUBECONFIG also names any other cluster (kind: `make e2e-kind`; a running `make cluster-up`).

With AIM_E2E_START_KWOK=1 the suite runs kwok next to that cluster and adds the GPU nodes, CRDs and
volumes it expects (tools/realcluster.prepare).

The engine (AIM_E2E_ENGINE): `simulator` (the default, `make e2e`) serves the tests of the chart,
rules, dashboards, alerts, autoscaling and tune's workflow with aim-engine-sim (the chart's
workload.engine=simulator, from the vLLM CPU image); `vllm` (`make test-engine`) runs them on the
real vLLM CPU engine, with the long runs marked `engine`. The real engine serves in every run: the
demo's CPU release and tests/e2e/test_01_real_engine.py.

Each module's seconds are recorded for `make test`'s stage table (tools/stages.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import realcluster  # noqa: E402
import stages  # noqa: E402

ENGINE = os.environ.get("AIM_E2E_ENGINE", "simulator")
if ENGINE not in ("simulator", "vllm"):
    raise SystemExit(f"AIM_E2E_ENGINE must be simulator or vllm, not {ENGINE!r}")

IMAGE_VALUES = {
    "image.aim_engine.repository": os.environ.get("AIM_E2E_IMAGE_REPOSITORY", realcluster.LOCAL_IMAGE_REPOSITORY),
    "image.aim_engine.tag": os.environ.get("AIM_E2E_IMAGE_TAG", realcluster.LOCAL_IMAGE_TAG),
    "image.aim_engine.pull_policy": "IfNotPresent",
}


@dataclass
class E2ECluster:
    kubeconfig: Path
    local: bool

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(self, *cmd: str, check: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, input=stdin, check=False, timeout=600)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def kubectl(self, *args: str, check: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(str(ROOT / ".tools/bin/kubectl"), *args, check=check, stdin=stdin)

    def helm(self, *args: str, check: bool = False, helm4: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run(str(ROOT / ".tools/bin" / ("helm4" if helm4 else "helm")), *args, check=check)

    def helm_test(self, release: str, namespace: str, *, timeout: str) -> subprocess.Popen[str]:
        """`helm test` started in the background (the chart's benchmark client), output combined."""
        return subprocess.Popen(
            [str(ROOT / ".tools/bin/helm"), "test", release, "-n", namespace, "--timeout", timeout],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def engine_sets(*, ttft_ms: float = 20, itl_ms: float = 5, itl_per_seq_ms: float = 0) -> list[str]:
    """helm --set arguments for the session's engine: the simulator's latencies, or nothing (vLLM)."""
    if ENGINE == "vllm":
        return []
    return [
        "--set", "workload.engine=simulator",
        "--set", f"workload.simulator.ttft_ms={ttft_ms:g}",
        "--set", f"workload.simulator.itl_ms={itl_ms:g}",
        "--set", f"workload.simulator.itl_per_seq_ms={itl_per_seq_ms:g}",
    ]  # fmt: skip


# For the releases of the modules that run side by side (tools/e2e.py) and are not a seed command
# verbatim: their two webhook replicas ask for a sliver of the real node's two cores (the chart's
# default is 100m each), so that more releases fit beside each other. What they test is unchanged.
SMALL_WEBHOOK = ["--set", "admission_controller.resources.requests.cpu=20m"]


def own_webhook(*namespaces: str) -> list[str]:
    """SMALL_WEBHOOK, and the release's webhook kept to these namespaces
    (admission_controller.webhook.namespaces): while it starts, or is taken down by a test, it
    refuses no Pod of the modules beside it (a seed command's release, verbatim, sees them all)."""
    return [*SMALL_WEBHOOK, "--set", "admission_controller.webhook.namespaces={" + ",".join(namespaces) + "}"]


_FAILED: set[str] = set()


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
        _FAILED.add(item.module.__name__ if item.module else "")


@pytest.fixture(scope="module", autouse=True)
def _module_stage(request: pytest.FixtureRequest, e2e: E2ECluster) -> Iterator[None]:
    """The module's seconds in the stage table (after the cluster is up: that is a stage of its own)."""
    t0, start = time.monotonic(), time.time()
    yield
    name = request.module.__name__
    stages.record(f"e2e: {name.rsplit('.', 1)[-1]}", time.monotonic() - t0, "failed" if name in _FAILED else "ran", started=start)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    external = os.environ.get("AIM_E2E_KUBECONFIG")
    if external:
        kwok = None
        if os.environ.get("AIM_E2E_START_KWOK"):
            log = (tmp_path_factory.mktemp("kwok") / "kwok.log").open("wb")
            kwok = subprocess.Popen(
                [
                    str(ROOT / ".tools/bin/kwok"),
                    "-c",
                    str(ROOT / ".tools/kwok/stages.yaml"),
                    f"--kubeconfig={external}",
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            realcluster.prepare(Path(external))
            time.sleep(5)
        try:
            # tools/e2e.py's lanes: the local cluster it brought up for them
            yield E2ECluster(Path(external), local=os.environ.get("AIM_E2E_LOCAL") == "1")
        finally:
            if kwok is not None:
                kwok.terminate()
                kwok.wait(timeout=20)
        return
    if os.geteuid() != 0:
        pytest.fail("the local e2e cluster needs root (containerd, kubelet, iptables): run `sudo make e2e`")
    state = tmp_path_factory.mktemp("cluster")
    t0, start = time.monotonic(), time.time()
    c = realcluster.up(state)
    stages.record("e2e: cluster up", time.monotonic() - t0, "ran", started=start)
    try:
        yield E2ECluster(c.kubeconfig, local=True)
    finally:
        t0, start = time.monotonic(), time.time()
        left = realcluster.down(state)
        stages.record("e2e: cluster down", time.monotonic() - t0, "failed" if left else "ran", started=start)
        assert not left, f"teardown left processes behind: {left}"


def require_monitoring_stack(e2e: E2ECluster) -> None:
    """The local cluster's Prometheus (tools/realcluster.py up brings it and the vLLM image); another
    cluster without it skips the real-engine tests."""
    have = e2e.kubectl("get", "prometheus", realcluster.PROMETHEUS_NAME, "-n", realcluster.MONITORING_NS).returncode == 0
    if not e2e.local and not have:
        pytest.skip("this cluster has no local monitoring stack and vLLM image (tools/realcluster.py up brings them)")
    assert have, "the local cluster came up without its monitoring stack"
