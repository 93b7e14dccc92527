"""GPU partitions (NVIDIA MIG, AMD compute partition modes) as devices of their own, and dense
packing: detection under every device-plugin strategy, the inventory's pools, selection on
partitions with its comparison against a whole GPU, the device name a pod asks for, and where the
pods go first."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from aim_engine.adapters.catalog import load_bundle
from aim_engine.cluster.inventory import build_inventory, product_node_affinity
from aim_engine.contract import NodeAffinity
from aim_engine.rules.compat import static_findings
from aim_engine.rules.pod import parse_workload
from aim_engine.rules.slo import Slo
from aim_engine.rules.workload import Toggles, check_workload
from aim_webhook.mutate import PACKING_WEIGHT, apply, mutate
from k8s_objects import AMD, GFD, amd_node, cluster, gfd_node, node, pod
from support import run_select

BUNDLE = load_bundle()
HW = BUNDLE.hardware
QWEN8 = "Qwen/Qwen3-8B"
MIG_RECIPE = next(r for r in BUNDLE.recipes if r.recipe_id == "qwen3-8b-h100-mig-3g40gb-bf16")
CPX_RECIPE = next(r for r in BUNDLE.recipes if r.recipe_id == "qwen3-8b-mi300x-cpx-fp8")


def mig_single(name: str, profile: str = "3g.40gb", count: int = 16) -> dict[str, Any]:
    """A node under GPU Feature Discovery's single strategy: every device is one MIG profile."""
    labels = {
        "nvidia.com/gpu.product": f"NVIDIA-H100-80GB-HBM3-MIG-{profile}",
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/gpu.count": str(count),
    }
    return node(name, labels=labels, gpus=count, resource="nvidia.com/gpu")


def mig_mixed(name: str, devices: dict[str, int], whole: int = 0) -> dict[str, Any]:
    """A node under the mixed strategy: one resource per profile, whole GPUs as nvidia.com/gpu."""
    n = node(name, labels={**GFD["H100"], "nvidia.com/mig.strategy": "mixed"}, gpus=whole, resource="nvidia.com/gpu")
    n["status"]["allocatable"]["nvidia.com/gpu"] = str(whole)
    for profile, count in devices.items():
        n["status"]["allocatable"][f"nvidia.com/mig-{profile}"] = str(count)
    return n


def amd_partitioned(name: str, product: str, style: str, count: int) -> dict[str, Any]:
    """AMD's node labeller with -compute-memory-partition, the device plugin's single naming."""
    return amd_node(name, product, gpus=count, labels={"amd.com/gpu.compute-memory-partition": style})


def pools(doc: dict[str, Any]) -> list[tuple[str, str, str | None, int, bool, str]]:
    inv = build_inventory(HW, *split(doc))
    return [(n.name, n.product.name if n.product else "-", n.resource, n.allocatable, n.usable, n.reason) for n in inv.nodes]


def split(doc: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    items = doc["items"]
    return [i for i in items if i["kind"] == "Node"], [i for i in items if i["kind"] == "Pod"]


def codes(findings: Any) -> list[str]:
    return [f.code for f in findings]


# ---- the hardware table ----


def test_partition_products_carry_the_partitions_memory_and_share():
    mig = HW.require("H100-MIG-3g.40gb")
    assert mig.physical is HW.require("H100") and mig.max_tp == 1
    assert mig.memory_mib == 40448 and mig.resources == ("nvidia.com/mig-3g.40gb", "nvidia.com/gpu")
    # 60 of 132 SMs but 4 of 8 memory slices: two fit on a GPU, so it uses up half of one
    assert mig.gpu_share == Decimal("0.5")
    cpx = HW.require("MI300X-CPX")
    assert cpx.memory_mib == 196592 // 8 and cpx.gpu_share == Decimal(1) / 8 and cpx.max_tp == 0
    assert cpx.resources == ("amd.com/cpx_nps4", "amd.com/cpx_nps1", "amd.com/gpu")
    assert "nvidia.com/mig-1g.10gb" in HW.gpu_resources and "amd.com/spx_nps1" in HW.gpu_resources


# ---- detection: every strategy ----


def test_mig_single_strategy_is_one_pool_of_the_profile_as_nvidia_gpu():
    assert pools(cluster([mig_single("m")])) == [("m", "H100-MIG-3g.40gb", "nvidia.com/gpu", 16, True, "")]


def test_mig_mixed_strategy_gives_a_pool_per_profile_and_one_of_whole_gpus():
    doc = cluster([mig_mixed("m", {"3g.40gb": 4, "1g.10gb": 7}, whole=6)])
    assert pools(doc) == [
        ("m", "H100", "nvidia.com/gpu", 6, True, ""),
        ("m", "H100-MIG-1g.10gb", "nvidia.com/mig-1g.10gb", 7, True, ""),
        ("m", "H100-MIG-3g.40gb", "nvidia.com/mig-3g.40gb", 4, True, ""),
    ]


def test_an_unknown_mig_profile_is_listed_with_why_and_not_used():
    doc = cluster([mig_mixed("m", {"1g.10gb.me": 1}), mig_single("s", profile="1g.12gb", count=7)])
    rows = {(r[0], r[2]): r for r in pools(doc)}
    assert not rows[("m", "nvidia.com/mig-1g.10gb.me")][4]
    assert "MIG profile 1g.10gb.me of H100 is not in" in rows[("m", "nvidia.com/mig-1g.10gb.me")][5]
    assert "MIG profile 1g.12gb" in rows[("s", "nvidia.com/gpu")][5]


def test_amd_cpx_under_single_naming_is_a_pool_of_logical_gpus():
    doc = cluster([amd_partitioned("a", "MI300X", "cpx_nps4", 64)])
    assert pools(doc) == [("a", "MI300X-CPX", "amd.com/gpu", 64, True, "")]


def test_amd_mixed_naming_gives_one_pool_per_partition_style():
    n = node("a", labels=dict(AMD["MI300X"]))
    n["status"]["allocatable"].update({"amd.com/spx_nps1": "5", "amd.com/cpx_nps1": "24"})
    assert pools(cluster([n])) == [
        ("a", "MI300X", "amd.com/spx_nps1", 5, True, ""),
        ("a", "MI300X-CPX", "amd.com/cpx_nps1", 24, True, ""),
    ]


def test_a_partition_mode_the_product_does_not_offer_is_refused():
    rows = pools(cluster([amd_partitioned("a", "MI325X", "cpx_nps1", 64), amd_partitioned("b", "MI300X", "dpx_nps4", 16)]))
    assert rows[0][4] is False and "compute partition mode CPX of MI325X is not in" in rows[0][5]
    assert rows[1][4] is False and "DPX with memory mode NPS4 is not a mode MI300X offers" in rows[1][5]


def test_usage_is_counted_per_device_kind():
    doc = cluster(
        [mig_mixed("m", {"3g.40gb": 2, "1g.10gb": 7}, whole=0)],
        [pod("p", "m", gpus=1, resource="nvidia.com/mig-3g.40gb"), pod("q", "m", gpus=3, resource="nvidia.com/mig-1g.10gb")],
    )
    inv = build_inventory(HW, *split(doc))
    assert {n.product.name: (n.used, n.free) for n in inv.nodes} == {"H100-MIG-3g.40gb": (1, 1), "H100-MIG-1g.10gb": (3, 4)}


# ---- rules ----


def test_mig_instances_cannot_be_joined_by_tensor_parallelism():
    from aim_engine.domain.recipe import with_changes

    two = with_changes(
        MIG_RECIPE,
        gpu_count=2,
        args={**MIG_RECIPE.args, "tensor_parallel_size": 2},
        requests={**MIG_RECIPE.requests, "nvidia.com/mig-3g.40gb": Decimal(2)},
        limits={**MIG_RECIPE.limits, "nvidia.com/mig-3g.40gb": Decimal(2)},
    )
    findings, _ = static_findings(two, model=BUNDLE.models.get(QWEN8), catalog=HW, registry=BUNDLE.registry)
    assert codes(findings) == ["PARTITION_PARALLELISM"]
    assert "at most 1 per engine" in findings[0].message and "tensor_parallel_size=1" in findings[0].fix


def test_a_model_too_large_for_the_partition_is_refused_by_memory():
    from aim_engine.domain.recipe import with_changes

    small = with_changes(MIG_RECIPE, hardware="H100-MIG-1g.10gb", requests={"nvidia.com/mig-1g.10gb": Decimal(1)})
    findings, _ = static_findings(small, model=BUNDLE.models.get(QWEN8), catalog=HW, registry=BUNDLE.registry)
    assert "INSUFFICIENT_MEMORY" in codes(findings)


# ---- selection ----


def test_on_a_cluster_of_mig_nodes_a_small_model_selects_a_partition_and_says_what_a_whole_gpu_would_do():
    sel = run_select(BUNDLE, cluster([mig_single("m")]), model_id=QWEN8)
    assert sel.recipe.recipe_id == "qwen3-8b-h100-mig-3g40gb-bf16"
    # single strategy: the selected recipe asks for the device as the nodes advertise it
    assert sel.recipe.limits["nvidia.com/gpu"] == 1 and "nvidia.com/mig-3g.40gb" not in sel.recipe.limits
    note = next(f for f in sel.candidates[0].reasons if f.code == "PARTITION")
    assert "1 x MIG 3g.40gb, 1/2 of an H100" in note.message
    assert "Against a whole GPU: qwen3-8b-h100-1gpu-fp8 on 1 x whole H100" in note.message
    assert "it does not fit now" in note.message


def test_with_whole_gpus_and_partitions_the_ranking_is_per_physical_gpu_used():
    doc = cluster([gfd_node("h", "H100", gpus=8), mig_mixed("m", {"3g.40gb": 4})])
    sel = run_select(BUNDLE, doc, model_id=QWEN8)
    mig = MIG_RECIPE.performance.tokens_per_second / Decimal("0.5")
    best_whole = max(
        r.performance.tokens_per_second for r in BUNDLE.recipes if r.model_key == QWEN8.lower() and r.hardware == "H100"
    )
    assert (sel.recipe.hardware == "H100-MIG-3g.40gb") == (mig > best_whole)
    outranked = [c for c in sel.candidates if c.verdict == "eligible"]
    assert any("per GPU" in c.reasons[0].message for c in outranked)


def test_a_throughput_target_the_partition_misses_keeps_the_whole_gpu():
    doc = cluster([gfd_node("h", "H100", gpus=8), mig_mixed("m", {"3g.40gb": 4})])
    target = MIG_RECIPE.performance.tokens_per_second + 1
    sel = run_select(BUNDLE, doc, model_id=QWEN8, slo=Slo(min_output_tokens_per_second=target))
    assert sel.recipe.hardware == "H100"
    mig = next(c for c in sel.candidates if c.recipe.recipe_id == MIG_RECIPE.recipe_id)
    assert codes(mig.reasons) == ["SLO_THROUGHPUT"]


def test_amd_cpx_is_selected_for_a_small_model_on_cpx_nodes():
    sel = run_select(BUNDLE, cluster([amd_partitioned("a", "MI300X", "cpx_nps4", 64)]), model_id=QWEN8)
    assert sel.recipe.recipe_id == "qwen3-8b-mi300x-cpx-fp8"
    assert sel.recipe.limits["amd.com/gpu"] == 1  # single naming


# ---- dense packing ----


def test_a_small_recipe_is_packed_onto_the_node_already_in_use_before_an_empty_one():
    doc = cluster(
        [mig_mixed("empty-a", {"3g.40gb": 16}), mig_mixed("busy", {"3g.40gb": 16}), mig_mixed("empty-b", {"3g.40gb": 16})],
        [pod("other", "busy", gpus=3, resource="nvidia.com/mig-3g.40gb")],
    )
    sel = run_select(BUNDLE, doc, model_id=QWEN8)
    assert sel.packing.preferred == "busy" and sel.placement[0] == "busy"
    packed = next(f for f in sel.candidates[0].reasons if f.code == "PACKED")
    assert "packed onto busy, which already has 3 device(s) in use" in packed.message
    assert "12 of its 16 nvidia.com/mig-3g.40gb stay free" in packed.message and "2 empty node(s)" in packed.message


def test_among_nodes_in_use_the_fullest_that_fits_is_chosen_and_a_full_one_is_skipped():
    doc = cluster(
        [mig_mixed("half", {"3g.40gb": 16}), mig_mixed("nearly", {"3g.40gb": 16}), mig_mixed("full", {"3g.40gb": 16})],
        [
            pod("a", "half", gpus=8, resource="nvidia.com/mig-3g.40gb"),
            pod("b", "nearly", gpus=15, resource="nvidia.com/mig-3g.40gb"),
            pod("c", "full", gpus=16, resource="nvidia.com/mig-3g.40gb"),
        ],
    )
    sel = run_select(BUNDLE, doc, model_id=QWEN8)
    assert sel.packing.preferred == "nearly" and sel.placement == ("nearly", "half")


def test_an_empty_cluster_is_not_packed():
    sel = run_select(BUNDLE, cluster([mig_mixed("a", {"3g.40gb": 4}), mig_mixed("b", {"3g.40gb": 4})]), model_id=QWEN8)
    assert sel.packing.preferred is None and not any(f.code == "PACKED" for f in sel.candidates[0].reasons)


def test_the_packing_preference_and_the_partition_resource_reach_the_node_affinity():
    doc = cluster(
        [mig_single("single"), mig_mixed("mixed", {"3g.40gb": 4}), gfd_node("whole", "H100")],
        [pod("x", "single", gpus=1)],
    )
    inv = build_inventory(HW, *split(doc))
    single = product_node_affinity(inv, "H100-MIG-3g.40gb", resource="nvidia.com/gpu", preferred_hostname="single")
    assert single.as_terms() == [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3-MIG-3g.40gb"]}
            ]
        }
    ]
    assert [t.as_dict() for t in single.preferred] == [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["single"]}]}
    ]
    assert NodeAffinity.parse(single.to_json(), where="t") == single
    mixed = product_node_affinity(inv, "H100-MIG-3g.40gb", resource="nvidia.com/mig-3g.40gb")
    assert mixed.as_terms()[0]["matchExpressions"][0]["values"] == ["NVIDIA-H100-80GB-HBM3"]


def test_amd_partition_affinity_names_the_product_and_the_partition_style():
    inv = build_inventory(HW, *split(cluster([amd_partitioned("a", "MI300X", "cpx_nps4", 64), amd_node("w", "MI300X")])))
    terms = product_node_affinity(inv, "MI300X-CPX").as_terms()
    assert [e["key"] for e in terms[0]["matchExpressions"]] == [
        "amd.com/gpu.product-name",
        "amd.com/gpu.compute-memory-partition",
    ]


# ---- the webhook ----


def deployment(recipe_id: str, device: dict[str, str], *, args: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns", "labels": {"aim-engine.io/recipe-id": recipe_id}},
        "spec": {
            "template": {
                "metadata": {"labels": {"aim-engine.io/recipe-id": recipe_id}},
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai",
                            "args": ["--model", QWEN8, *(args or [])],
                            "resources": {"limits": dict(device), "requests": dict(device)},
                        }
                    ]
                },
            }
        },
    }


def webhook_codes(obj: dict[str, Any], recipe: Any) -> list[str]:
    workload = parse_workload(obj, kind="Deployment", namespace="ns")
    found = check_workload(
        workload, recipe, model=BUNDLE.models.get(QWEN8), catalog=HW, registry=BUNDLE.registry, toggles=Toggles()
    )
    return codes(found)


@pytest.mark.parametrize(
    ("recipe", "device", "code"),
    [
        (MIG_RECIPE, {"nvidia.com/mig-1g.10gb": "1"}, "PARTITION_MISMATCH"),
        (MIG_RECIPE, {"amd.com/gpu": "1"}, "GPU_VENDOR_MISMATCH"),
        ("qwen3-8b-h100-1gpu-bf16", {"nvidia.com/mig-3g.40gb": "1"}, "PARTITION_MISMATCH"),
        (CPX_RECIPE, {"amd.com/dpx_nps2": "1"}, "PARTITION_MISMATCH"),
    ],
)
def test_the_webhook_refuses_the_wrong_device(recipe, device, code):
    recipe = recipe if not isinstance(recipe, str) else next(r for r in BUNDLE.recipes if r.recipe_id == recipe)
    obj = apply(
        deployment(recipe.recipe_id, {}),
        mutate(parse_workload(deployment(recipe.recipe_id, {}), kind="Deployment", namespace="ns"), recipe, catalog=HW).patch,
    )
    res = obj["spec"]["template"]["spec"]["containers"][0]["resources"]
    for kind in ("limits", "requests"):
        for name in [k for k in res[kind] if "gpu" in k or "mig" in k or "px_" in k]:
            del res[kind][name]
        res[kind].update(device)
    assert code in webhook_codes(obj, recipe)


def test_mutation_injects_the_partition_resource_the_vendor_toleration_and_the_packing_preference():
    obj = deployment(MIG_RECIPE.recipe_id, {})
    affinity = NodeAffinity.parse(
        '{"nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",'
        ' "values": ["NVIDIA-H100-80GB-HBM3"]}]}], "preferred": [{"matchExpressions": [{"key": "kubernetes.io/hostname",'
        ' "operator": "In", "values": ["busy"]}]}]}',
        where="t",
    )
    m = mutate(parse_workload(obj, kind="Deployment", namespace="ns"), MIG_RECIPE, catalog=HW, node_affinity=affinity)
    out = apply(obj, m.patch)
    spec = out["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/mig-3g.40gb"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    preferred = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["weight"] == PACKING_WEIGHT
    assert preferred[0]["preference"]["matchExpressions"][0]["values"] == ["busy"]
    assert webhook_codes(out, MIG_RECIPE) == []
    again = mutate(parse_workload(out, kind="Deployment", namespace="ns"), MIG_RECIPE, catalog=HW, node_affinity=affinity)
    assert again.patch == []  # idempotent


# ---- software memory clamps (HAMi) ----

WHOLE = next(r for r in BUNDLE.recipes if r.recipe_id == "qwen3-8b-h100-1gpu-bf16")


def clamped(limits: dict[str, str], *args: str) -> dict[str, Any]:
    obj = deployment(WHOLE.recipe_id, {})
    obj = apply(obj, mutate(parse_workload(obj, kind="Deployment", namespace="ns"), WHOLE, catalog=HW).patch)
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"].update(limits)
    container["args"] = [*container["args"], *args]
    return obj


def clamp_findings(obj: dict[str, Any]) -> list[Any]:
    workload = parse_workload(obj, kind="Deployment", namespace="ns")
    found = check_workload(
        workload, WHOLE, model=BUNDLE.models.get(QWEN8), catalog=HW, registry=BUNDLE.registry, toggles=Toggles()
    )
    return [f for f in found if f.code == "MEMORY_CLAMP_UTILIZATION"]


def test_a_clamp_that_holds_the_model_with_eager_mode_is_admitted():
    assert clamp_findings(clamped({"nvidia.com/gpumem": "40000"}, "--enforce-eager")) == []
    assert clamp_findings(clamped({"nvidia.com/gpumem-percentage": "50"}, "--enforce-eager")) == []


def test_cuda_graphs_under_a_clamp_are_refused_with_the_fix():
    (f,) = clamp_findings(clamped({"nvidia.com/gpumem": "40000"}))
    assert "CUDA-graph memory profiling" in f.message and "--enforce-eager" in f.fix


def test_a_utilisation_the_clamp_cannot_have_free_at_start_is_refused():
    (f,) = clamp_findings(clamped({"nvidia.com/gpumem": "40000"}, "--enforce-eager", "--gpu-memory-utilization", "0.995"))
    assert "needs --gpu-memory-utilization 0.995 of it (39800 MiB) free at start" in f.message
    assert "set --gpu-memory-utilization <= 0.99" in f.fix


def test_a_clamp_too_small_for_the_model_says_how_much_it_needs():
    (f,) = clamp_findings(clamped({"nvidia.com/gpumem": "20000"}, "--enforce-eager"))
    assert "within the GPU memory clamp of 20000 MiB (nvidia.com/gpumem 20000)" in f.message
    assert f.fix.startswith("raise nvidia.com/gpumem to at least ")


def test_a_kv_cache_in_bytes_takes_the_utilisation_arithmetic_out():
    found = clamp_findings(
        clamped({"nvidia.com/gpumem": "40000"}, "--gpu-memory-utilization", "0.999", "--kv-cache-memory-bytes", "8000000000")
    )
    assert found == []
