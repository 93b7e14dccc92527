"""Hook mode through the real Kubernetes client against an API server over HTTP: paginated reads,
the selection ConfigMap (create, update with conflict retry, nothing lost on failure), the Event,
the custom-recipe ConfigMap, and the selection metrics rendered after the Job has gone."""

from __future__ import annotations

import json

import pytest
import yaml
from fake_apiserver import FakeApiServer

from aim_engine.adapters import kube as kube_mod
from aim_engine.cli.main import main
from k8s_objects import amd_node, gfd_node, pod

CUSTOM = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "custom-recipe", "namespace": "aim-engine"},
    "data": {
        "recipe.yaml": yaml.safe_dump(
            {
                "recipe_id": "custom-qwen-32b-4gpu-bf16",
                "huggingface_id": "Qwen/Qwen3-32B",
                "hardware": "MI300X",
                "gpu_count": 4,
                "precision": "bf16",
                "backend": "vllm",
                "config": {"args": {"tensor_parallel_size": 4, "max_model_len": 32768}},
            }
        )
    },
}


@pytest.fixture
def api(tmp_path, monkeypatch):
    nodes = [amd_node(f"mi300x-{i}", "MI300X") for i in range(7)] + [gfd_node("h100-0", "H100")]
    pods = [pod(f"p{i}", f"mi300x-{i}", gpus=8, resource="amd.com/gpu") for i in range(6)]
    pods.append(pod("done", "mi300x-6", gpus=8, resource="amd.com/gpu", phase="Succeeded"))
    monkeypatch.setattr(kube_mod, "PAGE", 3)  # force several pages
    monkeypatch.setattr(kube_mod, "SA_NAMESPACE", tmp_path / "no-sa")
    with FakeApiServer(nodes, pods) as server:
        server.kubeconfig_path = server.kubeconfig(tmp_path / "kubeconfig")
        yield server


def hook(capsys, api, *extra):
    code = main(
        [
            "select",
            "--kubeconfig",
            api.kubeconfig_path,
            "--namespace",
            "aim-engine",
            "--write-configmap",
            "aim-engine-recipe-config",
            "--release",
            "aim-engine",
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_hook_reads_all_pages_and_writes_the_selection(capsys, api):
    code, out, _ = hook(capsys, api, "--model", "Qwen/Qwen3-32B")
    assert code == 0
    assert sum(1 for r in api.requests if r.startswith("GET /api/v1/nodes")) == 3  # 8 nodes, pages of 3
    cm = api.configmaps[("aim-engine", "aim-engine-recipe-config")]
    recipe = yaml.safe_load(cm["data"]["recipe.yaml"])
    assert recipe["recipe_id"] == "qwen3-32b-mi300x-1gpu-fp8"  # mi300x-6 is free: its Succeeded pod does not count
    assert cm["metadata"]["labels"]["aim-engine.io/recipe-id"] == recipe["recipe_id"]
    assert cm["metadata"]["annotations"]["aim-engine.io/selection-level"] == "primary"
    assert json.loads(cm["data"]["selection.json"])["level"] == "primary"
    # How the webhook keeps the pods on the selected product's nodes (h100-0 is left out): the product
    # and the devices' memory, so that whole-GPU pods never land on a CPX node without the partition label.
    assert json.loads(cm["data"]["node-affinity.json"]) == {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {"key": "amd.com/gpu.product-name", "operator": "In", "values": ["AMD_Instinct_MI300X_OAM"]},
                    {"key": "amd.com/gpu.vram", "operator": "In", "values": ["192G"]},
                ]
            }
        ]
    }
    assert "Selected (primary)" in cm["data"]["explanation.txt"]
    assert "Selected (primary): qwen3-32b-mi300x-1gpu-fp8" in out  # the Job log alone says what and why
    assert api.events[-1]["reason"] == "RecipeSelected"


def test_a_failed_selection_keeps_the_previous_recipe_and_counts(capsys, api):
    assert hook(capsys, api, "--model", "Qwen/Qwen3-32B")[0] == 0
    code, out, _ = hook(capsys, api, "--model", "Qwen/Qwen3-32B", "--precision", "fp8", "--gpu-type", "A100")
    assert code == 1 and "No recipe selected" in out
    cm = api.configmaps[("aim-engine", "aim-engine-recipe-config")]
    assert yaml.safe_load(cm["data"]["recipe.yaml"])["recipe_id"] == "qwen3-32b-mi300x-1gpu-fp8"  # nothing lost
    assert json.loads(cm["data"]["last-attempt.json"])["result"] == "not_found"
    counts = json.loads(cm["data"]["selection-metrics.json"])["totals"]
    assert counts == {"not_found/none": 1, "selected/primary": 1}
    assert api.events[-1]["reason"] == "RecipeNotFound" and api.events[-1]["type"] == "Warning"


def test_write_conflicts_are_retried(capsys, api):
    assert hook(capsys, api, "--model", "Qwen/Qwen3-32B")[0] == 0
    api.conflicts_to_inject = 2
    assert hook(capsys, api, "--model", "Qwen/Qwen3-32B")[0] == 0
    counts = json.loads(api.configmaps[("aim-engine", "aim-engine-recipe-config")]["data"]["selection-metrics.json"])
    assert counts["totals"]["selected/primary"] == 2


def test_custom_recipe_configmap_is_pinned(capsys, api):
    api.configmaps[("aim-engine", "custom-recipe")] = {**CUSTOM, "metadata": {**CUSTOM["metadata"], "resourceVersion": "1"}}
    code, _, _ = hook(capsys, api, "--recipe-configmap", "custom-recipe")
    assert code == 0
    cm = api.configmaps[("aim-engine", "aim-engine-recipe-config")]
    assert yaml.safe_load(cm["data"]["recipe.yaml"])["recipe_id"] == "custom-qwen-32b-4gpu-bf16"


def test_missing_custom_recipe_configmap_says_how_to_create_it(capsys, api):
    code, _, err = hook(capsys, api, "--recipe-configmap", "nope")
    assert code == 2 and "custom recipe ConfigMap aim-engine/nope not found" in err and "kubectl apply" in err


def test_reclaim_label_counts_the_releases_own_pods_as_free(capsys, api):
    api.pods[0]["metadata"]["labels"] = {"app.kubernetes.io/instance": "aim-engine"}  # the release's vLLM pod
    api.pods.append(pod("busy-amd", "mi300x-6", gpus=8, resource="amd.com/gpu"))
    api.pods.append(pod("busy-nvidia", "h100-0", gpus=8))
    code, out, _ = hook(capsys, api, "--model", "Qwen/Qwen3-32B")
    assert code == 1, out
    code, _, _ = hook(capsys, api, "--model", "Qwen/Qwen3-32B", "--reclaim-label", "app.kubernetes.io/instance=aim-engine")
    assert code == 0
    cm = api.configmaps[("aim-engine", "aim-engine-recipe-config")]
    assert json.loads(cm["data"]["selection.json"])["placement"] == ["mi300x-0"]


def test_metrics_rendered_from_the_configmap_after_the_job(capsys, api):
    hook(capsys, api, "--model", "Qwen/Qwen3-32B")
    hook(capsys, api, "--model", "Qwen/Qwen3-32B", "--precision", "fp8", "--gpu-type", "A100")
    code = main(["metrics", "--kubeconfig", api.kubeconfig_path, "--namespace", "aim-engine"])
    out = capsys.readouterr().out
    assert code == 0
    assert 'aim_recipe_selection_total{level="none",namespace="aim-engine",release="aim-engine",result="not_found"} 1.0' in out
    assert 'result="selected"} 1.0' in out
    assert "aim_recipe_selected_info{" not in out  # the last run found nothing
    assert "aim_recipe_selection_last_duration_seconds" in out


def test_unreachable_api_server_is_a_clear_system_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(kube_mod, "SA_NAMESPACE", tmp_path / "no-sa")
    cfg = tmp_path / "kc"
    cfg.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
                "users": [{"name": "x", "user": {"token": "t"}}],
            }
        )
    )
    code = main(["detect", "--kubeconfig", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the API server" in err and "Traceback" not in err


def test_no_credentials_says_what_to_do(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(kube_mod, "SA_NAMESPACE", tmp_path / "no-sa")
    code = main(["detect", "--kubeconfig", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and "--cluster FILE" in err


def test_keep_existing_keeps_a_restored_recipe(capsys, api):
    assert hook(capsys, api, "--model", "Qwen/Qwen3-32B")[0] == 0
    before = api.configmaps[("aim-engine", "aim-engine-recipe-config")]["data"]["recipe.yaml"]
    code, out, _ = hook(capsys, api, "--model", "meta-llama/Llama-3.1-8B-Instruct", "--keep-existing")
    assert code == 0 and "Kept the recipe restored" in out and "qwen3-32b-mi300x-1gpu-fp8" in out
    assert api.configmaps[("aim-engine", "aim-engine-recipe-config")]["data"]["recipe.yaml"] == before


def test_catalog_recipe_pin_and_single_node(capsys, api):
    code, _, _ = hook(capsys, api, "--catalog-recipe", "qwen3-32b-mi300x-4gpu-bf16")
    assert code == 0
    cm = api.configmaps[("aim-engine", "aim-engine-recipe-config")]
    assert yaml.safe_load(cm["data"]["recipe.yaml"])["recipe_id"] == "qwen3-32b-mi300x-4gpu-bf16"
    code, out, _ = hook(capsys, api, "--model", "deepseek-ai/DeepSeek-R1", "--single-node", "-o", "json")
    assert "deepseek-r1-h100-16gpu-fp8" not in out
