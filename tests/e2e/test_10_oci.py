"""Installing from an OCI registry, the path a user's cluster takes (issue 28): `make publish`
(tools/publish.py) pushes our image and the chart into a registry on this machine's loopback
(crane's, in memory), and the release is installed from `oci://` with only the mirror set
(`global.imageRegistry`): every pod of the release (the certificate and selector hooks, the
webhook, the reconcile Job) runs the image the real node's containerd *pulled* from that registry
(through its hosts.toml registry config), not one imported into its store.

The release selects a recipe (kwok GPU nodes) but runs no engine (workload.replicas=0) and no model
cache: what it tests is the distribution path, not serving. Traffic goes only to loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import realcluster
from localcluster import free_port, wait_for

from .conftest import ROOT, E2ECluster, own_webhook

NS = "aim-engine-oci"
RELEASE = "oci"
CRANE = ROOT / ".tools" / "bin" / "crane"
PATH = "aim-engine"  # the registry path: <host>/aim-engine/aim-engine, as ghcr.io/aim-engine/aim-engine


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def registry(e2e: E2ECluster) -> Iterator[str]:
    host = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [str(CRANE), "registry", "serve", "--address", host], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: proc.poll() is None and _answers(host), timeout=30, what=f"crane's registry on {host}")
        realcluster.trust_registry(host)
        yield host
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        realcluster.forget_registry(host)


def get(e2e: E2ECluster, *args: str) -> Any:
    return json.loads(e2e.kubectl("get", *args, "-o", "json", check=True).stdout)


def test_an_install_from_oci_runs_images_the_node_pulled_from_the_registry(
    e2e: E2ECluster, registry: str, tmp_path: Path
) -> None:
    published = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "publish.py")],
        env={**os.environ, "REGISTRY": f"{registry}/{PATH}", "PLAIN_HTTP": "1", "DIST": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert published.returncode == 0, published.stdout + published.stderr
    print("\n" + published.stdout.strip())
    image = f"{registry}/{PATH}/aim-engine:0.1.0"
    digest = subprocess.run(
        [str(CRANE), "digest", "--insecure", image], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    e2e.kubectl("create", "namespace", NS, check=True)
    try:
        values = [
            "--set", "aim_engine.model_id=Qwen/Qwen3-8B",
            "--set", f"global.imageRegistry={registry}",  # ghcr.io/aim-engine/aim-engine -> <registry>/aim-engine/aim-engine
            "--set", "workload.replicas=0",
            "--set", "model_cache.enabled=false",
            "--set", "model_cache.prewarm.enabled=false",
            "--set", "benchmark.enabled=false",
            *own_webhook(NS),
        ]  # fmt: skip
        chart = f"oci://{registry}/{PATH}/charts/aim-engine"
        e2e.helm(
            "install",
            RELEASE,
            chart,
            "--version",
            "0.1.0",
            "--plain-http",
            "-n",
            NS,
            *values,
            "--wait",
            "--timeout",
            "5m",
            check=True,
        )
        webhook = wait_for(
            lambda: (
                [
                    p
                    for p in get(e2e, "pods", "-n", NS, "-l", "app.kubernetes.io/component=recipe-validator")["items"]
                    if any(c.get("ready") for c in p["status"].get("containerStatuses", []))
                ]
                or None
            ),
            timeout=120,
            what="a Ready webhook pod",
        )
        pulled = {
            c["name"]: (c["image"], c["imageID"])
            for p in get(e2e, "pods", "-n", NS)["items"]
            for c in p["status"].get("containerStatuses", []) + p["status"].get("initContainerStatuses", [])
        }
        print(f"containers and the image each runs: {pulled}")
        assert webhook[0]["spec"]["containers"][0]["image"] == image, webhook[0]["spec"]["containers"][0]["image"]
        assert pulled and all(img == image and ref.endswith(digest) for img, ref in pulled.values()), (digest, pulled)
        events = get(e2e, "events", "-n", NS)["items"]
        assert any(
            e.get("reason") == "Pulled" and image in e.get("message", "") and "already present" not in e.get("message", "")
            for e in events
        ), [e.get("message") for e in events if e.get("reason") in ("Pulled", "Pulling", "Failed")]
        cm = get(e2e, "configmap", f"{RELEASE}-recipe-config", "-n", NS)
        assert cm["metadata"]["labels"].get("aim-engine.io/recipe-id"), cm["metadata"]["labels"]
    finally:
        e2e.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m")
        e2e.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")
