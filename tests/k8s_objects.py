"""Builders for realistic Node and Pod objects, as the API server serialises them."""

from __future__ import annotations

from typing import Any

GFD = {
    "H100": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"},
    "H200": {"nvidia.com/gpu.product": "NVIDIA-H200", "nvidia.com/gpu.memory": "143771"},
    "A100": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"},
    "A100-40GB": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.memory": "40960"},
    "L40S": {"nvidia.com/gpu.product": "NVIDIA-L40S", "nvidia.com/gpu.memory": "46068"},
    "B200": {"nvidia.com/gpu.product": "NVIDIA-B200", "nvidia.com/gpu.memory": "183359"},
}
AMD = {
    "MI300X": {
        "amd.com/gpu.product-name": "AMD_Instinct_MI300X_OAM",
        "amd.com/gpu.device-id": "74a1",
        "amd.com/gpu.vram": "192G",
        "amd.com/gpu.family": "AI",
    },
    "MI325X": {
        "amd.com/gpu.product-name": "AMD_Instinct_MI325_OAM",
        "amd.com/gpu.device-id": "74a5",
        "amd.com/gpu.vram": "256G",
        "amd.com/gpu.family": "AI",
    },
    "MI355X": {
        "amd.com/gpu.product-name": "AMD_Instinct_MI355X_OAM",
        "amd.com/gpu.device-id": "75a3",
        "amd.com/gpu.vram": "288G",
    },
}


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    gpus: int = 0,
    resource: str = "nvidia.com/gpu",
    ready: bool = True,
    cordoned: bool = False,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    alloc = {"cpu": "190", "memory": "2000Gi", "pods": "110"}
    if gpus:
        alloc[resource] = str(gpus)
    spec: dict[str, Any] = {}
    if cordoned:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})}},
        "spec": spec,
        "status": {
            "allocatable": alloc,
            "capacity": dict(alloc),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def gfd_node(name: str, product: str, gpus: int = 8, **kw: Any) -> dict[str, Any]:
    labels = {**GFD[product], "nvidia.com/gpu.count": str(gpus), "nvidia.com/gpu.present": "true", **kw.pop("labels", {})}
    return node(name, labels=labels, gpus=gpus, resource="nvidia.com/gpu", **kw)


def amd_node(name: str, product: str, gpus: int = 8, **kw: Any) -> dict[str, Any]:
    labels = {**AMD[product], **kw.pop("labels", {})}
    return node(name, labels=labels, gpus=gpus, resource="amd.com/gpu", **kw)


def pod(
    name: str,
    node_name: str,
    *,
    gpus: int,
    resource: str = "nvidia.com/gpu",
    namespace: str = "default",
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    limits_only: bool = False,
) -> dict[str, Any]:
    res: dict[str, Any] = {"limits": {resource: str(gpus), "cpu": "8"}}
    if not limits_only:
        res["requests"] = {resource: str(gpus), "cpu": "4"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "vllm/vllm-openai", "resources": res}]},
        "status": {"phase": phase},
    }


def cluster(nodes: list[dict[str, Any]], pods: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [*nodes, *(pods or [])]}


def mixed_cluster() -> dict[str, Any]:
    """The bundled example: AMD and NVIDIA nodes, several label sources, allocations, a cordon."""
    nodes = [
        node("control-plane-0", labels={"node-role.kubernetes.io/control-plane": ""}),
        amd_node("mi300x-node-0", "MI300X"),
        amd_node("mi300x-node-1", "MI300X"),
        node(
            "mi300x-node-2",
            resource="amd.com/gpu",
            gpus=8,
            cordoned=True,
            labels={"beta.amd.com/gpu.device-id.74a1": "8", "beta.amd.com/gpu.family.AI": "8", "beta.amd.com/gpu.vram.192G": "8"},
        ),
        gfd_node("h100-node-0", "H100"),
        gfd_node("h100-node-1", "H100", taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]),
        node(
            "a100-node-0", resource="nvidia.com/gpu", gpus=8, labels={"feature.node.kubernetes.io/pci-10de_20b2.present": "true"}
        ),
        node(
            "l40s-node-0",
            resource="nvidia.com/gpu",
            gpus=4,
            ready=False,
            labels={"node.kubernetes.io/instance-type": "g6e.12xlarge"},
        ),
    ]
    pods = [
        pod("llama-70b-0", "mi300x-node-0", gpus=6, resource="amd.com/gpu", namespace="inference"),
        pod("training-0", "h100-node-0", gpus=8, namespace="training"),
        pod("finished-job", "h100-node-1", gpus=8, namespace="batch", phase="Succeeded"),
        pod("embeddings-0", "h100-node-1", gpus=2, namespace="inference", limits_only=True),
        pod("notebook-0", "a100-node-0", gpus=1, namespace="research"),
    ]
    return cluster(nodes, pods)
