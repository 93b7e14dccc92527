"""GPU memory estimate for serving a model with vLLM (documented in docs/memory-model.md).

Per GPU, with tensor parallel size t and pipeline parallel size p (N = t x p GPUs):

    budget      = memory x gpu_memory_utilization           (vLLM never uses more than this)
    weights     = W x 1.02 / N                              W = checkpoint size at its native precision
                                                            when published, else Q x bytes-per-parameter
                                                            + (P - Q) x 2 B: Q weights at the quantised
                                                            precision, the other P - Q (embeddings, LM
                                                            head, norms, routers, modules a checkpoint
                                                            leaves unconverted) at 16 bit; 1.02 covers
                                                            buffers and scales outside the parameter
                                                            count (Kaito's factor)
    activations = T x (4h + 2i/t) x 2 B + S x V x 4 B       peak of vLLM's profiling forward pass with
                                                            T = max_num_batched_tokens tokens, S = max_num_seqs
                                                            fp32 logits rows of vocabulary V
    non-torch   = 1.0 GiB (+0.5 GiB with t x p > 1)         runtime context, NCCL/RCCL buffers
    cuda graphs = 1.0 GiB unless enforce_eager              captured graph pools
    kv/token    = (L_full/p) x 2 x ceil(kv/t) x d x b       standard attention, KV heads split (or
                                                            replicated when t > kv heads)
                = (L/p) x (r + d_rope) x b                  MLA: one latent per layer, replicated on
                                                            every tensor-parallel rank
    fits        = budget - weights - activations - non-torch - graphs >= kv/token x max_model_len

vLLM refuses to start when one full-length sequence does not fit in the KV cache ("The model's
max seq len is larger than the maximum number of tokens that can be stored in KV cache"), which is
the last line. Sliding-window layers hold only their window, so L_full counts the other layers.

CPU (vLLM's CPU build) sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB), not from a fraction of
device memory, and everything lives in the pod's memory:

    budget      = the recipe's memory request
    kv budget   = VLLM_CPU_KVCACHE_SPACE, if budget - weights - activations - runtime leaves that much
    runtime     = 3.5 GiB                                    PyTorch, oneDNN and the engine process
                                                            (measured: 4.5 GiB RSS serving the test
                                                            model with a 1 GiB KV cache)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache

from aim_engine.domain.hardware import BYTES_PER_PARAM, GpuProduct
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import GIB, format_gib

WEIGHT_FACTOR = Decimal("1.02")
DEFAULT_GPU_MEMORY_UTILIZATION = Decimal("0.9")
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256
NON_TORCH_GIB = Decimal("1.0")
NON_TORCH_MULTI_GPU_GIB = Decimal("0.5")
CUDA_GRAPH_GIB = Decimal("1.0")
CPU_RUNTIME_GIB = Decimal("3.5")
# vLLM's CPU build takes 4 GiB of KV cache when VLLM_CPU_KVCACHE_SPACE is unset or 0.
CPU_DEFAULT_KV_CACHE_GIB = Decimal(4)
BLOCK = 16  # KV-cache block size: suggested context lengths are rounded down to it


@dataclass(frozen=True, slots=True)
class MemoryInputs:
    tp: int
    pp: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: Decimal = DEFAULT_GPU_MEMORY_UTILIZATION
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    enforce_eager: bool = False
    # CPU products only: VLLM_CPU_KVCACHE_SPACE and the pod's memory request, in bytes.
    cpu_kv_cache_space: Decimal = Decimal(0)
    cpu_memory: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    gpus: int
    budget: Decimal
    weights: Decimal
    activations: Decimal
    overhead: Decimal
    kv_per_token: Decimal
    kv_budget: Decimal
    max_model_len: int
    max_model_len_fit: int
    concurrent_sequences: int

    @property
    def weights_fit(self) -> bool:
        return self.kv_budget > 0

    @property
    def fits(self) -> bool:
        return self.weights_fit and self.max_model_len_fit >= self.max_model_len

    @property
    def required(self) -> Decimal:
        """Memory per GPU this plan needs for one full-length sequence."""
        return self.weights + self.activations + self.overhead + self.kv_per_token * self.max_model_len


SIXTEEN_BIT = Decimal(2)


def weight_bytes(model: ModelProfile, precision: str) -> Decimal:
    """Total weight bytes at a precision (before splitting across GPUs). A quantised precision
    applies to the model's quantised weights only (`quantized_parameters`: a pre-quantised
    checkpoint's converted layers, or the linear layers vLLM converts online); the rest stays
    16 bit. Without that split (bundled entries) every weight is priced at the precision."""
    if precision == model.native_precision and model.checkpoint_gib is not None:
        return model.checkpoint_gib * GIB
    per_weight = BYTES_PER_PARAM[precision]
    quantized = model.quantized_parameters
    if quantized is None or per_weight >= SIXTEEN_BIT:
        return model.parameters * per_weight
    return quantized * per_weight + (model.parameters - quantized) * SIXTEEN_BIT


def cache_shortfall(model: ModelProfile, *, cache_bytes: Decimal, where: str) -> str | None:
    """A model cache smaller than the checkpoint it must hold (the download is the weights at the
    checkpoint's own precision): what to change, with both numbers; None when it fits."""
    need = weight_bytes(model, model.native_precision)
    if cache_bytes >= need:
        return None
    need_gib = math.ceil(need / GIB)  # whole GiB, rounded up
    return (
        f"{where} holds {format_gib(cache_bytes)}, but {model.id}'s checkpoint ({model.native_precision}) is "
        f"{format_gib(need)}: set model_cache.size to at least {need_gib}Gi (or use a larger model_cache.existing_claim)"
    )


def kv_element_bytes(model: ModelProfile, kv_cache_dtype: str) -> int:
    if kv_cache_dtype.startswith("fp8"):
        return 1
    return 2  # auto: the model's 16-bit compute dtype (FP8/4-bit checkpoints still compute in bf16)


def kv_bytes_per_token(model: ModelProfile, *, tp: int, pp: int, kv_cache_dtype: str) -> Decimal:
    """KV-cache bytes one token occupies on one GPU."""
    b = kv_element_bytes(model, kv_cache_dtype)
    layers = math.ceil(model.layers / pp)
    if model.is_mla:
        latent = (model.mla_kv_lora_rank or 0) + (model.mla_rope_head_dim or 0)
        return Decimal(layers * latent * b)
    full_layers = math.ceil((model.layers - model.sliding_window_layers) / pp)
    kv_heads_per_gpu = math.ceil(model.kv_heads / tp)
    return Decimal(full_layers * 2 * kv_heads_per_gpu * model.head_dim * b)


@lru_cache(maxsize=16384)
def plan_memory(model: ModelProfile, product: GpuProduct, precision: str, inputs: MemoryInputs) -> MemoryPlan:
    """Memoised: catalogs repeat the same (model, product, precision, settings) many times."""
    gpus = inputs.tp * inputs.pp
    budget = inputs.cpu_memory if product.is_cpu else product.memory_bytes * inputs.gpu_memory_utilization
    weights = weight_bytes(model, precision) * WEIGHT_FACTOR / gpus
    inter = (
        model.moe_intermediate_size * (model.experts_per_token or 1)
        if model.is_moe and model.moe_intermediate_size
        else model.intermediate_size
    )
    activations = Decimal(
        inputs.max_num_batched_tokens * (4 * model.hidden_size + 2 * math.ceil(inter / inputs.tp)) * 2
        + inputs.max_num_seqs * model.vocab_size * 4
    )
    overhead = NON_TORCH_GIB * GIB + (NON_TORCH_MULTI_GPU_GIB * GIB if gpus > 1 else Decimal(0))
    if product.is_cpu:
        overhead = CPU_RUNTIME_GIB * GIB
    elif not inputs.enforce_eager:
        overhead += CUDA_GRAPH_GIB * GIB
    kv_token = kv_bytes_per_token(model, tp=inputs.tp, pp=inputs.pp, kv_cache_dtype=inputs.kv_cache_dtype)
    kv_budget = budget - weights - activations - overhead
    if product.is_cpu:
        space = inputs.cpu_kv_cache_space or CPU_DEFAULT_KV_CACHE_GIB * GIB
        kv_budget = space if kv_budget >= space else min(kv_budget, Decimal(0))
    max_len = inputs.max_model_len or model.max_context
    if kv_budget <= 0 or kv_token <= 0:
        fit_len = 0
        concurrent = 0
    else:
        tokens = int((kv_budget / kv_token).to_integral_value(rounding=ROUND_FLOOR))
        fit_len = min(model.max_context, tokens - tokens % BLOCK)
        concurrent = tokens // max_len if max_len else 0
    return MemoryPlan(
        gpus=gpus,
        budget=budget,
        weights=weights,
        activations=activations,
        overhead=overhead,
        kv_per_token=kv_token,
        kv_budget=kv_budget,
        max_model_len=max_len,
        max_model_len_fit=fit_len,
        concurrent_sequences=concurrent,
    )


def min_gpus(
    model: ModelProfile,
    product: GpuProduct,
    precision: str,
    *,
    max_model_len: int | None = None,
    kv_cache_dtype: str = "auto",
    limit: int = 64,
) -> int | None:
    """Smallest tensor-parallel size (a valid one for the model) whose plan fits, or None."""
    for tp in model.valid_tp_sizes(up_to=limit):
        plan = plan_memory(
            model, product, precision, MemoryInputs(tp=tp, max_model_len=max_model_len, kv_cache_dtype=kv_cache_dtype)
        )
        if plan.fits:
            return tp
    return None
