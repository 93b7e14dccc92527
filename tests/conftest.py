from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from aim_engine.catalog import Bundle, load_bundle
from aim_engine.inventory import Inventory, build_inventory, split_list
from aim_engine.selection import Request, Selection, select

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"

# The models the catalog must cover (issue: recipe engine, deliverable 2).
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


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle(ROOT / "recipes")


def inventory_of(bundle: Bundle, doc: dict[str, Any], **kw: Any) -> Inventory:
    nodes, pods = split_list(doc)
    return build_inventory(bundle.hardware, nodes, pods, **kw)


def run_select(
    bundle: Bundle, doc: dict[str, Any], *, recipes: Any = None, inv_kw: dict[str, Any] | None = None, **request: Any
) -> Selection:
    inv = inventory_of(bundle, doc, **(inv_kw or {}))
    return select(
        request=Request(**request),
        recipes=bundle.recipes if recipes is None else recipes,
        models=bundle.model_map(),
        catalog=bundle.hardware,
        registry=bundle.registry,
        inventory=inv,
    )
