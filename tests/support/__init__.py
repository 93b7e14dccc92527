"""Helpers shared by the test tiers (import as `from support import ...`; tests/conftest.py puts
tests/ on the path). Not a conftest: two conftest modules would share the name `conftest`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aim_engine.adapters.catalog import Bundle
from aim_engine.cluster.inventory import Inventory, build_inventory, split_list
from aim_engine.selection.selector import Request, Selection, select

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# The models the catalog must cover (the specification's list).
REQUIRED_MODELS = [
    "Qwen/Qwen3-32B",
    "Qwen/Qwen3-8B",
    "Qwen/Qwen3-235B-A22B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Llama-3.1-405B-Instruct",
    "meta-llama/Llama-2-70b-chat-hf",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "deepseek-ai/DeepSeek-R1",
    "openai/gpt-oss-120b",
]


def inventory_of(bundle: Bundle, doc: dict[str, Any], **kw: Any) -> Inventory:
    nodes, pods = split_list(doc)
    return build_inventory(bundle.hardware, nodes, pods, **kw)


def run_select(
    bundle: Bundle,
    doc: dict[str, Any],
    *,
    recipes: Any = None,
    inv_kw: dict[str, Any] | None = None,
    measurements: Any = None,
    **request: Any,
) -> Selection:
    inv = inventory_of(bundle, doc, **(inv_kw or {}))
    return select(
        request=Request(**request),
        recipes=bundle.recipes if recipes is None else recipes,
        models=bundle.model_map(),
        catalog=bundle.hardware,
        registry=bundle.registry,
        inventory=inv,
        measurements=measurements,
    )
