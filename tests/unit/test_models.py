"""Model analysis: bundled facts, config.json parsing, tensor-parallel validity."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from aim_engine.adapters.catalog import read_model_config
from aim_engine.domain.errors import InputError
from aim_engine.domain.model_config import model_from_hf_config
from support import FIXTURES, REQUIRED_MODELS


@pytest.mark.parametrize("model_id", REQUIRED_MODELS)
def test_bundled_table_has_every_catalog_model(bundle, model_id):
    m = bundle.models.get(model_id)
    assert m is not None
    assert (m.layers > 0 and m.attention_heads % m.kv_heads == 0) or m.is_mla
    assert m.head_dim > 0 and m.vocab_size > 0 and m.max_context >= 4096


def test_moe_facts(bundle):
    ds = bundle.models.get("deepseek-ai/DeepSeek-R1")
    assert ds.is_moe and ds.is_mla and ds.experts == 256 and ds.experts_per_token == 8
    assert ds.active < ds.parameters
    assert bundle.models.get("Qwen/Qwen3-32B").is_moe is False


def test_config_json_gives_the_bundled_parameter_count(bundle):
    parsed = read_model_config("Qwen/Qwen3-32B", FIXTURES / "configs" / "qwen3-32b.config.json")
    bundled = bundle.models.get("Qwen/Qwen3-32B")
    assert abs(parsed.parameters - bundled.parameters) / bundled.parameters < Decimal("0.03")
    assert (parsed.layers, parsed.attention_heads, parsed.kv_heads, parsed.max_context) == (64, 64, 8, 40960)
    assert parsed.native_precision == "bf16" and parsed.source == "config.json"


def test_config_json_moe_total_and_active(bundle):
    parsed = read_model_config("mistralai/Mixtral-8x7B-Instruct-v0.1", FIXTURES / "configs" / "mixtral-8x7b.config.json")
    bundled = bundle.models.get("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert abs(parsed.parameters - bundled.parameters) / bundled.parameters < Decimal("0.03")
    assert abs(parsed.active - bundled.active) / bundled.active < Decimal("0.05")


def test_config_json_mla_and_fp8_checkpoint():
    parsed = read_model_config("deepseek-ai/DeepSeek-V3", FIXTURES / "configs" / "deepseek-v3.config.json")
    assert parsed.is_mla and parsed.mla_kv_lora_rank == 512
    assert parsed.native_precision == "fp8"
    assert Decimal("640e9") < parsed.parameters < Decimal("700e9")
    assert Decimal("30e9") < parsed.active < Decimal("45e9")


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({}, "missing 'num_hidden_layers'"),
        ({"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 0, "vocab_size": 10}, "from 1 to 16384, got 0"),
        ({"num_hidden_layers": "many", "hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10}, "must be an integer"),
        (
            {"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10, "intermediate_size": "x"},
            "intermediate_size must be an integer",
        ),
        ([], "expected a JSON object"),
    ],
)
def test_bad_config_json_is_a_clear_error(cfg, match):
    with pytest.raises(InputError, match=match):
        model_from_hf_config("org/model", cfg)


def test_unreadable_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_model_config("org/model", bad)
    with pytest.raises(InputError, match="no such file"):
        read_model_config("org/model", tmp_path / "missing.json")


def test_tensor_parallel_must_divide_heads(bundle):
    llama = bundle.models.get("meta-llama/Llama-3.1-70B-Instruct")  # 64 heads, 8 KV heads
    assert llama.valid_tp_sizes(up_to=16) == [1, 2, 4, 8, 16]
    assert not llama.tp_divides(3) and not llama.tp_divides(6)
    qwen_moe = bundle.models.get("Qwen/Qwen3-235B-A22B")  # 64 heads, 4 KV heads: TP8 replicates KV heads
    assert qwen_moe.tp_divides(8)


def test_sliding_window_parsed_from_layer_types():
    cfg = {
        "num_hidden_layers": 4,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
    }
    m = model_from_hf_config("org/m", json.loads(json.dumps(cfg)))
    assert m.sliding_window_layers == 2 and m.sliding_window_size == 128
