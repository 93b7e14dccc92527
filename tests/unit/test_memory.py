"""The memory model: weights, KV cache per token, fit, minimum GPUs."""

from __future__ import annotations

from decimal import Decimal

from aim_engine.adapters.catalog import read_model_config
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import GIB
from aim_engine.rules.memory import MemoryInputs, kv_bytes_per_token, min_gpus, plan_memory, weight_bytes
from support import FIXTURES


def test_weights_at_each_precision(bundle):
    m = bundle.models.get("meta-llama/Llama-3.1-8B-Instruct")
    assert weight_bytes(m, "bf16") == Decimal("8.03e9") * 2
    assert weight_bytes(m, "fp8") == Decimal("8.03e9")
    assert weight_bytes(m, "int4") < weight_bytes(m, "fp8") / 2 + Decimal("1e9")


def test_native_checkpoint_size_is_used_for_prequantised_models(bundle):
    oss = bundle.models.get("openai/gpt-oss-120b")
    assert weight_bytes(oss, "mxfp4") == Decimal("60.8") * GIB


def test_kv_per_token_standard_attention(bundle):
    m = bundle.models.get("meta-llama/Llama-3.1-70B-Instruct")  # 80 layers, 8 KV heads, head dim 128
    assert kv_bytes_per_token(m, tp=1, pp=1, kv_cache_dtype="auto") == 80 * 2 * 8 * 128 * 2
    assert kv_bytes_per_token(m, tp=8, pp=1, kv_cache_dtype="fp8") == 80 * 2 * 1 * 128 * 1
    assert kv_bytes_per_token(m, tp=4, pp=2, kv_cache_dtype="auto") == 40 * 2 * 2 * 128 * 2


def test_kv_heads_are_replicated_when_tp_exceeds_them(bundle):
    m = bundle.models.get("Qwen/Qwen3-235B-A22B")  # 4 KV heads
    assert kv_bytes_per_token(m, tp=8, pp=1, kv_cache_dtype="auto") == kv_bytes_per_token(m, tp=4, pp=1, kv_cache_dtype="auto")


def test_mla_latent_is_replicated_on_every_tp_rank(bundle):
    ds = bundle.models.get("deepseek-ai/DeepSeek-R1")
    one = kv_bytes_per_token(ds, tp=1, pp=1, kv_cache_dtype="auto")
    assert one == 61 * (512 + 64) * 2
    assert kv_bytes_per_token(ds, tp=8, pp=1, kv_cache_dtype="auto") == one


def test_sliding_window_layers_do_not_hold_full_context(bundle):
    oss = bundle.models.get("openai/gpt-oss-120b")
    assert kv_bytes_per_token(oss, tp=1, pp=1, kv_cache_dtype="auto") == 18 * 2 * 8 * 64 * 2


def test_fit_and_the_largest_context_that_fits(bundle):
    m = bundle.models.get("meta-llama/Llama-3.1-70B-Instruct")
    h100 = bundle.hardware.require("H100")
    one = plan_memory(m, h100, "bf16", MemoryInputs(tp=1))
    assert not one.weights_fit and not one.fits  # 144 GB of weights on one 80 GB GPU
    four = plan_memory(m, h100, "bf16", MemoryInputs(tp=4, max_model_len=131072))
    assert four.fits and four.concurrent_sequences >= 1
    two_fp8 = plan_memory(m, h100, "fp8", MemoryInputs(tp=2, max_model_len=131072))
    assert two_fp8.weights_fit
    assert two_fp8.max_model_len_fit % 16 == 0
    assert two_fp8.fits == (two_fp8.max_model_len_fit >= 131072)


def test_min_gpus_per_product(bundle):
    m = bundle.models.get("meta-llama/Llama-3.1-70B-Instruct")
    assert min_gpus(m, bundle.hardware.require("MI300X"), "bf16", max_model_len=8192) == 1
    assert min_gpus(m, bundle.hardware.require("H100"), "bf16", max_model_len=8192) == 4
    assert min_gpus(m, bundle.hardware.require("H200"), "fp8", max_model_len=8192) == 1
    big = bundle.models.get("meta-llama/Llama-3.1-405B-Instruct")
    assert min_gpus(big, bundle.hardware.require("A100"), "bf16", max_model_len=8192) == 16
    assert min_gpus(big, bundle.hardware.require("A100"), "bf16", max_model_len=8192, limit=8) is None


def test_gpu_memory_utilization_bounds_the_budget(bundle):
    m = bundle.models.get("Qwen/Qwen3-8B")
    l40s = bundle.hardware.require("L40S")
    full = plan_memory(m, l40s, "bf16", MemoryInputs(tp=1, gpu_memory_utilization=Decimal("0.9")))
    half = plan_memory(m, l40s, "bf16", MemoryInputs(tp=1, gpu_memory_utilization=Decimal("0.5")))
    assert half.budget < full.budget and half.max_model_len_fit < full.max_model_len_fit


def _profile(**kw):
    base = {
        "id": "org/m",
        "architecture": "X",
        "parameters": Decimal(1000),
        "layers": 2,
        "hidden_size": 64,
        "intermediate_size": 256,
        "attention_heads": 4,
        "kv_heads": 4,
        "head_dim": 16,
        "vocab_size": 100,
        "max_context": 4096,
        "native_precision": "bf16",
    }
    return ModelProfile(**{**base, **kw})


def test_weights_are_priced_by_the_quantised_split():
    split = _profile(native_precision="mxfp4", quantized_parameters=Decimal(800))
    assert weight_bytes(split, "mxfp4") == 800 * Decimal("0.53125") + 200 * 2
    assert weight_bytes(split, "fp8") == 800 * 1 + 200 * 2
    assert weight_bytes(split, "bf16") == 1000 * 2  # 16 bit: the split does not matter
    unknown = _profile(native_precision="fp8")  # bundled entries without the split: every weight at the precision
    assert weight_bytes(unknown, "fp8") == 1000


def test_plan_weights_use_the_split(bundle):
    oss = read_model_config("openai/gpt-oss-120b", FIXTURES / "configs" / "gpt-oss-120b.config.json")
    bundled = bundle.models.get("openai/gpt-oss-120b")
    # The config.json analysis reproduces the published checkpoint size the bundled entry records.
    assert abs(weight_bytes(oss, "mxfp4") - weight_bytes(bundled, "mxfp4")) / weight_bytes(bundled, "mxfp4") < Decimal("0.01")
    plan = plan_memory(oss, bundle.hardware.require("MI300X"), "mxfp4", MemoryInputs(tp=2))
    assert plan.weights == weight_bytes(oss, "mxfp4") * Decimal("1.02") / 2
