"""One set of rules, end to end without a cluster: for every catalog recipe, the workload the chart
renders for it (helm template, recipe pinned by id), as the mutating webhook completes it, is
admitted by the validating rules; and the same workload with one thing broken is refused by that
rule's code. The selector picked the recipe by the same rules (aim_engine.rules.compat), so a
refusal here is a place where the two sides disagree."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aim_engine.adapters.catalog import load_bundle
from aim_engine.cluster.detect import detect_node
from aim_engine.contract import COMPONENT_LABEL
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.pod import parse_workload
from aim_engine.rules.workload import Toggles, check_workload
from aim_webhook.mutate import apply, mutate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import render_chart  # noqa: E402

BUNDLE = load_bundle()
RECIPES = sorted(BUNDLE.recipes, key=lambda r: r.recipe_id)
# Node labels that identify a product (as GPU Feature Discovery and AMD's node labeller write them).
OTHER_NODES = [
    {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    {"amd.com/gpu.product-name": "AMD_Instinct_MI300X_OAM"},
    {"amd.com/gpu.product-name": "AMD_Instinct_MI250X_MI250"},
]


def _render(recipe: Recipe, tmp_path: Path) -> list[dict[str, Any]]:
    values: dict[str, Any] = {"aim_engine": {"model_id": recipe.huggingface_id, "recipe_id": recipe.recipe_id}}
    if recipe.nodes > 1:
        values["workload"] = {"kind": "LeaderWorkerSet", "leader_worker": {"group_size": recipe.nodes}}
        values["model_cache"] = {"access_modes": ["ReadWriteMany"]}
    path = tmp_path / f"{recipe.recipe_id}-values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render_chart.render(render_chart.HELMS["helm3"], "aim-engine", path)
    return [
        d
        for d in docs
        if d["kind"] in ("Deployment", "LeaderWorkerSet") and d["metadata"]["labels"].get(COMPONENT_LABEL) == "inference"
    ]


def _codes(obj: dict[str, Any], recipe: Recipe) -> list[str]:
    workload = parse_workload(obj, kind=obj["kind"], namespace="aim-engine")
    assert workload is not None, "the chart's workload names no recipe"
    found = check_workload(
        workload,
        recipe,
        model=BUNDLE.models.get(recipe.huggingface_id),
        catalog=BUNDLE.hardware,
        registry=BUNDLE.registry,
        toggles=Toggles(),
    )
    return [f.code for f in found]


def _mutated(obj: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    workload = parse_workload(obj, kind=obj["kind"], namespace="aim-engine")
    assert workload is not None
    return apply(obj, mutate(workload, recipe, catalog=BUNDLE.hardware).patch)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    if obj["kind"] == "LeaderWorkerSet":
        return spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    return spec["template"]["spec"]


def _engine(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in _pod_spec(obj)["containers"] if c["name"] == "vllm")


def _with_flags(*flags: str) -> Callable[[dict[str, Any]], None]:
    def breaker(obj: dict[str, Any]) -> None:
        c = _engine(obj)
        c["args"] = [*(c.get("args") or []), *flags]

    return breaker


def _gpu_limit(resource: str, count: int) -> Callable[[dict[str, Any]], None]:
    def breaker(obj: dict[str, Any]) -> None:
        _engine(obj)["resources"]["limits"][resource] = str(count)

    return breaker


def _env(name: str, value: str) -> Callable[[dict[str, Any]], None]:
    def breaker(obj: dict[str, Any]) -> None:
        c = _engine(obj)
        c["env"] = [*(c.get("env") or []), {"name": name, "value": value}]

    return breaker


def _memory(value: str) -> Callable[[dict[str, Any]], None]:
    def breaker(obj: dict[str, Any]) -> None:
        resources = _engine(obj)["resources"]
        resources["requests"]["memory"] = value
        resources["limits"]["memory"] = value

    return breaker


def _node_selector(labels: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    def breaker(obj: dict[str, Any]) -> None:
        _pod_spec(obj)["nodeSelector"] = dict(labels)

    return breaker


def _breakers(recipe: Recipe) -> list[tuple[str, str, Callable[[dict[str, Any]], None]]]:
    product = BUNDLE.hardware.get(recipe.hardware)
    assert product is not None
    model = BUNDLE.models.get(recipe.huggingface_id)
    out = [
        ("another TP size", "PARALLELISM_MISMATCH", _with_flags("--tensor-parallel-size", str(recipe.tp * 2))),
        ("an unknown KV-cache dtype", "INVALID_ARG", _with_flags("--kv-cache-dtype", "fp4")),
        ("a memory utilisation above 1", "INVALID_ARG", _with_flags("--gpu-memory-utilization", "1.5")),
        ("a word for a number", "INVALID_ARG", _with_flags("--max-num-seqs", "many")),
    ]
    if product.is_cpu:
        out += [
            ("a GPU on a CPU recipe", "GPU_ON_CPU_RECIPE", _gpu_limit("nvidia.com/gpu", 1)),
            ("more threads than cores", "CPU_THREADS_OVERSUBSCRIBED", _env("OMP_NUM_THREADS", "64")),
            ("less memory than the recipe", "RESOURCES_BELOW_RECIPE", _memory("1Gi")),
        ]
    else:
        out.append(("another GPU count", "GPU_COUNT_MISMATCH", _gpu_limit(product.resource, recipe.gpus_per_node + 1)))
    if model is not None:
        out.append(
            ("a context beyond the model's", "CONTEXT_EXCEEDS_MODEL", _with_flags("--max-model-len", str(model.max_context * 2)))
        )
    if not product.supports("fp8"):
        out.append(("fp8 where the GPU has none", "PRECISION_UNSUPPORTED", _with_flags("--quantization", "fp8")))
    elif recipe.precision != "fp8":
        out.append(("another precision", "PRECISION_MISMATCH", _with_flags("--quantization", "fp8")))
    for labels in OTHER_NODES:
        detected = detect_node(BUNDLE.hardware, labels, {product.physical.resource: 1}).product
        if detected is not None and detected.name != product.physical.name:
            out.append((f"{detected.name} nodes", "HARDWARE_MISMATCH", _node_selector(labels)))
            break
    partitions = BUNDLE.hardware.partitions_of(product.physical)
    if product.partition is not None:
        other = next(p for p in partitions if p is not product)
        out.append((f"a {other.name} instead", "PARTITION_MISMATCH", _swap_device(product.resource, other.resource)))
        if product.max_tp == 1:
            out.append(
                (
                    "tensor parallel over two MIG instances",
                    "PARTITION_PARALLELISM",
                    _both(_with_flags("--tensor-parallel-size", "2"), _gpu_limit(product.resource, 2)),
                )
            )
    elif partitions and recipe.gpus_per_node == 1:
        out.append((f"a {partitions[-1].name}", "PARTITION_MISMATCH", _swap_device(product.resource, partitions[-1].resource)))
    return out


def _swap_device(have: str, want: str) -> Callable[[dict[str, Any]], None]:
    def breaker(obj: dict[str, Any]) -> None:
        for kind in ("limits", "requests"):
            values = _engine(obj)["resources"].get(kind) or {}
            if have in values:
                values[want] = values.pop(have)

    return breaker


def _both(*breakers: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def breaker(obj: dict[str, Any]) -> None:
        for b in breakers:
            b(obj)

    return breaker


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.recipe_id)
def test_the_charts_workload_for_each_recipe_is_admitted_and_each_broken_rule_refused(recipe, tmp_path):
    if not render_chart.HELMS["helm3"].exists():
        pytest.fail("helm missing: run make setup")
    workloads = _render(recipe, tmp_path)
    assert workloads, f"the chart rendered no inference workload for {recipe.recipe_id}"
    for obj in workloads:
        admitted = _mutated(obj, recipe)
        assert _codes(admitted, recipe) == [], f"{recipe.recipe_id}: the chart's own workload is refused"
        for what, code, breaker in _breakers(recipe):
            broken = copy.deepcopy(admitted)
            breaker(broken)
            codes = _codes(broken, recipe)
            assert code in codes, f"{recipe.recipe_id} with {what}: expected {code}, got {codes}"
