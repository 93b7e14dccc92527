"""Model analysis on real config.json files against published parameter counts, quantised
checkpoints priced by what they actually quantise, and malformed configs refused in one line.

The fixtures and the published figures with their sources are listed in
tests/fixtures/configs/sources.yaml (and tests/fixtures/configs/README.md)."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from aim_engine.adapters.catalog import load_config_file, read_model_config
from aim_engine.cli.main import main
from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import BYTES_PER_PARAM
from aim_engine.domain.model_config import MAX_CONFIG_BYTES, model_from_hf_config, parse_config_json
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import GIB
from aim_engine.rules.memory import weight_bytes
from support import FIXTURES, ROOT

CONFIGS = FIXTURES / "configs"
SOURCES = yaml.safe_load((CONFIGS / "sources.yaml").read_text())
PUBLISHED = {f["file"]: f for f in SOURCES["fixtures"]}
CLUSTER = str(ROOT / "examples" / "cluster-mixed.json")
TOTAL_TOLERANCE = Decimal("0.01")
ACTIVE_TOLERANCE = Decimal("0.02")


def profile(name: str) -> ModelProfile:
    return read_model_config(PUBLISHED[name]["model"], CONFIGS / name)


def raw(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / name).read_text())


def error(value: Decimal, published: Decimal) -> Decimal:
    return abs(value - published) / published


@pytest.mark.parametrize("entry", SOURCES["fixtures"] + SOURCES["refused"], ids=lambda e: e["file"])
def test_fixture_is_the_recorded_verbatim_copy(entry):
    assert hashlib.sha256((CONFIGS / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert {"repo", "path", "commit"} <= set(entry["source"])


def test_fixtures_cover_the_families():
    assert len(SOURCES["fixtures"]) >= 12
    precisions = {profile(name).native_precision for name in PUBLISHED}
    assert {"bf16", "fp8", "mxfp4"} <= precisions


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_match_the_published_figures(name):
    m = profile(name)
    published = PUBLISHED[name]["published"]
    assert error(m.parameters, Decimal(str(published["total"]))) <= TOTAL_TOLERANCE
    if "active" in published:
        active = m.active
        if published.get("active_counts") == "without-input-embedding":
            active -= m.vocab_size * m.hidden_size
        assert error(active, Decimal(str(published["active"]))) <= ACTIVE_TOLERANCE
    else:
        assert not m.is_moe


@pytest.mark.parametrize("name", [n for n, f in PUBLISHED.items() if "checkpoint_gib" in f["published"]])
def test_weights_of_a_mixed_precision_checkpoint_match_its_published_size(name):
    m = profile(name)
    published = Decimal(str(PUBLISHED[name]["published"]["checkpoint_gib"])) * GIB
    assert error(weight_bytes(m, m.native_precision), published) <= TOTAL_TOLERANCE
    # Every weight at MXFP4 would be well under the real checkpoint (the bug this split fixes).
    assert m.parameters * BYTES_PER_PARAM[m.native_precision] < published * Decimal("0.96")


def test_exact_counts_for_dense_families():
    """The totals equal the checkpoints' safetensors parameter counts to the parameter."""
    assert profile("llama-3.1-8b.config.json").parameters == 8_030_261_248
    assert profile("qwen2.5-7b-instruct.config.json").parameters == 7_615_616_512  # with q/k/v biases
    assert profile("llama-3.2-1b-instruct.config.json").parameters == 1_235_814_400  # tied
    assert profile("gemma-2-9b-it.config.json").parameters == 9_241_705_984
    assert profile("gemma-3-27b-it.config.json").parameters == 27_432_406_640
    assert profile("qwen2.5-vl-7b-instruct.config.json").parameters == 8_292_166_656


def test_gemma_ties_embeddings_by_its_model_type_default():
    cfg = raw("gemma-2-9b-it.config.json")
    assert "tie_word_embeddings" not in cfg
    tied = model_from_hf_config("google/gemma-2-9b-it", cfg)
    untied = model_from_hf_config("google/gemma-2-9b-it", {**cfg, "tie_word_embeddings": False})
    assert untied.parameters - tied.parameters == 256_000 * 3584
    llama = raw("llama-3.1-8b.config.json")
    del llama["tie_word_embeddings"]  # Llama's class default is untied
    assert model_from_hf_config("m", llama).parameters == 8_030_261_248


def test_gemma3_text_config_relies_on_gemma3_defaults_and_the_vision_tower_is_counted():
    m = profile("gemma-3-27b-it.config.json")
    assert (m.vocab_size, m.max_context, m.layers, m.attention_heads, m.kv_heads, m.head_dim) == (
        262_208,
        131_072,
        62,
        32,
        16,
        128,
    )
    assert (m.sliding_window_layers, m.sliding_window_size) == (52, 1024)  # 5 local layers per global one
    assert m.architecture == "Gemma3ForConditionalGeneration" and m.native_precision == "bf16"
    # SigLIP so400m: 27 layers at width 1152, 4096 patch positions; projector 1152 x 5376 plus its norm
    assert m.vision_parameters == 416_866_032 + 6_194_304
    assert profile("qwen2.5-vl-7b-instruct.config.json").vision_parameters == 676_550_144


def test_gemma2_alternates_sliding_window_layers():
    m = profile("gemma-2-9b-it.config.json")
    assert (m.sliding_window_layers, m.sliding_window_size, m.max_context) == (21, 4096, 8192)


def test_mla_counts_the_low_rank_factors_and_leaves_out_the_mtp_module():
    m = profile("deepseek-v3.config.json")
    assert m.is_mla and (m.mla_kv_lora_rank, m.mla_rope_head_dim) == (512, 64)
    assert m.experts == 256 and m.experts_per_token == 8 and m.moe_intermediate_size == 2048
    assert m.parameters == 671_026_419_200  # the 685B on Hugging Face adds the 14B MTP layer
    assert m.active == 37_552_297_472
    without_q_lora = model_from_hf_config("m", {**raw("deepseek-v3.config.json"), "q_lora_rank": None})
    q_dim = 128 * (128 + 64)
    per_layer = 7168 * q_dim - (7168 * 1536 + 1536 + 1536 * q_dim)  # q_proj instead of q_a_proj, q_a_layernorm, q_b_proj
    assert without_q_lora.parameters - m.parameters == 61 * per_layer


def test_mxfp4_checkpoint_keeps_attention_router_embeddings_and_head_at_16_bit():
    m = profile("gpt-oss-20b.config.json")
    experts = 24 * 32 * (2880 * 5760 + 2880 * 2880)  # gate_up_proj and down_proj weights, biases stay bf16
    assert m.native_precision == "mxfp4" and m.quantized_parameters == experts
    assert m.sixteen_bit_parameters == m.parameters - experts
    assert weight_bytes(m, "mxfp4") == experts * Decimal("0.53125") + (m.parameters - experts) * 2


def test_fp8_checkpoint_leaves_routers_and_the_head_unconverted():
    fp8, bf16 = profile("qwen3-30b-a3b-fp8.config.json"), profile("qwen3-30b-a3b.config.json")
    assert fp8.native_precision == "fp8" and bf16.native_precision == "bf16"
    assert fp8.parameters == bf16.parameters
    routers, embeddings = 48 * 2048 * 128, 2 * 151_936 * 2048
    norms = 48 * (2 * 2048 + 2 * 128) + 2048
    assert fp8.sixteen_bit_parameters == routers + embeddings + norms
    # The same split prices online fp8 of the bf16 checkpoint: vLLM converts the same linear layers.
    assert weight_bytes(bf16, "fp8") == weight_bytes(fp8, "fp8")
    assert weight_bytes(bf16, "bf16") == bf16.parameters * 2


def test_deepseek_fp8_keeps_its_gates_at_16_bit():
    m = profile("deepseek-v3.config.json")
    gates = 58 * (256 * 7168 + 256)
    norms = 61 * (2 * 7168 + 1536 + 512) + 7168
    assert m.sixteen_bit_parameters == gates + norms + 2 * 129_280 * 7168


# The Qwen2.5-7B-Instruct config with the quantization_config AutoAWQ writes (the block
# Qwen/Qwen2.5-7B-Instruct-AWQ publishes); no verbatim AWQ config.json could be sourced.
AWQ_BLOCK = {
    "bits": 4,
    "group_size": 128,
    "modules_to_not_convert": None,
    "quant_method": "awq",
    "version": "gemm",
    "zero_point": True,
}


def test_awq_checkpoint_quantises_linear_layers_only():
    cfg = {**raw("qwen2.5-7b-instruct.config.json"), "quantization_config": AWQ_BLOCK, "torch_dtype": "float16"}
    m = model_from_hf_config("Qwen/Qwen2.5-7B-Instruct-AWQ", cfg)
    assert m.native_precision == "int4" and m.parameters == 7_615_616_512
    biases = 28 * (3584 + 2 * 512)
    norms = 28 * 2 * 3584 + 3584
    assert m.sixteen_bit_parameters == 2 * 152_064 * 3584 + biases + norms
    skipped = model_from_hf_config(
        "m", {**cfg, "quantization_config": {**AWQ_BLOCK, "modules_to_not_convert": ["model.layers.0"]}}
    )
    layer = 2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944
    assert m.quantized_parameters - skipped.quantized_parameters == layer


def test_compressed_tensors_ignore_patterns():
    cfg = raw("qwen3-30b-a3b.config.json")
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float"}}},
        "ignore": ["lm_head", "re:.*mlp.gate$", "model.layers.*.self_attn"],
    }
    m = model_from_hf_config("m", cfg)
    experts = 48 * 128 * 3 * 2048 * 768
    assert m.native_precision == "fp8" and m.quantized_parameters == experts


def test_encoder_only_models_are_refused():
    with pytest.raises(InputError) as e:
        read_model_config("bert", CONFIGS / "bert-base-uncased-classifier.config.json")
    assert str(e.value) == (
        "config.json of bert: model_type 'bert' (BertForSequenceClassification) is not a decoder-only generative "
        "model; aim-engine serves ...ForCausalLM and ...ForConditionalGeneration models with vLLM"
    )


BASE: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "vocab_size": 100,
    "max_position_embeddings": 4096,
}


def edited(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is ...:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


W = "config.json of org/m: "
NOT_GENERATIVE = (
    " is not a decoder-only generative model; aim-engine serves ...ForCausalLM and ...ForConditionalGeneration models with vLLM"
)
MALFORMED: list[tuple[str, Any, str]] = [
    ("not an object", [], "config.json of org/m: expected a JSON object, got an array"),
    ("empty", {}, W + "missing 'num_hidden_layers'; is this a decoder-only language model's config.json?"),
    (
        "layers missing",
        edited(num_hidden_layers=...),
        W + "missing 'num_hidden_layers'; is this a decoder-only language model's config.json?",
    ),
    ("layers a string", edited(num_hidden_layers="32"), W + "num_hidden_layers must be an integer from 1 to 1024, got '32'"),
    ("layers negative", edited(num_hidden_layers=-1), W + "num_hidden_layers must be an integer from 1 to 1024, got -1"),
    ("layers a boolean", edited(num_hidden_layers=True), W + "num_hidden_layers must be an integer from 1 to 1024, got True"),
    ("layers a fraction", edited(num_hidden_layers=2.5), W + "num_hidden_layers must be an integer from 1 to 1024, got 2.5"),
    ("hidden zero", edited(hidden_size=0), W + "hidden_size must be an integer from 1 to 1048576, got 0"),
    ("heads zero", edited(num_attention_heads=0), W + "num_attention_heads must be an integer from 1 to 16384, got 0"),
    ("vocab huge", edited(vocab_size=1e30), W + "vocab_size must be an integer from 1 to 16777216, got 1e+30"),
    ("width a string", edited(intermediate_size="x"), W + "intermediate_size must be an integer from 1 to 1048576, got 'x'"),
    (
        "context negative",
        edited(max_position_embeddings=-1),
        W + "max_position_embeddings must be an integer from 1 to 67108864, got -1",
    ),
    ("window negative", edited(sliding_window=-5), W + "sliding_window must be an integer from 1 to 67108864, got -5"),
    (
        "kv heads do not divide",
        edited(num_key_value_heads=3),
        W + "num_attention_heads 4 is not a multiple of num_key_value_heads 3",
    ),
    (
        "head dim undefined",
        edited(hidden_size=66),
        W + "hidden_size 66 is not a multiple of num_attention_heads 4 and no head_dim is given",
    ),
    (
        "more experts per token than experts",
        edited(num_local_experts=8, num_experts_per_tok=9),
        W + "num_experts_per_tok 9 is more than the 8 experts",
    ),
    (
        "experts per token missing",
        edited(num_local_experts=8),
        W + "missing 'num_experts_per_tok' of a mixture-of-experts model (8 experts)",
    ),
    ("tie not a boolean", edited(tie_word_embeddings="yes"), W + "tie_word_embeddings must be true or false, got 'yes'"),
    (
        "layer types of the wrong length",
        edited(sliding_window=128, layer_types=["sliding_attention"]),
        W + "layer_types must list one attention type per layer (2), got ['sliding_attention']",
    ),
    ("text_config not an object", edited(text_config=[]), W + "text_config must be an object, got an array"),
    (
        "text_config missing a size",
        edited(model_type="llava", architectures=["LlavaForConditionalGeneration"], text_config={"hidden_size": 64}),
        W + "missing 'text_config.num_hidden_layers'; is this a decoder-only language model's config.json?",
    ),
    (
        "vision tower without a size",
        edited(vision_config={"model_type": "mystery"}),
        W + "vision_config needs hidden_size and num_hidden_layers to size the vision tower",
    ),
    (
        "architectures a string",
        edited(architectures="LlamaForCausalLM"),
        W + "architectures must be a list of class names, got 'LlamaForCausalLM'",
    ),
    ("encoder-only model type", edited(model_type="bert", architectures=...), W + "model_type 'bert'" + NOT_GENERATIVE),
    (
        "classifier head",
        edited(architectures=["LlamaForSequenceClassification"]),
        W + "model_type 'llama' (LlamaForSequenceClassification)" + NOT_GENERATIVE,
    ),
    (
        "encoder-decoder",
        edited(model_type="t5", architectures=["T5ForConditionalGeneration"], is_encoder_decoder=True),
        W + "model_type 't5' (T5ForConditionalGeneration)" + NOT_GENERATIVE,
    ),
    ("quantization not an object", edited(quantization_config="awq"), W + "quantization_config must be an object, got a string"),
    (
        "quantization without a method",
        edited(quantization_config={"bits": 4}),
        W + "quantization_config.quant_method must be a string, got None",
    ),
    (
        "quantization method unknown",
        edited(quantization_config={"quant_method": "gguf"}),
        W + "quantization_config.quant_method 'gguf' is not one aim-engine can price "
        "(fp8, fbgemm_fp8, mxfp4, awq, gptq, compressed-tensors, modelopt (FP8), bitsandbytes)",
    ),
    (
        "awq bits",
        edited(quantization_config={"quant_method": "awq", "bits": 3}),
        W + "quantization_config.bits must be 4 or 8 for awq, got 3",
    ),
    (
        "ignore list a string",
        edited(quantization_config={"quant_method": "fp8", "modules_to_not_convert": "lm_head"}),
        W + "quantization_config.modules_to_not_convert must be a list of module names, got 'lm_head'",
    ),
    (
        "ignore pattern not a regex",
        edited(
            quantization_config={
                "quant_method": "compressed-tensors",
                "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float"}}},
                "ignore": ["re:("],
            }
        ),
        W + "module pattern 're:(' is not a valid regular expression (missing ), unterminated subpattern at position 0)",
    ),
    (
        "fp4 not priced",
        edited(
            quantization_config={
                "quant_method": "compressed-tensors",
                "config_groups": {"g": {"weights": {"num_bits": 4, "type": "float"}}},
            }
        ),
        W + "compressed-tensors weights of type 'float' with 4 bits are not a format aim-engine can price (fp8, int8, int4)",
    ),
]


@pytest.mark.parametrize(("cfg", "message"), [pytest.param(c, m, id=i) for i, c, m in MALFORMED])
def test_malformed_config_is_a_one_line_error(cfg, message):
    with pytest.raises(InputError) as e:
        model_from_hf_config("org/m", cfg)
    assert str(e.value) == message and "\n" not in str(e.value)


def test_the_base_of_the_malformed_table_is_valid():
    m = model_from_hf_config("org/m", BASE)
    assert m.parameters == 100 * 64 * 2 + 2 * (4 * 64 * 64 + 3 * 64 * 256 + 2 * 64) + 64


UNPARSABLE: list[tuple[str, str | bytes, str]] = [
    ("NaN", '{"hidden_size": NaN}', "config.json: NaN is not a number JSON allows"),
    ("Infinity", '{"hidden_size": Infinity}', "config.json: Infinity is not a number JSON allows"),
    ("-Infinity", '{"hidden_size": -Infinity}', "config.json: -Infinity is not a number JSON allows"),
    ("overflowing float", '{"hidden_size": 1e999}', "config.json: number 1e999 is out of range"),
    (
        "40-digit integer",
        '{"hidden_size": ' + "1" * 40 + "}",
        "config.json: integer 11111111111111111111… has more than 30 digits",
    ),
    ("33 levels", "[" * 33 + "]" * 33, "config.json: JSON nested more than 32 levels deep, which no config.json is"),
    ("100000 levels", '{"a": ' + "[" * 100_000, "config.json: JSON nested more than 32 levels deep, which no config.json is"),
    ("truncated", '{"a": 1', "config.json: not valid JSON (line 1: Expecting ',' delimiter)"),
    ("array", "[1, 2]", "config.json: expected a JSON object at the top level, got an array"),
    ("string", '"config"', "config.json: expected a JSON object at the top level, got a string"),
    ("not UTF-8", b'{"a": "\xff"}', "config.json: not UTF-8 text"),
    (
        "too large",
        b" " * (MAX_CONFIG_BYTES + 1),
        f"config.json: {MAX_CONFIG_BYTES + 1} bytes is larger than the {MAX_CONFIG_BYTES} byte limit for a config.json",
    ),
]


@pytest.mark.parametrize(("data", "message"), [pytest.param(d, m, id=i) for i, d, m in UNPARSABLE])
def test_unparsable_config_is_a_one_line_error(data, message):
    with pytest.raises(InputError) as e:
        parse_config_json(data)
    assert str(e.value) == message


def test_brackets_inside_strings_do_not_count_as_nesting():
    doc = parse_config_json('\ufeff{"a": "' + "[{" * 100 + '\\"]"}')
    assert doc["a"].startswith("[{")


def test_unreadable_config_files(tmp_path):
    with pytest.raises(InputError, match=r"missing.json: no such file$"):
        load_config_file(tmp_path / "missing.json")
    with pytest.raises(InputError, match=r"is a directory, expected a config.json file$"):
        load_config_file(tmp_path)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_CONFIG_BYTES + 10))
    with pytest.raises(InputError, match=rf"larger than the {MAX_CONFIG_BYTES} byte limit for a config.json$"):
        load_config_file(big)


BAD_FILES: list[tuple[str, str, str]] = [
    ("nan", '{"num_hidden_layers": NaN}', "NaN is not a number JSON allows"),
    ("negative-context", json.dumps(edited(max_position_embeddings=-4096)), "max_position_embeddings must be an integer"),
    ("nested", "[" * 5000 + "]" * 5000, "nested more than 32 levels deep"),
    ("layers-string", json.dumps(edited(num_hidden_layers="many")), "num_hidden_layers must be an integer"),
    ("not-json", "{model: x}", "not valid JSON"),
]


@pytest.mark.parametrize(("text", "fragment"), [pytest.param(t, f, id=i) for i, t, f in BAD_FILES])
def test_select_with_a_bad_model_config_exits_2_with_one_line(capsys, tmp_path, text, fragment):
    path = tmp_path / "config.json"
    path.write_text(text)
    code = main(["select", "--model-config", str(path), "--model", "org/x", "--cluster", CLUSTER])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("aim-recipes: error: ") and fragment in err


def test_select_refuses_an_encoder_model_from_the_command_line():
    bert = CONFIGS / "bert-base-uncased-classifier.config.json"
    argv = ["select", "--model-config", str(bert), "--model", "org/x", "--cluster", CLUSTER]
    done = subprocess.run([sys.executable, "-m", "aim_engine.cli.main", *argv], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "aim-recipes: error: config.json of org/x: model_type 'bert' (BertForSequenceClassification)" + NOT_GENERATIVE
    ]


def test_validate_reads_model_configs_with_the_same_loader(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"num_hidden_layers": Infinity}')
    code = main(["validate", "--model-config", f"org/x={Path(path)}"])
    err = capsys.readouterr().err
    assert code == 2 and err == f"aim-recipes: error: {path}: Infinity is not a number JSON allows\n"
