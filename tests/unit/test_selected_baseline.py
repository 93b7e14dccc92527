"""A release's own baseline: the figures of the recipe its selection ConfigMap holds, exported by the
webhook's /metrics beside the selection counters (aim_engine.adapters.metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from aim_engine.adapters.metrics import SelectedBaseline, SelectionCollector, selected_baseline, selected_gpu_count

ROOT = Path(__file__).resolve().parents[2]
CATALOG_RECIPE = ROOT / "recipes" / "catalog" / "tiny-llama" / "tiny-llama-cpu-x86-bf16.yaml"


def test_the_selected_catalog_recipe_gives_its_measured_figures() -> None:
    got = selected_baseline({"recipe.yaml": CATALOG_RECIPE.read_text()})
    assert got == SelectedBaseline(
        recipe_id="tiny-llama-cpu-x86-bf16", tokens_per_second=3734.0, latency_seconds=0.004, source="measured"
    )


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"recipe.yaml": ""},
        {"recipe.yaml": "{not: yaml"},
        {"recipe.yaml": "- a list"},
        {"recipe.yaml": "recipe_id: r\n"},  # a custom recipe without performance
        {"recipe.yaml": "recipe_id: r\nperformance: {expected_tokens_per_second: 0, expected_latency_ms: 4}\n"},
        {"recipe.yaml": "recipe_id: r\nperformance: {expected_tokens_per_second: true, expected_latency_ms: 4}\n"},
        {"recipe.yaml": "recipe_id: r\nperformance: {expected_tokens_per_second: fast, expected_latency_ms: 4}\n"},
        {"recipe.yaml": "performance: {expected_tokens_per_second: 10, expected_latency_ms: 4}\n"},
    ],
)
def test_no_baseline_without_a_recipe_that_states_one(data: dict[str, str]) -> None:
    assert selected_baseline(data) is None


def test_a_latency_is_optional_and_the_source_unspecified_without_provenance() -> None:
    got = selected_baseline({"recipe.yaml": "recipe_id: r\nperformance: {expected_tokens_per_second: 12.5}\n"})
    assert got == SelectedBaseline(recipe_id="r", tokens_per_second=12.5, latency_seconds=None, source="unspecified")


def test_the_collector_exports_each_releases_baseline() -> None:
    recipe: dict[str, Any] = yaml.safe_load(CATALOG_RECIPE.read_text())
    recipe["recipe_id"] = "tuned"
    recipe["performance"]["expected_tokens_per_second"] = 5000
    cms = [
        {
            "metadata": {"namespace": "a", "name": "x-recipe-selection", "labels": {"app.kubernetes.io/instance": "x"}},
            "data": {"recipe.yaml": yaml.safe_dump(recipe)},
        },
        {"metadata": {"namespace": "b", "name": "y-recipe-selection", "labels": {"app.kubernetes.io/instance": "y"}}, "data": {}},
    ]
    registry = CollectorRegistry()
    registry.register(SelectionCollector(lambda: cms))
    text = generate_latest(registry).decode()
    assert (
        'aim_recipe_selected_expected_tokens_per_second{namespace="a",recipe_id="tuned",release="x",source="measured"} 5000.0'
        in text
    )
    assert (
        'aim_recipe_selected_expected_latency_seconds{namespace="a",recipe_id="tuned",release="x",source="measured"} 0.004'
        in text
    )
    assert 'namespace="b"' not in text


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("recipe_id: r\ngpu_count: 2\n", ("r", 2)),
        ("recipe_id: r\n", None),
        ("recipe_id: r\ngpu_count: 0\n", None),
        ("recipe_id: r\ngpu_count: true\n", None),
        ("gpu_count: 2\n", None),
        ("{bad", None),
    ],
)
def test_the_selected_recipes_gpu_count(text: str, want: tuple[str, int] | None) -> None:
    assert selected_gpu_count({"recipe.yaml": text}) == want


def test_the_collector_exports_the_selected_gpu_count() -> None:
    cm = {
        "metadata": {"namespace": "a", "labels": {"app.kubernetes.io/instance": "x"}},
        "data": {"recipe.yaml": CATALOG_RECIPE.read_text()},
    }
    registry = CollectorRegistry()
    registry.register(SelectionCollector(lambda: [cm]))
    text = generate_latest(registry).decode()
    assert 'aim_recipe_selected_gpu_count{namespace="a",recipe_id="tiny-llama-cpu-x86-bf16",release="x"} 1.0' in text
