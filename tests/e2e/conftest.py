"""The end-to-end suite's cluster: the local one (tools/realcluster.py: a real kubelet node that runs
our images, kwok GPU nodes), started for the session and torn down after it, or any cluster named
by AIM_E2E_KUBECONFIG (kind: `make e2e-kind`; a running `make cluster-up`).

With AIM_E2E_START_KWOK=1 the suite runs kwok next to that cluster and adds the GPU nodes, CRDs and
volumes it expects (tools/realcluster.prepare)."""

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
            yield E2ECluster(Path(external), local=False)
        finally:
            if kwok is not None:
                kwok.terminate()
                kwok.wait(timeout=20)
        return
    if os.geteuid() != 0:
        pytest.fail("the local e2e cluster needs root (containerd, kubelet, iptables): run `sudo make e2e`")
    state = tmp_path_factory.mktemp("cluster")
    c = realcluster.up(state)
    try:
        yield E2ECluster(c.kubeconfig, local=True)
    finally:
        left = realcluster.down(state)
        assert not left, f"teardown left processes behind: {left}"


def require_monitoring_stack(e2e: E2ECluster) -> None:
    """The local cluster's Prometheus (tools/realcluster.py up brings it and the vLLM image); another
    cluster without it skips the real-engine tests."""
    have = e2e.kubectl("get", "prometheus", realcluster.PROMETHEUS_NAME, "-n", realcluster.MONITORING_NS).returncode == 0
    if not e2e.local and not have:
        pytest.skip("this cluster has no local monitoring stack and vLLM image (tools/realcluster.py up brings them)")
    assert have, "the local cluster came up without its monitoring stack"
