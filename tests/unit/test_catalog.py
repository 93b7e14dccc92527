"""The bundled catalog: coverage, schema, the catalog bar, and the schema's refusals."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from aim_engine.adapters.catalog import catalog_files, load_recipe_file, schema_errors
from aim_engine.domain.errors import InputError
from aim_engine.rules.lint import lint_recipes
from aim_engine.rules.perf import estimate
from support import REQUIRED_MODELS, ROOT

REQUIRED_HARDWARE = ["MI300X", "MI325X", "MI355X", "H100", "H200", "A100", "L40S"]

SEED_CUSTOM_RECIPE = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: custom-recipe
data:
  recipe.yaml: |
    recipe_id: custom-qwen-32b-4gpu-bf16
    huggingface_id: Qwen/Qwen3-32B
    hardware: MI300X
    gpu_count: 4
    precision: bf16
    backend: vllm
    config:
      args:
        max_model_len: 32768
        max_num_batched_tokens: 8192
        gpu_memory_utilization: 0.9
    performance:
      expected_tokens_per_second: 5000
      expected_latency_ms: 100
    resources:
      requests:
        amd.com/gpu: "4"
        memory: "64Gi"
        cpu: "16"
      limits:
        amd.com/gpu: "4"
        memory: "128Gi"
        cpu: "32"
"""


def test_catalog_size_and_coverage(bundle):
    assert len(bundle.recipes) >= 40
    models = {r.huggingface_id for r in bundle.recipes}
    hardware = {r.hardware for r in bundle.recipes}
    assert set(REQUIRED_MODELS) <= models
    assert set(REQUIRED_HARDWARE) <= hardware
    assert any(r.multi_node for r in bundle.recipes)


def test_bundled_catalog_passes_validate_strictly(bundle):
    issues = lint_recipes(
        bundle.recipes, models=bundle.model_map(), catalog=bundle.hardware, registry=bundle.registry, strict=True
    )
    assert [i for i in issues if i.severity == "error"] == []


def test_every_figure_has_conditions_and_provenance(bundle):
    for r in bundle.recipes:
        assert r.performance is not None, r.recipe_id
        assert {"input_tokens", "output_tokens", "engine_version"} <= set(r.performance.conditions), r.recipe_id
        for figure in ("expected_tokens_per_second", "expected_latency_ms"):
            prov = r.performance.provenance[figure]
            assert prov["kind"] in ("published", "estimated", "measured")
            needed = {"published": "source", "estimated": "method", "measured": "command"}[prov["kind"]]
            assert prov.get(needed), r.recipe_id


def test_published_figures_cite_a_source_url(bundle):
    published = [r for r in bundle.recipes if r.performance.provenance["expected_tokens_per_second"]["kind"] == "published"]
    assert published, "the catalog cites at least one published figure"
    for r in published:
        assert r.performance.provenance["expected_tokens_per_second"]["url"].startswith("https://")


def test_estimator_is_within_a_factor_of_two_of_published_figures(bundle):
    """The estimator is calibrated by constants, not per recipe: compare it with what is published."""
    for r in bundle.recipes:
        prov = r.performance.provenance["expected_tokens_per_second"]
        if prov["kind"] != "published":
            continue
        c = r.performance.conditions
        model, product = bundle.models.get(r.huggingface_id), bundle.hardware.require(r.hardware)
        guesses = [
            estimate(
                model,
                product,
                r.precision,
                tp=r.tp,
                kv_cache_dtype=r.args.get("kv_cache_dtype", "auto"),
                input_tokens=c["input_tokens"],
                output_tokens=c["output_tokens"],
                concurrency=cc,
            ).tokens_per_second
            for cc in (64, 128)
        ]
        published = float(r.performance.tokens_per_second)
        assert any(0.5 <= g / published <= 2.0 for g in guesses), (r.recipe_id, guesses, published)


def test_amd_recipes_carry_the_rocm_environment(bundle):
    for r in bundle.recipes:
        if bundle.hardware.require(r.hardware).vendor == "amd":
            assert r.env["HIP_FORCE_DEV_KERNARG"] == "1" and r.env["VLLM_ROCM_USE_AITER"] == "1", r.recipe_id
            if r.gpu_count > 1:
                assert r.env["NCCL_MIN_NCHANNELS"] == "112"


def test_no_fp8_recipe_on_hardware_without_fp8(bundle):
    for r in bundle.recipes:
        if r.precision == "fp8":
            assert r.hardware not in ("A100", "A100-40GB", "MI250X"), r.recipe_id


def test_every_arg_is_a_real_vllm_flag(bundle):
    for r in bundle.recipes:
        for name, value in r.args.items():
            assert bundle.registry.check(name, value) is None, (r.recipe_id, name, value)


def test_recipe_ids_match_file_names():
    for path in catalog_files(ROOT / "recipes"):
        doc = yaml.safe_load(path.read_text())
        assert path.stem == doc["recipe_id"]


def test_seed_custom_recipe_configmap_is_accepted(bundle, tmp_path):
    f = tmp_path / "custom-recipe.yaml"
    f.write_text(SEED_CUSTOM_RECIPE)
    (recipe,) = load_recipe_file(bundle, f)
    assert recipe.recipe_id == "custom-qwen-32b-4gpu-bf16" and recipe.origin == "custom"
    assert recipe.requests["memory"] == 64 * 2**30
    issues = lint_recipes([recipe], models=bundle.model_map(), catalog=bundle.hardware, registry=bundle.registry, strict=False)
    # The seed's example names no parallel size: it gets tensor parallel over its 4 GPUs, which
    # divides Qwen3-32B's 64 heads, so validate accepts it.
    assert recipe.tp == 4
    assert [i.code for i in issues if i.severity == "error"] == []


def _base() -> dict:
    return yaml.safe_load(yaml.safe_load(SEED_CUSTOM_RECIPE)["data"]["recipe.yaml"])


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("gpu_count"), "'gpu_count' is a required property"),
        (lambda d: d.update(precision="fp4"), "precision"),
        (lambda d: d.update(backend="tgi"), "backend"),
        (lambda d: d.update(recipe_id="Bad_ID"), "recipe_id"),
        (lambda d: d.update(gpu_count=0), "gpu_count"),
        (lambda d: d.update(surprise=True), "Additional properties"),
        (lambda d: d["resources"]["limits"].update(memory="lots"), "resources.limits.memory"),
        (lambda d: d["performance"].update(provenance={"expected_tokens_per_second": {"kind": "published"}}), "provenance"),
        (lambda d: d.update(type="best"), "type"),
    ],
)
def test_schema_refuses_malformed_recipes(bundle, mutate, fragment):
    doc = copy.deepcopy(_base())
    mutate(doc)
    errors = schema_errors(bundle.validator, doc)
    assert errors and any(fragment in e for e in errors), errors


def test_recipe_file_errors_name_the_file(bundle, tmp_path: Path):
    f = tmp_path / "r.yaml"
    f.write_text("recipe_id: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe_file(bundle, f)
    f.write_text("kind: ConfigMap\nmetadata: {name: x}\ndata: {other.yaml: ''}\n")
    with pytest.raises(InputError, match=r"no 'recipe\.yaml' key"):
        load_recipe_file(bundle, f)
    f.write_text("kind: Secret\n")
    with pytest.raises(InputError, match="kind Secret"):
        load_recipe_file(bundle, f)
