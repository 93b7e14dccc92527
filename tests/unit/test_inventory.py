"""Per-node capacity from real-looking Node and Pod objects."""

from __future__ import annotations

import pytest

from aim_engine.cluster.inventory import product_node_affinity, split_list
from aim_engine.domain.errors import InputError
from k8s_objects import amd_node, cluster, gfd_node, mixed_cluster, node, pod
from support import inventory_of


def test_example_cluster_inventory(bundle):
    inv = inventory_of(bundle, mixed_cluster())
    by = {n.name: n for n in inv.nodes}
    assert by["mi300x-node-0"].free == 2
    assert by["mi300x-node-2"].reason == "cordoned"
    assert by["l40s-node-0"].reason == "NotReady"
    assert by["h100-node-1"].free == 6  # the Succeeded pod's 8 GPUs are not counted; limits-only pod counts 2
    assert by["h100-node-1"].usable  # the nvidia.com/gpu taint is tolerated
    assert by["a100-node-0"].product.name == "A100"
    assert inv.products["MI300X"].free == 10 and inv.products["MI300X"].max_free == 8
    assert "L40S" not in inv.products


def test_init_containers_count_as_max_not_sum(bundle):
    p = pod("p", "n", gpus=2)
    p["spec"]["initContainers"] = [{"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]
    inv = inventory_of(bundle, cluster([gfd_node("n", "H100")], [p]))
    assert inv.nodes[0].used == 4


def test_reclaim_selector_frees_the_releases_own_gpus(bundle):
    doc = cluster([gfd_node("n", "H100")], [pod("old", "n", gpus=8, labels={"app.kubernetes.io/instance": "aim-engine"})])
    assert inventory_of(bundle, doc).nodes[0].free == 0
    assert inventory_of(bundle, doc, reclaim_selector={"app.kubernetes.io/instance": "aim-engine"}).nodes[0].free == 8
    assert inventory_of(bundle, doc, ignore_usage=True).nodes[0].free == 8


def test_pods_being_deleted_free_their_gpus(bundle):
    """An uninstalled release's pods drain for up to their grace period; a new selection meanwhile
    counts their GPUs as free (the scheduler places the new pods once they are gone)."""
    old, other = pod("old", "n", gpus=8), pod("other", "m", gpus=4)
    old["metadata"]["deletionTimestamp"] = "2026-11-29T07:00:00Z"
    inv = inventory_of(bundle, cluster([gfd_node("n", "H100"), gfd_node("m", "H100")], [old, other]))
    assert {n.name: n.free for n in inv.nodes} == {"n": 8, "m": 4}


def test_untolerated_taint_excludes_a_node(bundle):
    doc = cluster([gfd_node("n", "H100", taints=[{"key": "dedicated", "value": "team-a", "effect": "NoSchedule"}])])
    n = inventory_of(bundle, doc).nodes[0]
    assert not n.usable and "dedicated=team-a:NoSchedule" in n.reason
    assert inventory_of(bundle, doc, tolerated_taints=frozenset({"dedicated"})).nodes[0].usable
    # a toleration of every taint (no key, operator Exists): `--tolerate-taint '*'`
    assert inventory_of(bundle, doc, tolerated_taints=frozenset({"*"})).nodes[0].usable
    # only NoSchedule and NoExecute keep pods off; a PreferNoSchedule taint does not
    soft = cluster([gfd_node("n", "H100", taints=[{"key": "dedicated", "effect": "PreferNoSchedule"}])])
    assert inventory_of(bundle, soft).nodes[0].usable


def test_only_the_nodes_the_workloads_node_selector_selects_count(bundle):
    pool = gfd_node("in-pool", "H100")
    pool["metadata"]["labels"]["pool"] = "inference"
    doc = cluster([pool, gfd_node("elsewhere", "H100")])
    by = {n.name: n for n in inventory_of(bundle, doc, node_selector={"pool": "inference"}).nodes}
    assert by["in-pool"].usable
    assert not by["elsewhere"].usable and "nodeSelector (pool=inference)" in by["elsewhere"].reason
    assert all(n.usable for n in inventory_of(bundle, doc).nodes)  # no selector: every node


def test_product_label_without_allocatable_gpus(bundle):
    n = inventory_of(bundle, cluster([amd_node("n", "MI300X", gpus=0)])).nodes[0]
    assert not n.usable and "device plugin" in n.reason


def test_pending_pods_without_a_node_do_not_count(bundle):
    p = pod("pending", "n", gpus=8)
    del p["spec"]["nodeName"]
    assert inventory_of(bundle, cluster([gfd_node("n", "H100")], [p])).nodes[0].free == 8


def test_bad_quantity_in_a_pod_is_a_clear_error(bundle):
    p = pod("p", "n", gpus=1)
    p["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "lots"
    with pytest.raises(InputError, match="pod default/p"):
        inventory_of(bundle, cluster([gfd_node("n", "H100")], [p]))


@pytest.mark.parametrize("doc", [{"kind": "Deployment", "items": []}, {"kind": "List"}, [], {"kind": "List", "items": [1]}])
def test_snapshot_shape_errors(doc):
    with pytest.raises(InputError, match="snapshot"):
        split_list(doc)


def test_nodelist_and_podlist_items_without_kind(bundle):
    n = node("x", gpus=8)
    n.pop("kind")
    nodes, pods = split_list({"kind": "NodeList", "items": [n]})
    assert len(nodes) == 1 and pods == []


def test_product_node_terms_pin_the_products_nodes_by_the_labels_that_identified_them(bundle):
    """Every node of the product counts (cordoned too), each by the label that identified it; other
    products on the same vendor resource (A100 next to H100) are left out."""
    doc = cluster(
        [
            gfd_node("h100-a", "H100"),
            gfd_node("h100-b", "H100", cordoned=True),
            node("h100-c", labels={"node.kubernetes.io/instance-type": "p5.48xlarge"}, gpus=8),
            gfd_node("a100-a", "A100"),
        ]
    )
    inv = inventory_of(bundle, doc)
    assert product_node_affinity(inv, "H100").as_terms() == [
        {"matchExpressions": [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p5.48xlarge"]}]},
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}]},
    ]
    assert product_node_affinity(inv, "A100").as_terms() == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-80GB"]}]}
    ]
    assert product_node_affinity(inv, "MI300X").as_terms() == []
