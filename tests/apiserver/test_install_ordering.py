"""Install ordering on a real control plane (kube-apiserver, controller-manager, scheduler; kwok GPU
nodes): the selection is written first (what the pre-install hook does), the chart is installed
with failure_policy Fail while the webhook is not yet trusted, the ReplicaSet controller retries
until it is, and the Pods end up with the selected recipe's GPUs, arguments and env, scheduled on
a node of the recipe's hardware. An upgrade that changes the model rolls the Pods onto the new
recipe; uninstall leaves no webhook configuration. (The hook Job itself is run here from the host:
this control plane has no kubelet to run containers.)"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "webhook"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client, config
from server import start as start_webhook

from k8s_objects import AMD, GFD
from localcluster import ROOT, start, wait_for

HELM = str(ROOT / ".tools/bin/helm")
AIM = str(ROOT / ".tools/venv/bin/aim-recipes")
NS = "aim-engine"


def kwok_node(name: str, labels: dict, resource: str, gpus: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok", **labels},
        },
        "status": {
            "allocatable": {"cpu": "192", "memory": "2Ti", "pods": "110", resource: str(gpus)},
            "capacity": {"cpu": "192", "memory": "2Ti", "pods": "110", resource: str(gpus)},
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cp = start(tmp_path_factory.mktemp("cp"), controllers=True)
    try:
        config.load_kube_config(config_file=str(cp.kubeconfig))
        core = client.CoreV1Api()
        for i in range(2):
            node = kwok_node(f"mi300x-{i}", AMD["MI300X"], "amd.com/gpu", 8)
            status = node.pop("status")
            core.create_node(node)
            core.patch_node_status(node["metadata"]["name"], {"status": status})
        node = kwok_node("h100-0", GFD["H100"], "nvidia.com/gpu", 8)
        status = node.pop("status")
        core.create_node(node)
        core.patch_node_status("h100-0", {"status": status})
        core.create_namespace({"metadata": {"name": NS}})
        wait_for(
            lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(NS).items),
            what="the default ServiceAccount",
        )
        wait_for(
            lambda: all(
                any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
                and not any(t.key == "node.kubernetes.io/not-ready" for t in (n.spec.taints or []))
                for n in core.list_node().items
            ),
            what="kwok nodes Ready",
        )
        yield cp
    finally:
        cp.stop()


def env(cp):  # type: ignore[no-untyped-def]
    return {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}


def select(cp, model: str) -> str:  # type: ignore[no-untyped-def]
    """What the chart's pre-install/pre-upgrade hook runs (same arguments)."""
    out = subprocess.run(
        [
            AIM,
            "select",
            "--model",
            model,
            "--namespace",
            NS,
            "--write-configmap",
            "aim-engine-recipe-config",
            "--release",
            "aim-engine",
            "--reclaim-label",
            "app.kubernetes.io/instance=aim-engine",
            "--single-node",
            "-o",
            "json",
        ],
        env=env(cp),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    import json

    return str(json.loads(out.stdout)["recipe"]["recipe_id"])


def trust_webhook(webhook) -> None:  # type: ignore[no-untyped-def]
    """What the webhook does at start-up in the cluster (--ca-bundle-for), here with a loopback URL."""
    adm = client.AdmissionregistrationV1Api()
    bundle = base64.b64encode(webhook.ca_file.read_bytes()).decode()
    name = "aim-engine-recipe-validator-aim-engine"
    for read, replace in (
        (adm.read_mutating_webhook_configuration, adm.replace_mutating_webhook_configuration),
        (adm.read_validating_webhook_configuration, adm.replace_validating_webhook_configuration),
    ):
        cfg = read(name)
        for hook in cfg.webhooks:
            path = hook.client_config.service.path
            hook.client_config = client.AdmissionregistrationV1WebhookClientConfig(
                url=f"https://127.0.0.1:{webhook.port}{path}", ca_bundle=bundle
            )
        replace(name, cfg)


def restore_service_refs() -> None:
    """Undo trust_webhook's URL (this harness has no service dataplane), keeping the caBundle, so that
    Helm finds its configurations as it left them."""
    adm = client.AdmissionregistrationV1Api()
    name = "aim-engine-recipe-validator-aim-engine"
    for read, replace in (
        (adm.read_mutating_webhook_configuration, adm.replace_mutating_webhook_configuration),
        (adm.read_validating_webhook_configuration, adm.replace_validating_webhook_configuration),
    ):
        cfg = read(name)
        for hook in cfg.webhooks:
            path = hook.client_config.url.rsplit("/", 1)[-1]
            hook.client_config = client.AdmissionregistrationV1WebhookClientConfig(
                service=client.AdmissionregistrationV1ServiceReference(
                    name="aim-engine-recipe-validator", namespace=NS, path=f"/{path}", port=443
                ),
                ca_bundle=hook.client_config.ca_bundle,
            )
        replace(name, cfg)


def injected(pod) -> bool:  # type: ignore[no-untyped-def]
    return bool(pod.metadata.labels.get("aim-engine.io/recipe-id", "selected") != "selected")


def serving_pods(core) -> list:  # type: ignore[no-untyped-def]
    return [
        p
        for p in core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=inference").items
        if p.metadata.deletion_timestamp is None
    ]


def test_one_install_then_upgrade_then_uninstall(cluster, tmp_path):
    core, apps = client.CoreV1Api(), client.AppsV1Api()
    recipe = select(cluster, "Qwen/Qwen3-32B")
    assert recipe == "qwen3-32b-mi300x-1gpu-fp8"
    out = subprocess.run(
        [
            HELM,
            "install",
            "aim-engine",
            str(ROOT / "chart"),
            "-n",
            NS,
            "--no-hooks",
            "--set",
            "aim_engine.model_id=Qwen/Qwen3-32B",
            "--set",
            "admission_controller.webhook.failure_policy=Fail",
            "--set",
            "model_cache.enabled=false",
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    # The webhook is not trusted yet: with Fail, the ReplicaSet cannot create its Pod (and retries).
    # A Pod created in the instant before Helm registered the configurations (Helm creates them after
    # Deployments) has no recipe: its label still reads `selected`, and the webhook replaces it.
    time.sleep(5)
    assert all(p.metadata.labels["aim-engine.io/recipe-id"] == "selected" for p in serving_pods(core))
    webhook = start_webhook(tmp_path, workers=1, threads=4, kubeconfig=cluster.kubeconfig)
    try:
        trust_webhook(webhook)
        # The chart's reconcile Job: `aim-webhook reconcile` once the webhook serves (here the
        # webhook runs outside the cluster, so there is no Deployment to wait for).
        # Its arguments as the chart passes them, the catalog as the image names it (AIM_RECIPES_DIR).
        reconcile = [str(ROOT / ".tools/venv/bin/aim-webhook"), "reconcile", "--namespace", NS]
        reconcile += ["--kubeconfig", str(cluster.kubeconfig), "--release", "aim-engine"]
        reconcile += ["--recipe-config", "aim-engine-recipe-config"]
        rec = subprocess.run(
            reconcile,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ, "AIM_RECIPES_DIR": str(ROOT / "recipes")},
        )
        assert rec.returncode == 0, rec.stderr
        assert "without their recipe replaced" in rec.stdout
        assert "0 pod(s) with an outdated recipe replaced by" in rec.stdout, rec.stdout
        pod = wait_for(
            lambda: next(iter(p for p in serving_pods(core) if p.spec.node_name and injected(p)), None),
            timeout=120,
            what="the vLLM pod injected and scheduled",
        )
        wait_for(lambda: all(injected(p) for p in serving_pods(core)), what="uninjected pods replaced")
        c = pod.spec.containers[0]
        assert pod.metadata.labels["aim-engine.io/recipe-id"] == recipe
        assert c.resources.limits["amd.com/gpu"] == "1"
        assert "--quantization" in c.args and "--tensor-parallel-size" in c.args
        assert {e.name for e in c.env} >= {"HIP_FORCE_DEV_KERNARG", "VLLM_ROCM_USE_AITER"}
        assert pod.spec.node_name.startswith("mi300x-")
        first_uid = pod.metadata.uid

        # helm upgrade with another model: the selection changes and the Pods roll onto it.
        recipe2 = select(cluster, "meta-llama/Llama-3.1-8B-Instruct")
        assert recipe2 != recipe
        restore_service_refs()
        out = subprocess.run(
            [
                HELM,
                "upgrade",
                "aim-engine",
                str(ROOT / "chart"),
                "-n",
                NS,
                "--no-hooks",
                "--set",
                "aim_engine.model_id=meta-llama/Llama-3.1-8B-Instruct",
                "--set",
                "model_cache.enabled=false",
                "--kubeconfig",
                str(cluster.kubeconfig),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        adm = client.AdmissionregistrationV1Api()
        kept = adm.read_validating_webhook_configuration("aim-engine-recipe-validator-aim-engine")
        assert all(h.client_config.ca_bundle for h in kept.webhooks)  # helm upgrade keeps the webhook's caBundle
        trust_webhook(webhook)
        new = wait_for(
            lambda: next(
                iter(p for p in serving_pods(core) if p.metadata.uid != first_uid and p.spec.node_name and injected(p)), None
            ),
            timeout=120,
            what="the rolled pod",
        )
        assert new.metadata.labels["aim-engine.io/recipe-id"] == recipe2
        deployment = apps.read_namespaced_deployment("aim-engine", NS)
        assert deployment.spec.template.spec.containers[0].command[-1] == "meta-llama/Llama-3.1-8B-Instruct"
    finally:
        webhook.stop(signal.SIGTERM)
    out = subprocess.run(
        [HELM, "uninstall", "aim-engine", "-n", NS, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    adm = client.AdmissionregistrationV1Api()
    left = [
        c.metadata.name
        for c in adm.list_validating_webhook_configuration().items + adm.list_mutating_webhook_configuration().items
    ]
    assert not [n for n in left if "aim-engine" in n]
