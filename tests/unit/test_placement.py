"""Manual placement (the chart's manual-mode hook) and the parallelism a recipe without parallel
sizes gets (seed 004's custom recipe example)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aim_engine.cli.main import main
from aim_engine.cluster.placement import check_placement, placement_request
from aim_engine.domain.recipe import default_parallelism, parse_recipe
from k8s_objects import amd_node, cluster, gfd_node, pod
from support import inventory_of, run_select

ROOT = Path(__file__).resolve().parents[2]
QWEN = "Qwen/Qwen3-32B"


def _place(bundle, doc, **kw):
    request = placement_request(bundle.hardware, **{"gpus_per_pod": 4, "gpu_type": None, **kw})
    return check_placement(inventory_of(bundle, doc), request)


def test_manual_amd_default_lands_on_the_amd_nodes(bundle):
    doc = cluster([amd_node("mi-0", "MI300X"), gfd_node("h-0", "H100")])
    placed = _place(bundle, doc)
    assert placed.ok and placed.nodes == ("mi-0",) and placed.product == "MI300X"


def test_no_room_fails_with_what_has_room(bundle):
    doc = cluster([amd_node("mi-0", "MI300X"), gfd_node("h-0", "H100")], [pod("busy", "mi-0", gpus=6, resource="amd.com/gpu")])
    placed = _place(bundle, doc)
    assert not placed.ok
    assert "0 node(s) have 4 free" in placed.message
    assert "aim_engine.hardware.gpu_type to one of H100" in placed.fix


def test_a_product_shared_resource_must_be_pinned(bundle):
    doc = cluster([gfd_node("h-0", "H100"), gfd_node("a-0", "A100")])
    placed = _place(bundle, doc, gpu_type="H100")
    assert not placed.ok
    assert "could land on A100 nodes (a-0)" in placed.message
    assert "workload.node_selector.nvidia\\.com/gpu\\.product=" in placed.fix
    label = gfd_node("h-0", "H100")["metadata"]["labels"]["nvidia.com/gpu.product"]
    pinned = _place(bundle, doc, gpu_type="H100", node_selector={"nvidia.com/gpu.product": label})
    assert pinned.ok and pinned.nodes == ("h-0",)


def test_a_group_needs_a_node_per_pod(bundle):
    doc = cluster([gfd_node("h-0", "H100")])
    assert not _place(bundle, doc, gpu_type="H100", gpus_per_pod=8, pods=2).ok
    doc = cluster([gfd_node("h-0", "H100"), gfd_node("h-1", "H100")])
    assert _place(bundle, doc, gpu_type="H100", gpus_per_pod=8, pods=2).ok


def test_place_cli_exit_codes_and_termination_message(tmp_path, capsys):
    snap = ROOT / "examples" / "cluster-mixed.json"
    log = tmp_path / "termination-log"
    assert main(["place", "--gpu-count", "4", "--cluster", str(snap)]) == 0
    code = main(["place", "--gpu-count", "4", "--gpu-type", "H100", "--cluster", str(snap), "--termination-log", str(log)])
    assert code == 1
    assert "could land on A100" in log.read_text()
    assert main(["place", "--gpu-count", "3", "--pods", "2", "--cluster", str(snap), "--termination-log", str(log)]) == 2
    assert log.read_text().startswith("error: --gpu-count 3 does not split evenly over 2 pods")
    assert main(["place", "--gpu-count", "1", "--gpu-type", "TPU", "--cluster", str(snap)]) == 2
    assert "unknown GPU product 'TPU'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("gpus", "nodes", "expected"),
    [
        (1, 1, {}),
        (4, 1, {"tensor_parallel_size": 4}),
        (16, 2, {"tensor_parallel_size": 8, "pipeline_parallel_size": 2}),
        (2, 2, {"pipeline_parallel_size": 2}),
        (3, 2, {}),
    ],
)
def test_default_parallelism(gpus, nodes, expected):
    assert default_parallelism(gpu_count=gpus, nodes=nodes) == expected


def _seed_custom_recipe() -> dict:
    """seed 004's custom-recipe ConfigMap, verbatim: gpu_count 4 and no parallel sizes."""
    doc = yaml.safe_load((ROOT / "examples" / "custom-recipe.yaml").read_text())
    return yaml.safe_load(doc["data"]["recipe.yaml"])


def test_the_seeds_custom_recipe_gets_tensor_parallel_over_its_gpus(bundle):
    raw = _seed_custom_recipe()
    assert "tensor_parallel_size" not in raw["config"]["args"]
    recipe = parse_recipe(raw, origin="custom")
    assert recipe.tp == 4 and recipe.pp == 1
    # the written selection (and so the webhook's injected flags) carries it
    assert recipe.to_seed()["config"]["args"]["tensor_parallel_size"] == 4
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, custom_recipe=recipe)
    assert sel.ok and sel.recipe.recipe_id == "custom-qwen-32b-4gpu-bf16", sel.message


def test_default_tp_is_checked_against_the_heads(bundle):
    raw = {**_seed_custom_recipe(), "gpu_count": 3}
    raw["resources"] = {"requests": {"amd.com/gpu": "3"}, "limits": {"amd.com/gpu": "3"}}
    recipe = parse_recipe(raw, origin="custom")
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, custom_recipe=recipe)
    assert not sel.ok
    found = {r.code: r for r in sel.candidates[0].reasons}
    assert "TP_INDIVISIBLE" in found and "1, 2, 4, 8" in found["TP_INDIVISIBLE"].fix


def test_explicit_parallel_sizes_are_taken_as_written():
    raw = {**_seed_custom_recipe()}
    raw["config"] = {"args": {"pipeline_parallel_size": 4}}
    recipe = parse_recipe(raw, origin="custom")
    assert recipe.tp == 1 and recipe.pp == 4


class _FakeKube:
    """Records write_configmap as the API would apply it to what is there."""

    def __init__(self, current):
        self.current = current
        self.written = None

    def write_configmap(self, namespace, name, *, data, labels, annotations, update=None, remove=()):
        meta = self.current.get("metadata", {})
        kept = {k: v for k, v in meta.get("labels", {}).items() if k not in remove}
        self.written = {
            "name": f"{namespace}/{name}",
            "labels": {**kept, **labels},
            "annotations": annotations,
            "data": update(self.current) if update else data,
        }


def test_manual_mode_records_its_placement_where_the_seeds_verification_looks(monkeypatch, capsys):
    import json

    import aim_engine.cli.main as cli

    earlier = {  # what an earlier automatic selection of this release left
        "metadata": {"labels": {"aim-engine.io/recipe-id": "qwen3-32b-mi300x-1gpu-fp8", "app.kubernetes.io/name": "x"}},
        "data": {"recipe.yaml": "recipe_id: x", "selection.json": "{}", "selection-metrics.json": '{"selected": 1}'},
    }
    kube = _FakeKube(earlier)
    monkeypatch.setattr(cli, "_kube", lambda args: kube)
    snap = str(ROOT / "examples" / "cluster-mixed.json")
    argv = ["place", "--gpu-count", "4", "--precision", "bf16", "--backend", "vllm", "--cluster", snap]
    assert main([*argv, "--namespace", "aim-engine", "--write-configmap", "aim-engine-recipe-config"]) == 0
    capsys.readouterr()
    w = kube.written
    assert w["name"] == "aim-engine/aim-engine-recipe-config"
    data = w["data"]
    assert data["mode"] == "manual" and "recipe.yaml" not in data and "selection.json" not in data
    assert data["selection-metrics.json"] == '{"selected": 1}'  # the selection history is kept
    placed = json.loads(data["placement.json"])
    assert placed["fits"] and placed["gpu_count"] == 4 and placed["precision"] == "bf16" and placed["backend"] == "vllm"
    assert placed["product"] == "MI300X" and placed["fits_on"]
    assert "aim-engine.io/recipe-id" not in w["labels"]  # it serves no recipe now
    assert w["annotations"]["aim-engine.io/selection-level"] == "manual"
    # a hand-set workload that does not fit is recorded too, and still fails the hook
    argv = ["place", "--gpu-count", "4", "--gpu-type", "H100", "--cluster", snap, "--namespace", "aim-engine"]
    assert main([*argv, "--write-configmap", "aim-engine-recipe-config"]) == 1
    assert json.loads(kube.written["data"]["placement.json"])["fits"] is False
