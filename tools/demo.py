#!/usr/bin/env python3
"""make demo: the product on a real Kubernetes API server, from a fresh clone.

1. starts etcd and kube-apiserver on loopback (built by make setup);
2. registers the bundled example cluster's GPU nodes (AMD node labeller, GPU Feature Discovery,
   NFD and instance-type labels; allocations; a cordon; a NotReady node) and its running pods;
3. runs the recipe selector against the live API (hook mode: it writes aim-engine-recipe-config
   and prints its explanation, as `kubectl logs job/aim-engine-recipe-selector` would);
4. starts the admission webhook and applies the chart's own webhook configurations;
5. creates a bad Deployment (GPU count contradicting its recipe): the API server refuses it with
   the webhook's message; then a Pod of a chart-style release, which gets the selected recipe;
6. tears everything down.

No kubelet: nodes and pods are API objects (the real-cluster harness that runs them is to come).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "webhook"))

from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from server import start as start_webhook  # noqa: E402

from localcluster import chart_webhook_configurations, ensure_default_service_account, start  # noqa: E402

NS = "aim-engine"
BIN = ROOT / ".tools" / "venv" / "bin"


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def load_example_cluster(core: client.CoreV1Api) -> None:
    doc = json.loads((ROOT / "examples" / "cluster-mixed.json").read_text())
    for item in doc["items"]:
        if item["kind"] == "Node":
            status = item.pop("status")
            node = core.create_node(item)
            core.patch_node_status(item["metadata"]["name"], {"status": status})
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])
            if ready:  # what the node lifecycle controller does for a Ready node (no controller-manager here)
                taints = [t for t in (node.spec.taints or []) if t.key != "node.kubernetes.io/not-ready"]
                core.patch_node(item["metadata"]["name"], {"spec": {"taints": [t.to_dict() for t in taints] or None}})
    for ns in {i["metadata"]["namespace"] for i in doc["items"] if i["kind"] == "Pod"} | {NS}:
        core.create_namespace({"metadata": {"name": ns}})
        ensure_default_service_account(core, ns)
    for item in doc["items"]:
        if item["kind"] == "Pod":
            status = item.pop("status")
            created = core.create_namespaced_pod(item["metadata"]["namespace"], item)
            core.patch_namespaced_pod_status(created.metadata.name, created.metadata.namespace, {"status": status})


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="aim-demo-"))
    step("Starting etcd and kube-apiserver on loopback")
    cp = start(tmp)
    webhook = None
    try:
        print(f"API server {cp.url} (kubeconfig {cp.kubeconfig})")
        config.load_kube_config(config_file=str(cp.kubeconfig))
        core, apps, adm = client.CoreV1Api(), client.AppsV1Api(), client.AdmissionregistrationV1Api()
        load_example_cluster(core)
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}

        step("GPU inventory of the live cluster: aim-recipes detect")
        subprocess.run([str(BIN / "aim-recipes"), "detect"], env=env, check=True)

        step("Recipe selection, as the chart's pre-install hook runs it (log of job/aim-engine-recipe-selector)")
        subprocess.run(
            [
                str(BIN / "aim-recipes"),
                "select",
                "--model",
                "Qwen/Qwen3-32B",
                "--namespace",
                NS,
                "--write-configmap",
                "aim-engine-recipe-config",
                "--release",
                "aim-engine",
                "--single-node",
            ],
            env=env,
            check=True,
        )
        cm = core.read_namespaced_config_map("aim-engine-recipe-config", NS)
        print(f"configmap/aim-engine-recipe-config: recipe {cm.metadata.labels['aim-engine.io/recipe-id']}")

        step("Starting the admission webhook and applying the chart's webhook configurations")
        (tmp / "webhook").mkdir()
        webhook = start_webhook(tmp / "webhook", workers=1, threads=4, kubeconfig=cp.kubeconfig)
        for d in chart_webhook_configurations(webhook.port, webhook.ca_file.read_bytes()):
            create = (
                adm.create_mutating_webhook_configuration
                if d["kind"] == "MutatingWebhookConfiguration"
                else adm.create_validating_webhook_configuration
            )
            create(d)
            print(f"{d['kind']} {d['metadata']['name']}")
        time.sleep(1.5)

        step("A bad Deployment: 2 GPUs for a 1-GPU recipe -> refused by the API server")
        bad = json.loads((ROOT / "tests/fixtures/admission/deployment-gpu-count-mismatch.json").read_text())["request"]["object"]
        bad["metadata"]["namespace"] = NS
        bad["metadata"].pop("annotations", None)
        try:
            apps.create_namespaced_deployment(NS, bad)
            print("unexpected: admitted")
            return 1
        except ApiException as e:
            print(f"HTTP {e.status}: {json.loads(e.body)['message']}")

        step("A Pod of the release (recipe-id: selected): the webhook injects the selected recipe")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "aim-engine-",
                "labels": {"aim-engine.io/recipe-id": "selected", "app.kubernetes.io/instance": "aim-engine"},
                "annotations": {"aim-engine.io/recipe-config": "aim-engine-recipe-config"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "vllm",
                        "image": "rocm/vllm:latest",
                        "command": ["vllm", "serve", "Qwen/Qwen3-32B"],
                        "args": ["--host", "0.0.0.0", "--port", "8000"],
                    }
                ]
            },
        }
        created = core.create_namespaced_pod(NS, pod)
        c = created.spec.containers[0]
        print(
            f"pod/{created.metadata.name}: recipe {created.metadata.labels['aim-engine.io/recipe-id']}, "
            f"gpu {created.metadata.labels.get('aim-engine.io/gpu-model')}, limits {c.resources.limits}"
        )
        print("args: " + " ".join(c.args))
        print("env:  " + ", ".join(f"{e.name}={e.value}" for e in c.env or []))
        step("Done. Everything started here stops now (nothing is left running).")
        return 0
    finally:
        if webhook is not None:
            webhook.stop(signal.SIGTERM)
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
