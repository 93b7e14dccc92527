"""The selector never outputs a recipe its own rules refuse (issue 24): over the example clusters and
clusters labelled the way GPU Feature Discovery and AMD's GPU Operator label partitioned nodes,
for every catalog model and the requests that reach every selection level, whatever `select`
returns passes `aim-recipes validate`'s rules (static_findings) and the webhook's rules for the
Deployment it would create (mutate, then check_workload). A request the selector cannot place
correctly has no recipe and says what would fit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aim_engine.adapters.catalog import load_bundle
from aim_engine.cluster.inventory import build_inventory, split_list
from aim_engine.domain.model_config import model_from_hf_config
from aim_engine.rules.compat import static_findings
from aim_engine.rules.pod import parse_workload
from aim_engine.rules.workload import Toggles, check_workload
from aim_engine.selection.request import Request
from aim_engine.selection.selector import select
from aim_webhook.mutate import apply, mutate
from k8s_objects import AMD, GFD, amd_node, cluster, gfd_node, node
from support import FIXTURES, ROOT, run_select

BUNDLE = load_bundle()
HW = BUNDLE.hardware


def _mig_single(name: str, profile: str, count: int) -> dict[str, Any]:
    labels = {
        "nvidia.com/gpu.product": f"NVIDIA-H100-80GB-HBM3-MIG-{profile}",
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/gpu.count": str(count),
    }
    return node(name, labels=labels, gpus=count, resource="nvidia.com/gpu")


def _mig_mixed(name: str, devices: dict[str, int]) -> dict[str, Any]:
    n = gfd_node(name, "H100", gpus=0)
    n["metadata"]["labels"]["nvidia.com/mig.strategy"] = "mixed"
    for profile, count in devices.items():
        n["status"]["allocatable"][f"nvidia.com/mig-{profile}"] = str(count)
    return n


def _amd_partitioned(name: str, style: str, count: int, vram: str) -> dict[str, Any]:
    """AMD's node labeller with -compute-memory-partition: the per-partition memory in gpu.vram."""
    labels = {"amd.com/gpu.compute-memory-partition": style, "amd.com/gpu.vram": vram}
    return amd_node(name, "MI300X", gpus=count, labels=labels)


CLUSTERS: dict[str, dict[str, Any]] = {
    **{p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("cluster-*.json"))},
    "mig-single-3g": cluster([_mig_single("m0", "3g.40gb", 16), _mig_single("m1", "3g.40gb", 16)]),
    "mig-single-1g": cluster([_mig_single("m0", "1g.10gb", 56)]),
    "mig-mixed": cluster([_mig_mixed("m0", {"1g.10gb": 14, "3g.40gb": 4}), _mig_mixed("m1", {"7g.80gb": 8})]),
    "cpx-labelled": cluster([_amd_partitioned(f"a{i}", "cpx_nps4", 64, "24G") for i in range(2)]),
    "dpx-labelled": cluster([_amd_partitioned("a0", "dpx_nps2", 16, "96G")]),
    "whole": cluster([gfd_node("h0", "H100", gpus=8), amd_node("a0", "MI300X", gpus=8)]),
    # one node of every whole GPU the labels name (GPU Feature Discovery's and AMD's labeller's values)
    "every-product": cluster(
        [gfd_node(f"n-{p.lower()}", p, gpus=8) for p in sorted(GFD)] + [amd_node(f"a-{p.lower()}", p) for p in sorted(AMD)]
    ),
    # the GPU Operator's default labeller arguments: no partition label, only the devices' memory
    "cpx-unlabelled": cluster([amd_node("a0", "MI300X", gpus=64, labels={"amd.com/gpu.vram": "24G"})]),
    "mislabelled": cluster([amd_node("a0", "MI300X", gpus=64), gfd_node("h0", "H100", gpus=8)]),
}

# Requests that reach each level: the catalog, a pinned count (derived / reduced context), a
# precision, and the synthesised default level's refusal (allow_default=False).
REQUESTS: list[dict[str, Any]] = [
    {},
    {"gpu_count": 1},
    {"gpu_count": 2},
    {"gpu_count": 8},
    {"precision": "fp8"},
    {"allow_default": False},
]

MODELS = sorted(BUNDLE.model_map())


def _deployment(model_id: str, recipe_id: str) -> dict[str, Any]:
    labels = {"aim-engine.io/recipe-id": recipe_id}
    container = {"name": "vllm", "image": "vllm/vllm-openai", "args": ["--model", model_id]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns", "labels": labels},
        "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}},
    }


def _webhook_findings(model_id: str, recipe: Any, model: Any) -> list[str]:
    """What the webhook says about the Deployment the chart would create for the recipe."""
    bare = _deployment(model_id, recipe.recipe_id)
    patched = apply(bare, mutate(parse_workload(bare, kind="Deployment", namespace="ns"), recipe, catalog=HW).patch)
    workload = parse_workload(patched, kind="Deployment", namespace="ns")
    assert workload is not None
    found = check_workload(workload, recipe, model=model, catalog=HW, registry=BUNDLE.registry, toggles=Toggles())
    return [f"{f.code}: {f.message}" for f in found]


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_whatever_select_outputs_its_own_rules_accept(name: str) -> None:
    doc = CLUSTERS[name]
    models = BUNDLE.model_map()
    wrong: list[str] = []
    for model_id in MODELS:
        for request in REQUESTS:
            sel = run_select(BUNDLE, doc, model_id=models[model_id].id, **request)
            if sel.recipe is None:
                # refused: the message says what is wrong (and what would fit)
                assert sel.message.strip(), (name, model_id, request)
                continue
            recipe, model = sel.recipe, models[model_id]
            static, _ = static_findings(recipe, model=model, catalog=HW, registry=BUNDLE.registry)
            refused = [f"{f.code}: {f.message}" for f in static]
            if recipe.nodes == 1:
                refused += _webhook_findings(model.id, recipe, model)
            if refused:
                wrong.append(f"{model_id} {request} -> {recipe.recipe_id} ({sel.level}) on {recipe.hardware}: {refused}")
    assert not wrong, "\n".join(wrong)


def test_a_70b_model_on_mig_and_cpx_goes_to_whole_gpus_or_cpx_never_joined_mig() -> None:
    # issue 24, case 1: 8 x MIG 3g.40gb with TP 8 was selected; CPX partitions have no such bound
    sel = run_select(BUNDLE, CLUSTERS["cluster-partitions"], model_id="meta-llama/Llama-3.1-70B-Instruct")
    assert sel.recipe is not None and not sel.recipe.hardware.startswith("H100-MIG"), sel.recipe
    refused = run_select(BUNDLE, CLUSTERS["mig-single-3g"], model_id="meta-llama/Llama-3.1-70B-Instruct")
    assert refused.recipe is None
    assert "MIG" in refused.message or "partition" in refused.message.lower(), refused.message


def test_a_pinned_count_above_the_partition_bound_says_why() -> None:
    sel = run_select(BUNDLE, CLUSTERS["mig-single-1g"], model_id="Qwen/Qwen3-8B", gpu_count=4)
    assert sel.recipe is None
    assert "vLLM cannot join 4 MIG 1g.10gb; at most 1 per engine" in sel.message, sel.message


# ---- packing at the default level: the smallest device that holds the model ----

LLAMA_1B = model_from_hf_config(
    "meta-llama/Llama-3.2-1B-Instruct", json.loads((FIXTURES / "configs" / "llama-3.2-1b-instruct.config.json").read_text())
)


def _default_select(doc: dict[str, Any]) -> Any:
    nodes, pods = split_list(doc)
    return select(
        request=Request(model_id=LLAMA_1B.id),
        recipes=BUNDLE.recipes,
        models=BUNDLE.model_map(LLAMA_1B),
        catalog=HW,
        registry=BUNDLE.registry,
        inventory=build_inventory(HW, nodes, pods),
    )


@pytest.mark.parametrize(
    ("name", "doc", "hardware"),
    [
        # a 1g.10gb cannot keep the whole 131072-token context: the 3g.40gb is the smallest that does
        ("mig", cluster([gfd_node("h", "H100", gpus=8), _mig_mixed("m", {"1g.10gb": 7, "3g.40gb": 2})]), "H100-MIG-3g.40gb"),
        ("cpx", cluster([amd_node("a", "MI300X"), _amd_partitioned("c", "cpx_nps4", 64, "24G")]), "MI300X-CPX"),
        # whole GPUs: the smaller H100 before the faster, larger H200
        ("whole", cluster([gfd_node("h2", "H200"), gfd_node("h1", "H100")]), "H100"),
    ],
)
def test_a_small_model_without_a_recipe_takes_the_smallest_device_that_holds_it(name: str, doc: Any, hardware: str) -> None:
    sel = _default_select(doc)
    assert sel.level == "default" and sel.recipe is not None and sel.recipe.hardware == hardware, sel.message
    note = next(f for f in sel.candidates[0].reasons if f.code == "SMALLEST_DEVICE")
    assert note.message.startswith(f"synthesised for 1 x {hardware} (")
    assert "the smallest device that holds meta-llama/Llama-3.2-1B-Instruct (131072 tokens of context)" in note.message
    assert "faster memory breaks ties only between devices that pack equally" in note.message
    static, _ = static_findings(sel.recipe, model=LLAMA_1B, catalog=HW, registry=BUNDLE.registry)
    assert static == []


# ---- AMD partitions without the partition label; implausible counts ----


def test_an_unlabelled_cpx_node_is_read_from_its_memory_label_and_a_70b_model_is_not_put_on_one_partition() -> None:
    doc = CLUSTERS["cpx-unlabelled"]
    inv = build_inventory(HW, *split_list(doc))
    (view,) = inv.nodes
    assert view.product is not None and view.product.name == "MI300X-CPX" and view.usable
    assert any("CPX inferred from amd.com/gpu.vram=24G" in n for n in view.notes)
    sel = run_select(BUNDLE, doc, model_id="meta-llama/Llama-3.1-70B-Instruct")
    # 70B over CPX partitions, never one partition planned as a whole 192 GB MI300X
    assert sel.recipe is not None and sel.recipe.hardware == "MI300X-CPX" and sel.recipe.gpu_count >= 4, sel.message
    small = run_select(BUNDLE, doc, model_id="Qwen/Qwen3-8B")
    assert small.recipe is not None and small.recipe.recipe_id == "qwen3-8b-mi300x-cpx-fp8"


def test_more_devices_than_the_product_can_partition_into_is_refused_with_the_nodes_name() -> None:
    inv = build_inventory(HW, *split_list(CLUSTERS["mislabelled"]))
    amd = next(v for v in inv.nodes if v.name == "a0")
    assert not amd.usable
    assert amd.reason.startswith("node a0 advertises 64 amd.com/gpu as whole MI300X GPUs, more than 16")
    sel = run_select(BUNDLE, CLUSTERS["mislabelled"], model_id="meta-llama/Llama-3.1-70B-Instruct", gpu_type="MI300X")
    assert sel.recipe is None and "node a0 advertises 64 amd.com/gpu" in sel.message, sel.message


@pytest.mark.parametrize(
    ("labels", "product", "usable", "said"),
    [
        ({"amd.com/gpu.vram": "96G"}, "MI300X-DPX", True, "DPX inferred from amd.com/gpu.vram=96G"),
        ({"amd.com/gpu.vram": "50G"}, "MI300X", False, "matches neither MI300X (196592 MiB) nor a partition of it"),
        ({"amd.com/gpu.vram": "lots"}, "MI300X", False, "amd.com/gpu.vram=lots is not a memory size"),
        # labelled DPX but the devices report a CPX partition's memory: the memory wins for fit
        (
            {"amd.com/gpu.compute-memory-partition": "dpx_nps2", "amd.com/gpu.vram": "24G"},
            "MI300X-CPX",
            True,
            "the devices' memory wins, planned as MI300X-CPX",
        ),
        # more memory than the labelled partition's (NPS1 may report the GPU's): the partition's is planned
        (
            {"amd.com/gpu.compute-memory-partition": "cpx_nps1", "amd.com/gpu.vram": "192G"},
            "MI300X-CPX",
            True,
            "planned at the partition's 24574 MiB",
        ),
        (
            {"amd.com/gpu.compute-memory-partition": "cpx_nps4", "amd.com/gpu.vram": "10G"},
            "MI300X-CPX",
            False,
            "less than any mode offers",
        ),
    ],
)
def test_the_amd_memory_label_is_cross_checked_against_the_product(
    labels: dict[str, str], product: str, usable: bool, said: str
) -> None:
    inv = build_inventory(HW, [amd_node("a", "MI300X", gpus=16, labels=labels)], [])
    (view,) = inv.nodes
    assert view.product is not None and view.product.name == product and view.usable is usable
    assert said in (view.reason if not usable else " ".join(view.notes)), (view.reason, view.notes)


def test_detect_shows_the_partition_mode_and_the_label_that_says_it(capsys: Any) -> None:
    from aim_engine.cli.main import main

    assert main(["detect", "--cluster", str(ROOT / "examples" / "cluster-partitions.json"), "-o", "json"]) == 0
    nodes = {(n["name"], n["resource"]): n["partition"] for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert nodes[("h100-mig-0", "nvidia.com/mig-3g.40gb")] == {"mode": "3g.40gb", "source": "nvidia.com/mig-3g.40gb"}
    assert nodes[("h100-mig-single-0", "nvidia.com/gpu")] == {"mode": "3g.40gb", "source": "nvidia.com/gpu.product"}
    assert nodes[("mi300x-cpx-0", "amd.com/gpu")] == {"mode": "CPX", "source": "amd.com/gpu.compute-memory-partition"}
    inv = build_inventory(HW, *split_list(CLUSTERS["cpx-unlabelled"]))
    assert inv.nodes[0].partition_source == "amd.com/gpu.vram (inferred)"
    whole = build_inventory(HW, *split_list(CLUSTERS["whole"]))
    assert {n.partition_source for n in whole.nodes} == {""}
