"""CPU as a hardware class: which nodes serve vLLM's CPU build, the CPU memory plan, and the
rules a CPU recipe and its workload follow."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from aim_engine.adapters.catalog import load_bundle
from aim_engine.cluster.detect import detect_cpu
from aim_engine.cluster.inventory import build_inventory
from aim_engine.domain.quantity import GIB
from aim_engine.rules.compat import recipe_memory, static_findings
from k8s_objects import gfd_node, node
from support import run_select

BUNDLE = load_bundle()
CPU = BUNDLE.hardware.require("CPU-x86")
TINY = next(r for r in BUNDLE.recipes if r.recipe_id == "tiny-llama-cpu-x86-bf16")
QWEN = next(r for r in BUNDLE.recipes if r.recipe_id == "qwen3-0.6b-cpu-x86-bf16")
AMD64 = {"kubernetes.io/arch": "amd64"}
NFD_AVX512 = {"feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true", "feature.node.kubernetes.io/cpu-cpuid.AVX2": "true"}


def codes(findings):
    return [f.code for f in findings]


def test_a_cpu_product_is_not_a_gpu_resource():
    assert CPU.is_cpu and CPU.vendor == "cpu"
    assert "cpu" not in BUNDLE.hardware.gpu_resources
    assert BUNDLE.hardware.vendors == ("amd", "nvidia", "cpu")


@pytest.mark.parametrize(
    ("labels", "product", "note"),
    [
        ({**AMD64, **NFD_AVX512}, "CPU-x86", None),
        (AMD64, "CPU-x86", "no Node Feature Discovery CPU labels"),
        ({**AMD64, "feature.node.kubernetes.io/cpu-cpuid.AVX2": "true"}, None, "needs CPU features AVX512F"),
        ({"kubernetes.io/arch": "arm64"}, None, None),
        ({}, None, "no kubernetes.io/arch label"),
    ],
)
def test_cpu_detection_by_architecture_and_nfd_features(labels, product, note):
    det = detect_cpu(BUNDLE.hardware, labels)
    assert (det.product.name if det.product else None) == product
    if note:
        assert any(note in n for n in det.notes), det.notes


def test_a_node_without_gpus_is_one_cpu_engine_slot_with_its_free_cores_and_memory():
    cpu_node = node("worker-0", labels={**AMD64, **NFD_AVX512})
    cpu_node["status"]["allocatable"].update(cpu="16", memory="64Gi")
    busy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "other", "namespace": "x"},
        "spec": {
            "nodeName": "worker-0",
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "2500m", "memory": "8Gi"}}}],
        },
        "status": {"phase": "Running"},
    }
    inv = build_inventory(BUNDLE.hardware, [cpu_node, gfd_node("h100-0", "H100")], [busy])
    worker = next(n for n in inv.nodes if n.name == "worker-0")
    assert worker.usable and worker.product is CPU and worker.resource == "cpu"
    assert (worker.allocatable, worker.free) == (1, 1)
    assert worker.cpu_free == Decimal("13.5") and worker.memory_free == 56 * GIB
    assert inv.capacity("CPU-x86") is not None and inv.capacity("H100") is not None


def test_a_gpu_node_is_never_a_cpu_node():
    inv = build_inventory(BUNDLE.hardware, [gfd_node("h100-0", "H100", labels=AMD64)], [])
    assert inv.nodes[0].product is not None and inv.nodes[0].product.name == "H100"


def test_the_cpu_memory_plan_is_weights_runtime_and_the_kv_space_within_the_memory_request():
    plan = recipe_memory(QWEN, BUNDLE.models.get(QWEN.huggingface_id), CPU)
    assert plan.budget == 8 * GIB  # the memory request
    assert plan.kv_budget == 2 * GIB  # VLLM_CPU_KVCACHE_SPACE
    assert plan.overhead == Decimal("3.5") * GIB
    assert plan.fits and plan.max_model_len_fit >= 8192
    assert _static(QWEN) == []


def _static(recipe):
    model = BUNDLE.models.get(recipe.huggingface_id)
    return static_findings(recipe, model=model, catalog=BUNDLE.hardware, registry=BUNDLE.registry)[0]


def _with(recipe, **changes):
    return dataclasses.replace(recipe, raw={}, **changes)


def _findings(recipe):
    return codes(_static(recipe))


def test_a_memory_request_that_cannot_hold_weights_runtime_and_kv_is_refused_with_the_size_needed():
    small = _with(QWEN, requests={**QWEN.requests, "memory": 4 * GIB})
    found = _static(small)
    assert codes(found) == ["INSUFFICIENT_MEMORY"]
    assert "raise resources.requests.memory to at least" in found[0].fix


def test_a_kv_space_too_small_for_the_context_is_refused():
    tight = _with(QWEN, env={"VLLM_CPU_KVCACHE_SPACE": "0.5"}, args={**QWEN.args, "max_model_len": 40960})
    assert "KV_CACHE_TOO_SMALL" in _findings(tight)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"gpu_count": 2, "args": {**TINY.args, "tensor_parallel_size": 2}}, "CPU_ONE_ENGINE"),
        ({"requests": {}}, "CPU_RESOURCES_MISSING"),
        ({"env": {}}, "CPU_KV_CACHE_UNSET"),
        ({"precision": "fp8"}, "PRECISION_UNSUPPORTED"),
    ],
)
def test_cpu_recipe_rules(changes, code):
    assert code in _findings(_with(TINY, **changes))


# ---------------------------------------------------------------- selection


def _cpu_node(name="worker-0", *, cpu="2", memory="24Gi"):
    n = node(name, labels={**AMD64, **NFD_AVX512})
    n["status"]["allocatable"].update(cpu=cpu, memory=memory)
    return n


def _cluster(*nodes_):
    return {"apiVersion": "v1", "kind": "List", "items": list(nodes_)}


def test_a_cluster_without_gpus_gets_the_cpu_recipe_at_the_primary_level():
    sel = run_select(BUNDLE, _cluster(_cpu_node()), model_id="aim-engine/tiny-llama")
    assert (sel.recipe.recipe_id, sel.level) == ("tiny-llama-cpu-x86-bf16", "primary")
    assert sel.placement == ("worker-0",)


def test_gpu_recipes_win_where_gpus_are_and_the_cpu_recipe_says_how_to_ask_for_it():
    sel = run_select(BUNDLE, _cluster(_cpu_node(), gfd_node("h100-0", "H100")), model_id="Qwen/Qwen3-0.6B")
    assert sel.recipe is None or sel.recipe.hardware != "CPU-x86"
    cpu = next(c for c in sel.candidates if c.recipe.recipe_id == "qwen3-0.6b-cpu-x86-bf16")
    assert [f.code for f in cpu.reasons] == ["CPU_NOT_CHOSEN"]
    assert "gpu_type=CPU-x86" in cpu.reasons[0].fix


def test_asking_for_cpu_serves_on_cpu_beside_gpus():
    sel = run_select(BUNDLE, _cluster(_cpu_node(), gfd_node("h100-0", "H100")), model_id="Qwen/Qwen3-0.6B", gpu_type="CPU-x86")
    assert (sel.recipe.recipe_id, sel.level) == ("qwen3-0.6b-cpu-x86-bf16", "primary")


def test_a_cpu_node_without_the_memory_the_recipe_requests_has_no_room():
    sel = run_select(BUNDLE, _cluster(_cpu_node(memory="6Gi")), model_id="Qwen/Qwen3-0.6B", allow_default=False)
    assert sel.recipe is None
    cpu = next(c for c in sel.candidates if c.recipe.recipe_id == "qwen3-0.6b-cpu-x86-bf16")
    assert [f.code for f in cpu.reasons] == ["NO_FREE_CAPACITY"]
    assert "8 GiB" in cpu.reasons[0].message or "8.0 GiB" in cpu.reasons[0].message


def test_the_cpu_product_is_pinned_by_node_name_not_by_the_architecture_gpu_nodes_share():
    from aim_engine.cluster.inventory import product_node_affinity

    inv = build_inventory(BUNDLE.hardware, [_cpu_node(), gfd_node("h100-0", "H100", labels=AMD64)], [])
    assert product_node_affinity(inv, "CPU-x86").as_terms() == [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["worker-0"]}]}
    ]
