"""GPU partitions and dense packing on the local cluster: kwok nodes advertise H100 MIG 3g.40gb
instances the way NVIDIA's device plugin does under its mixed strategy (nvidia.com/mig-3g.40gb, the
GPU Feature Discovery product label of the whole GPU) and MI300X CPX partitions the way AMD's does
under its single naming (amd.com/gpu, amd.com/gpu.compute-memory-partition=cpx_nps4). Releases of
small models select partition recipes through the chart's hook, the webhook injects the partition
resource, and the second small model is packed onto the node the first already uses — by the real
kube-scheduler, steered by the selection's preferred node term — while two empty MIG nodes stay
empty. The nodes exist only for this module, tainted as a pool of its own (`aim-e2e/pool=partitions`)
that only its releases tolerate (`workload.tolerations`, which the selector hook counts): the
modules running beside it never see them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import realcluster
from localcluster import wait_for

from .conftest import IMAGE_VALUES, ROOT, E2ECluster, own_webhook

NS = "aim-parts"
MIG_NODES = ("h100-mig-0", "h100-mig-1", "h100-mig-2")
CPX_NODE = "mi300x-cpx-0"
MIG_LABELS = {**realcluster.GFD_H100, "nvidia.com/mig.strategy": "mixed", "nvidia.com/gpu.count": "8"}
CPX_LABELS = {**realcluster.AMD_MI300X, "amd.com/gpu.compute-memory-partition": "cpx_nps4", "amd.com/gpu.vram": "24G"}
POOL = {"key": "aim-e2e/pool", "value": "partitions", "effect": "NoSchedule"}


def get(e2e: E2ECluster, *args: str) -> Any:
    return json.loads(e2e.kubectl("get", *args, "-o", "json", check=True).stdout)


def install(e2e: E2ECluster, release: str, model: str, gpu_type: str) -> None:
    images = [x for k, v in IMAGE_VALUES.items() for x in ("--set", f"{k}={v}")]
    out = e2e.helm(
        "install",
        release,
        str(ROOT / "chart"),
        "-n",
        NS,
        "--set",
        "aim_engine.auto_select=true",
        "--set",
        f"aim_engine.model_id={model}",
        "--set",
        f"aim_engine.hardware.gpu_type={gpu_type}",
        "--set",
        "model_cache.enabled=false",
        "--set-json",
        "workload.tolerations=" + json.dumps([{**POOL, "operator": "Equal"}]),
        *images,
        *own_webhook(NS),
        "--wait",
        "--timeout",
        "5m",
    )
    if out.returncode != 0:
        diag = e2e.kubectl("get", "pods,jobs,events", "-n", NS).stdout
        raise AssertionError(f"helm install {release} failed:\n{out.stdout}\n{out.stderr}\n{diag}")


def engine_pod(e2e: E2ECluster, release: str) -> dict[str, Any]:
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=inference"

    def scheduled() -> dict[str, Any] | None:
        pods = [p for p in get(e2e, "pods", "-n", NS, "-l", selector)["items"] if p["spec"].get("nodeName")]
        return pods[0] if pods else None

    pod = wait_for(scheduled, timeout=120, what=f"{release}'s engine pod scheduled")
    assert pod is not None
    return pod


@pytest.fixture(scope="module")
def partitioned(e2e: E2ECluster) -> Iterator[E2ECluster]:
    from kubernetes import client, config

    config.load_kube_config(config_file=str(e2e.kubeconfig))
    core = client.CoreV1Api()
    for name in MIG_NODES:
        realcluster.create_gpu_node(
            core,
            name=name,
            labels=MIG_LABELS,
            resource="nvidia.com/gpu",
            gpus=0,
            devices={"nvidia.com/mig-3g.40gb": 16},
            taints=[POOL],
        )
    realcluster.create_gpu_node(core, name=CPX_NODE, labels=CPX_LABELS, resource="amd.com/gpu", gpus=64, taints=[POOL])

    def ready() -> bool:
        nodes = [core.read_node(name) for name in (*MIG_NODES, CPX_NODE)]
        return all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in nodes)

    wait_for(ready, timeout=60, what="kwok to report the partition nodes Ready")  # the hook counts only Ready nodes
    e2e.kubectl("create", "namespace", NS, check=True)
    try:
        yield e2e
    finally:
        # uninstall first: a release's webhook configurations are cluster-scoped, and left behind
        # (their Service gone with the namespace) they would refuse every later Pod in the cluster.
        # Helm deletes them before it returns; the releases' pods then stop together, with the namespace.
        e2e.helm("uninstall", "qwen", "llama", "cpx", "-n", NS, "--ignore-not-found", "--timeout", "3m")
        e2e.kubectl("delete", "namespace", NS, "--wait=false")
        for name in (*MIG_NODES, CPX_NODE):
            e2e.kubectl("delete", "node", name, "--wait=false")


def test_small_models_select_partitions_and_the_second_is_packed_beside_the_first(partitioned: E2ECluster) -> None:
    e2e = partitioned
    install(e2e, "qwen", "Qwen/Qwen3-8B", "H100-MIG-3g.40gb")
    first = engine_pod(e2e, "qwen")
    assert first["metadata"]["labels"]["aim-engine.io/recipe-id"] == "qwen3-8b-h100-mig-3g40gb-bf16"
    limits = first["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/mig-3g.40gb"] == "1" and "nvidia.com/gpu" not in limits
    node = first["spec"]["nodeName"]
    assert node in MIG_NODES
    explanation = get(e2e, "configmap", "qwen-recipe-config", "-n", NS)["data"]["explanation.txt"]
    assert "PARTITION: runs on 1 x H100-MIG-3g.40gb (1 x MIG 3g.40gb, 1/2 of an H100)" in explanation
    assert "Against a whole GPU:" in explanation

    install(e2e, "llama", "meta-llama/Llama-3.1-8B-Instruct", "H100-MIG-3g.40gb")
    cm = get(e2e, "configmap", "llama-recipe-config", "-n", NS)["data"]
    assert f"PACKED: packed onto {node}, which already has 1 device(s) in use by other workloads" in cm["explanation.txt"]
    assert "2 empty node(s) that would also fit stay empty" in cm["explanation.txt"]
    preferred = json.loads(cm["node-affinity.json"])["preferred"]
    assert preferred == [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]
    second = engine_pod(e2e, "llama")
    assert second["metadata"]["labels"]["aim-engine.io/recipe-id"] == "llama-3.1-8b-instruct-h100-mig-3g40gb-bf16"
    terms = second["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["weight"] == 100 and terms[0]["preference"]["matchExpressions"][0]["values"] == [node]
    assert second["spec"]["nodeName"] == node, "the scheduler did not pack the second model beside the first"


def test_a_cpx_partition_is_requested_as_the_nodes_advertise_it(partitioned: E2ECluster) -> None:
    e2e = partitioned
    install(e2e, "cpx", "Qwen/Qwen3-8B", "MI300X-CPX")
    pod = engine_pod(e2e, "cpx")
    assert pod["metadata"]["labels"]["aim-engine.io/recipe-id"] == "qwen3-8b-mi300x-cpx-fp8"
    assert pod["spec"]["nodeName"] == CPX_NODE
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["amd.com/gpu"] == "1"  # the device plugin's single naming: a CPX partition is an amd.com/gpu
    required = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = [e["key"] for e in required["nodeSelectorTerms"][0]["matchExpressions"]]
    assert "amd.com/gpu.compute-memory-partition" in keys  # never a whole MI300X that also offers amd.com/gpu
