"""The contract module: one writer and one reader of the node affinity, and the chart speaks the
same names as the Python side (a renamed label on one side fails here, not on a cluster)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aim_engine import contract
from aim_engine.contract import ANYWHERE, LabelIn, NodeAffinity, NodeTerm
from aim_engine.domain.errors import InputError

CHART = Path(__file__).resolve().parents[2] / "chart"


def test_node_affinity_round_trips_through_its_json():
    affinity = NodeAffinity(
        (
            NodeTerm((LabelIn("nvidia.com/gpu.product", ("NVIDIA-H100-80GB-HBM3",)),)),
            NodeTerm((LabelIn("aim-engine.io/gpu-model", ("H100", "H100-SXM")),)),
        )
    )
    assert NodeAffinity.parse(affinity.to_json(), where="test") == affinity
    assert affinity.as_terms()[0] == {
        "matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}]
    }
    assert ANYWHERE.terms == ()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "not JSON"),
        ("[]", "non-empty nodeSelectorTerms"),
        ('{"nodeSelectorTerms": []}', "non-empty nodeSelectorTerms"),
        ('{"nodeSelectorTerms": [{}]}', "each term needs matchExpressions"),
        ('{"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["a"]}]}]}', "operator In"),
        ('{"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In", "values": []}]}]}', "string values"),
        ('{"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In", "values": [1]}]}]}', "string values"),
        ('{"nodeSelectorTerms": [{"matchExpressions": [{"operator": "In", "values": ["a"]}]}]}', "needs a key"),
    ],
)
def test_node_affinity_refuses_what_the_webhook_could_not_enforce(text, says):
    with pytest.raises(InputError, match=says):
        NodeAffinity.parse(text, where="ConfigMap ns/x-recipe-config node-affinity.json")


def test_recipe_config_names_and_labels():
    assert contract.recipe_config_name("demo") == "demo-recipe-config"
    assert contract.release_of("demo-recipe-config") == "demo"
    labels = contract.recipe_config_labels(release="demo", recipe_id="r1", managed_by="aim-recipe-selector")
    assert f"{contract.COMPONENT_LABEL}={labels[contract.COMPONENT_LABEL]}" == contract.RECIPE_CONFIG_SELECTOR
    assert labels[contract.RECIPE_LABEL] == "r1"
    assert contract.RECIPE_LABEL not in contract.recipe_config_labels(release="d", recipe_id=None, managed_by="x")


def _chart_text() -> str:
    return "\n".join(p.read_text() for p in sorted((CHART / "templates").rglob("*")) if p.is_file())


@pytest.mark.parametrize(
    "name",
    [
        contract.RECIPE_LABEL,
        contract.RECIPE_CONFIG_ANNOTATION,
        contract.GPU_MODEL_LABEL,
        contract.TP_LABEL,
        contract.PRECISION_LABEL,
        contract.RECIPE_KEY,
    ],
)
def test_the_chart_uses_the_contracts_names(name):
    assert name in _chart_text(), f"chart/templates no longer mention {name!r}: the chart and aim_engine.contract disagree"


def test_every_aim_engine_io_name_the_chart_uses_is_in_the_contract_or_chart_only():
    used = set(re.findall(r"aim-engine\.io/[a-z0-9-]+", _chart_text()))
    known = {v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str)}
    # Names only the chart reads (Service selection of the leader pod; dashboard grouping).
    chart_only = {"aim-engine.io/role", "aim-engine.io/performance-tuning"}
    assert used - known - chart_only == set()
    # The chart names the selection ConfigMap <fullname>-recipe-config (aim-engine.recipeConfig).
    assert f'"name" "{contract.RECIPE_CONFIG_SUFFIX.removeprefix("-")}"' in (CHART / "templates" / "_helpers.tpl").read_text()
