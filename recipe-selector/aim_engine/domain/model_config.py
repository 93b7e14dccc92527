"""A model analysed from its Hugging Face config.json: architecture facts, every weight counted,
and which weights a quantised checkpoint keeps at 16 bit.

A config.json is analysed the way transformers and vLLM read it: keys a config leaves out take the
defaults of its model type's transformers config class (Gemma ties its embeddings, Llama does not;
Gemma-3's text_config relies on Gemma3TextConfig for its vocabulary and context), multimodal
checkpoints count the vision tower vLLM loads with the language model, and every weight is counted
(embeddings, attention with its biases and norms, MLA's low-rank factors, dense or expert MLPs with
routers and shared experts, norms, LM head). Checked against published figures on real configs in
tests/fixtures/configs: Llama, Qwen2.5 (qkv bias), Qwen3 (qk norm), Qwen3-MoE, Mixtral, Gemma-2,
Gemma-3 with its SigLIP tower, Qwen2.5-VL, DeepSeek-V3 (MLA, shared expert), gpt-oss (attention
bias, sinks, expert biases). Phi-3, Llama-4 text, Qwen2-MoE, LLaVA's CLIP tower and Qwen2-VL use the
same building blocks, unchecked; other decoder-only families are counted as Llama-like. Configs that
are not decoder-only generative models (BERT, T5, classifiers) are refused.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aim_engine.domain.errors import InputError
from aim_engine.domain.models import ModelProfile

# --------------------------------------------------------------------------------------------
# Loading a config.json: bytes or text -> a validated JSON object.

MAX_CONFIG_BYTES = 2 * 1024 * 1024  # real config.json files are a few KiB; per-layer ignore lists stay far below this
MAX_CONFIG_DEPTH = 32  # a config.json nests a few sections (text_config > rope_scaling); JSON deeper than this is not one
_MAX_INT_DIGITS = 30
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


class _BadNumber(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _BadNumber(f"integer {text[:20]}… has more than {_MAX_INT_DIGITS} digits")
    return int(text)


def _json_type(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def parse_config_json(data: bytes | str, *, where: str = "config.json") -> dict[str, Any]:
    """Parse the bytes or text of a config.json into a JSON object. Refuses, as one-line
    InputErrors: more than MAX_CONFIG_BYTES, text that is not UTF-8, nesting deeper than
    MAX_CONFIG_DEPTH, NaN/Infinity and out-of-range numbers, invalid JSON, a top level that is not
    an object."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise InputError(f"{where}: {size} bytes is larger than the {MAX_CONFIG_BYTES} byte limit for a config.json")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{where}: not UTF-8 text") from e
    else:
        text = data
    text = text.removeprefix("\ufeff")
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > MAX_CONFIG_DEPTH:
            raise InputError(f"{where}: JSON nested more than {MAX_CONFIG_DEPTH} levels deep, which no config.json is")
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except _BadNumber as e:
        raise InputError(f"{where}: {e}") from e
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON (line {e.lineno}: {e.msg})") from e
    except RecursionError as e:  # unreachable after the depth check; kept so no input becomes a traceback
        raise InputError(f"{where}: JSON nested too deeply") from e
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a JSON object at the top level, got {_json_type(doc)}")
    return doc


# --------------------------------------------------------------------------------------------
# Defaults of transformers' config classes, for the keys real config.json files leave out.

# tie_word_embeddings: PretrainedConfig's default is True, but most model classes set False.
_TIED_BY_DEFAULT = ("gemma", "gemma2", "gemma3_text", "gemma3", "paligemma")
_UNTIED_BY_DEFAULT = [
    *("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss"),
    *("phi3", "qwen2_vl", "qwen2_5_vl", "llama4_text", "granite", "granitemoe", "olmo", "olmo2", "olmoe", "internlm2"),
]
_DEFAULTS: dict[str, dict[str, Any]] = {
    **{t: {"tie_word_embeddings": True} for t in _TIED_BY_DEFAULT},
    **{t: {"tie_word_embeddings": False} for t in _UNTIED_BY_DEFAULT},
}
_DEFAULTS["gemma"].update(head_dim=256)
_DEFAULTS["gemma2"].update(head_dim=256, sliding_window=4096)
_DEFAULTS["gemma3_text"].update(  # transformers Gemma3TextConfig
    vocab_size=262_208,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    max_position_embeddings=131_072,
    sliding_window=4096,
    sliding_window_pattern=6,
)
_DEFAULTS["gpt_oss"].update(attention_bias=True, head_dim=64)
_DEFAULTS["deepseek_v3"].update(first_k_dense_replace=3, moe_layer_freq=1, n_shared_experts=1, topk_method="noaux_tc")
_DEFAULTS["deepseek_v2"].update(first_k_dense_replace=0, moe_layer_freq=1, topk_method="greedy")
_DEFAULTS["qwen2_moe"].update(decoder_sparse_step=1)
_DEFAULTS["qwen3_moe"].update(decoder_sparse_step=1)
_DEFAULTS["llama4_text"].update(interleave_moe_layer_step=1)
_VISION_DEFAULTS: dict[str, dict[str, Any]] = {
    # transformers SiglipVisionConfig / CLIPVisionConfig
    "siglip": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 16,
    },
    "clip": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 32,
    },
    "qwen2_5_vl": {"in_chans": 3, "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2},
    "qwen2_vl": {"in_chans": 3, "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2, "mlp_ratio": 4},
    "generic": {},
}
# The text model type of a composite (multimodal) model type, when its text_config does not say.
_TEXT_TYPE = {"gemma3": "gemma3_text", "llama4": "llama4_text", "paligemma": "gemma", "mistral3": "mistral", "llava": "llama"}

_ENCODER_TYPES = frozenset(
    {
        *("bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "mpnet"),
        *("camembert", "modernbert", "nomic_bert", "ernie", "xlm", "flaubert", "longformer", "big_bird", "funnel"),
        *("t5", "mt5", "umt5", "bart", "mbart", "marian", "pegasus", "whisper", "m2m_100", "led", "prophetnet"),
        *("fsmt", "blenderbot", "encoder-decoder", "vit", "clip", "siglip"),
    }
)
_GENERATIVE_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration")
_QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl"})
_QK_NORM_TYPES = frozenset({"qwen3", "qwen3_moe", "gemma3_text"})
_FOUR_NORM_TYPES = frozenset({"gemma2", "gemma3_text"})

# Bounds well above any real model; values outside them are typos or hostile input.
_DIM_MAX = 1 << 20
_VOCAB_MAX = 1 << 24
_LAYERS_MAX = 1024
_HEADS_MAX = 1 << 14
_EXPERTS_MAX = 1 << 16
_CONTEXT_MAX = 1 << 26
_IGNORE_MAX = 20_000
_PATTERN_MAX = 512


class _Section:
    """One section of a config.json (the top level, text_config or vision_config) read with the
    transformers defaults of its model type; every value is validated when it is read."""

    def __init__(self, raw: Mapping[str, Any], defaults: Mapping[str, Any], where: str, prefix: str = "") -> None:
        self.raw = raw
        self.defaults = defaults
        self.where = where
        self.prefix = prefix

    def get(self, key: str) -> Any:
        value = self.raw.get(key)
        return self.defaults.get(key) if value is None else value

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def fail(self, key: str, message: str) -> InputError:
        return InputError(f"{self.where}: {self.prefix}{key} {message}")

    def integer(self, key: str, *, high: int, low: int = 1, default: int | None = None) -> int:
        value = self.get(key)
        if value is None:
            if default is not None:
                return default
            raise InputError(f"{self.where}: missing '{self.prefix}{key}'; is this a decoder-only language model's config.json?")
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be an integer from {low} to {high}, got {_show(value)}")
        return value

    def opt_int(self, key: str, *, high: int, low: int = 1) -> int | None:
        return self.integer(key, high=high, low=low) if self.has(key) else None

    def first_int(self, keys: Sequence[str], *, high: int, low: int = 1) -> int | None:
        for key in keys:
            if self.has(key):
                return self.integer(key, high=high, low=low)
        return None

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_show(value)}")
        return value

    def text(self, key: str) -> str | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 200:
            raise self.fail(key, f"must be a string, got {_show(value)}")
        return value

    def int_list(self, key: str, *, high: int) -> list[int]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(type(v) is int and 0 <= v <= high for v in value):
            raise self.fail(key, f"must be a list of integers from 0 to {high}, got {_show(value)}")
        return list(value)

    def section(self, key: str) -> Mapping[str, Any] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be an object, got {_json_type(value)}")
        return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------
# Parameter tally: every weight tensor, grouped so quantisation and per-token use can be told apart.


@dataclass(frozen=True, slots=True)
class _Linear:
    name: str  # module name as in the checkpoint (for a checkpoint's list of unconverted modules)
    weights: int


@dataclass(frozen=True, slots=True)
class _Part:
    linears: tuple[_Linear, ...] = ()
    other: int = 0  # not linear-layer weights: biases, norms, embeddings, sinks, conv/position embeddings
    copies: int = 1  # e.g. the experts of a layer
    active_copies: int = 1  # copies one token uses
    quantizable: bool = True  # routers stay 16 bit in every format

    @property
    def weights(self) -> int:
        return sum(linear.weights for linear in self.linears)

    @property
    def total(self) -> int:
        return (self.weights + self.other) * self.copies

    @property
    def active(self) -> int:
        return (self.weights + self.other) * self.active_copies


def _linears(prefix: str, shapes: Sequence[tuple[str, int, int]]) -> tuple[_Linear, ...]:
    return tuple(_Linear(f"{prefix}.{name}", fan_in * fan_out) for name, fan_in, fan_out in shapes)


def _gated_mlp(
    prefix: str, hidden: int, width: int, *, names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")
) -> tuple[_Linear, ...]:
    gate, up, down = names
    return _linears(prefix, [(gate, hidden, width), (up, hidden, width), (down, width, hidden)])


@dataclass(frozen=True, slots=True)
class _Text:
    """The language model's shape, validated."""

    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    max_context: int
    tied: bool
    experts: int | None
    experts_per_token: int | None
    expert_width: int | None
    kv_lora_rank: int | None
    rope_head_dim: int | None
    sliding_window_size: int | None
    sliding_window_layers: int


def _text_shape(t: _Section, family: str, top: _Section) -> _Text:
    layers = t.integer("num_hidden_layers", high=_LAYERS_MAX)
    hidden = t.integer("hidden_size", high=_DIM_MAX)
    heads = t.integer("num_attention_heads", high=_HEADS_MAX)
    vocab = t.integer("vocab_size", high=_VOCAB_MAX)
    kv_lora = t.opt_int("kv_lora_rank", high=_DIM_MAX)
    kv_heads = t.integer("num_key_value_heads", high=_HEADS_MAX, default=heads)
    if kv_lora is not None:
        head_dim = t.integer("qk_nope_head_dim", high=_DIM_MAX, default=128) + t.integer(
            "qk_rope_head_dim", high=_DIM_MAX, default=64
        )
    elif t.has("head_dim"):
        head_dim = t.integer("head_dim", high=_DIM_MAX)
    elif hidden % heads == 0:
        head_dim = hidden // heads
    else:
        raise t.fail("hidden_size", f"{hidden} is not a multiple of num_attention_heads {heads} and no head_dim is given")
    if kv_lora is None and heads % kv_heads != 0:
        raise t.fail("num_attention_heads", f"{heads} is not a multiple of num_key_value_heads {kv_heads}")
    intermediate = t.integer("intermediate_size", high=_DIM_MAX, default=4 * hidden)
    context = t.first_int(("max_position_embeddings", "max_sequence_length", "seq_length"), high=_CONTEXT_MAX) or 4096

    experts = t.first_int(("num_local_experts", "num_experts", "n_routed_experts"), high=_EXPERTS_MAX, low=0)
    per_token: int | None = None
    width: int | None = None
    if experts is not None and experts > 1:
        per_token = t.first_int(("num_experts_per_tok", "experts_per_token", "moe_topk"), high=_EXPERTS_MAX)
        if per_token is None:
            raise InputError(
                f"{t.where}: missing '{t.prefix}num_experts_per_tok' of a mixture-of-experts model ({experts} experts)"
            )
        if per_token > experts:
            raise t.fail("num_experts_per_tok", f"{per_token} is more than the {experts} experts")
        width = t.integer("moe_intermediate_size", high=_DIM_MAX, default=intermediate)
    else:
        experts = None

    explicit_tie = t.raw.get("tie_word_embeddings")
    if explicit_tie is None and family not in _DEFAULTS:
        explicit_tie = top.raw.get("tie_word_embeddings")
    if explicit_tie is not None and not isinstance(explicit_tie, bool):
        raise t.fail("tie_word_embeddings", f"must be true or false, got {_show(explicit_tie)}")
    # A model type whose default is not known keeps its LM head (counted: the conservative side).
    tied = explicit_tie if explicit_tie is not None else bool(_DEFAULTS.get(family, {}).get("tie_word_embeddings", False))

    sw_size = t.opt_int("sliding_window", high=_CONTEXT_MAX)
    sw_layers = 0
    layer_types = t.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or not all(isinstance(x, str) for x in layer_types) or len(layer_types) != layers:
            raise t.fail("layer_types", f"must list one attention type per layer ({layers}), got {_show(layer_types)}")
        sw_layers = sum(1 for x in layer_types if x == "sliding_attention")
    elif family == "gemma2":
        sw_layers = (layers + 1) // 2  # even layers slide
    elif family == "gemma3_text":
        pattern = t.first_int(("sliding_window_pattern", "_sliding_window_pattern"), high=_LAYERS_MAX) or 6
        sw_layers = layers - layers // pattern  # every pattern-th layer is global
    if sw_size is None or t.get("use_sliding_window") is False:
        sw_layers = 0
    return _Text(
        family=family,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=vocab,
        intermediate=intermediate,
        max_context=context,
        tied=tied,
        experts=experts,
        experts_per_token=per_token,
        expert_width=width,
        kv_lora_rank=kv_lora,
        rope_head_dim=t.integer("qk_rope_head_dim", high=_DIM_MAX, default=64) if kv_lora is not None else None,
        sliding_window_size=sw_size if sw_layers else None,
        sliding_window_layers=sw_layers,
    )


def _attention(t: _Section, s: _Text, prefix: str) -> _Part:
    h, d = s.hidden, s.head_dim
    if s.kv_lora_rank is not None:  # multi-head latent attention (DeepSeek-V2/V3)
        nope = t.integer("qk_nope_head_dim", high=_DIM_MAX, default=128)
        rope = s.rope_head_dim or 64
        v_dim = t.integer("v_head_dim", high=_DIM_MAX, default=nope)
        q_rank = t.opt_int("q_lora_rank", high=_DIM_MAX)
        q_dim = s.heads * (nope + rope)
        shapes: list[tuple[str, int, int]] = (
            [("q_a_proj", h, q_rank), ("q_b_proj", q_rank, q_dim)] if q_rank is not None else [("q_proj", h, q_dim)]
        )
        shapes += [
            ("kv_a_proj_with_mqa", h, s.kv_lora_rank + rope),
            ("kv_b_proj", s.kv_lora_rank, s.heads * (nope + v_dim)),
            ("o_proj", s.heads * v_dim, h),
        ]
        norms = (q_rank or 0) + s.kv_lora_rank  # q_a_layernorm, kv_a_layernorm
        return _Part(_linears(prefix, shapes), other=norms)
    q, kv = s.heads * d, s.kv_heads * d
    shapes = [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h)]
    other = 0
    if s.family in _QKV_BIAS_TYPES:
        other += q + 2 * kv
    elif t.flag("attention_bias"):
        other += q + 2 * kv + h
    if s.family == "gpt_oss":
        other += s.heads  # attention sinks
    if s.family in _QK_NORM_TYPES:
        other += 2 * d
    elif s.family == "olmo2":
        other += q + kv
    return _Part(_linears(prefix, shapes), other=other)


def _is_moe_layer(t: _Section, s: _Text, i: int) -> bool:
    if s.experts is None:
        return False
    if s.family in ("deepseek_v2", "deepseek_v3"):
        first_dense = t.integer("first_k_dense_replace", high=_LAYERS_MAX, low=0, default=0)
        return i >= first_dense and i % t.integer("moe_layer_freq", high=_LAYERS_MAX, default=1) == 0
    if s.family in ("qwen2_moe", "qwen3_moe"):
        if i in t.int_list("mlp_only_layers", high=_LAYERS_MAX):
            return False
        return (i + 1) % t.integer("decoder_sparse_step", high=_LAYERS_MAX, default=1) == 0
    if s.family == "llama4_text":
        return (i + 1) % t.integer("interleave_moe_layer_step", high=_LAYERS_MAX, default=1) == 0
    return True


def _mlp(t: _Section, s: _Text, i: int, layer: str) -> list[_Part]:
    h = s.hidden
    if not _is_moe_layer(t, s, i):
        width = (
            t.integer("intermediate_size_mlp", high=_DIM_MAX, default=s.intermediate)
            if s.family == "llama4_text"
            else s.intermediate
        )
        block = "feed_forward" if s.family == "llama4_text" else "mlp"
        bias = 2 * width + h if t.flag("mlp_bias") else 0
        return [_Part(_gated_mlp(f"{layer}.{block}", h, width), other=bias)]
    experts, k, width = s.experts or 1, s.experts_per_token or 1, s.expert_width or s.intermediate
    if s.family == "mixtral":
        moe, expert_names = f"{layer}.block_sparse_moe", ("w1", "w3", "w2")
        return [
            _Part(_linears(moe, [("gate", h, experts)]), quantizable=False),
            _Part(_gated_mlp(f"{moe}.experts.0", h, width, names=expert_names), copies=experts, active_copies=k),
        ]
    if s.family == "gpt_oss":  # fused expert tensors with biases; the router has a bias
        moe = f"{layer}.mlp"
        fused = _linears(f"{moe}.experts", [("gate_up_proj", h, 2 * width), ("down_proj", width, h)])
        return [
            _Part(_linears(moe, [("router", h, experts)]), other=experts, quantizable=False),
            _Part(fused, other=2 * width + h, copies=experts, active_copies=k),
        ]
    if s.family == "llama4_text":
        moe = f"{layer}.feed_forward"
        return [
            _Part(_linears(moe, [("router", h, experts)]), quantizable=False),
            _Part(_gated_mlp(f"{moe}.experts.0", h, width), copies=experts, active_copies=k),
            _Part(_gated_mlp(f"{moe}.shared_expert", h, width)),
        ]
    moe = f"{layer}.mlp"
    router_bias = experts if s.family == "deepseek_v3" and t.get("topk_method") == "noaux_tc" else 0  # e_score_correction_bias
    parts = [
        _Part(_linears(moe, [("gate", h, experts)]), other=router_bias, quantizable=False),
        _Part(_gated_mlp(f"{moe}.experts.0", h, width), copies=experts, active_copies=k),
    ]
    shared_experts = t.integer("n_shared_experts", high=_EXPERTS_MAX, low=0, default=0)
    if shared_experts:
        parts.append(_Part(_gated_mlp(f"{moe}.shared_experts", h, shared_experts * width)))
    shared_width = t.integer("shared_expert_intermediate_size", high=_DIM_MAX, low=0, default=0)
    if shared_width:
        parts.append(_Part(_gated_mlp(f"{moe}.shared_expert", h, shared_width)))
        parts.append(_Part(_linears(moe, [("shared_expert_gate", h, 1)]), quantizable=False))
    return parts


def _text_parts(t: _Section, s: _Text) -> list[_Part]:
    h = s.hidden
    norms_per_layer = (4 if s.family in _FOUR_NORM_TYPES else 2) * h
    parts = [_Part(other=s.vocab * h)]  # token embeddings
    for i in range(s.layers):
        layer = f"model.layers.{i}"
        attention = "self_attn"
        parts.append(_attention(t, s, f"{layer}.{attention}"))
        parts.append(_Part(other=norms_per_layer))
        parts.extend(_mlp(t, s, i, layer))
    parts.append(_Part(other=h))  # final norm
    if not s.tied:
        parts.append(_Part((_Linear("lm_head", h * s.vocab),), quantizable=False))
    return parts


# --------------------------------------------------------------------------------------------
# Vision towers vLLM loads with a multimodal model.


def _vit_layers(prefix: str, layers: int, hidden: int, width: int, *, attention: str = "self_attn") -> list[_Part]:
    """Pre-norm ViT encoder layers with LayerNorm and biases everywhere (SigLIP, CLIP)."""
    parts = []
    for i in range(layers):
        layer = f"{prefix}.layers.{i}"
        attn = _linears(
            f"{layer}.{attention}",
            [("q_proj", hidden, hidden), ("k_proj", hidden, hidden), ("v_proj", hidden, hidden), ("out_proj", hidden, hidden)],
        )
        mlp = _linears(f"{layer}.mlp", [("fc1", hidden, width), ("fc2", width, hidden)])
        parts.append(
            _Part(attn + mlp, other=4 * hidden + width + hidden + 2 * 2 * hidden)
        )  # 4 attention biases, fc biases, 2 LayerNorms
    return parts


def _vision_parts(top: _Section, top_type: str, raw: Mapping[str, Any], text_hidden: int) -> list[_Part]:
    vision_type = raw.get("model_type")
    if vision_type == "siglip_vision_model" or (vision_type is None and top_type in ("gemma3", "paligemma")):
        kind = "siglip"
    elif vision_type == "clip_vision_model":
        kind = "clip"
    elif top_type in ("qwen2_5_vl", "qwen2_vl"):
        kind = top_type
    else:
        kind = "generic"
    v = _Section(raw, _VISION_DEFAULTS[kind], top.where, "vision_config.")
    if kind in ("siglip", "clip"):
        hidden = v.integer("hidden_size", high=_DIM_MAX)
        width = v.integer("intermediate_size", high=_DIM_MAX)
        layers = v.integer("num_hidden_layers", high=_LAYERS_MAX)
        channels = v.integer("num_channels", high=64)
        image, patch = v.integer("image_size", high=1 << 16), v.integer("patch_size", high=1 << 16)
        patches = (image // patch) ** 2
        tower = "vision_tower.vision_model"
        parts = _vit_layers(f"{tower}.encoder", layers, hidden, width)
        if kind == "siglip":
            parts.append(
                _Part(other=channels * patch * patch * hidden + hidden + patches * hidden + 2 * hidden)
            )  # conv, positions, post-norm
            if v.flag("vision_use_head", default=True):  # attention-pooling head
                head = _linears(
                    f"{tower}.head",
                    [
                        ("attention.in_proj", hidden, 3 * hidden),
                        ("attention.out_proj", hidden, hidden),
                        ("mlp.fc1", hidden, width),
                        ("mlp.fc2", width, hidden),
                    ],
                )
                parts.append(_Part(head, other=hidden + 3 * hidden + hidden + 2 * hidden + width + hidden))
        else:  # CLIP: class embedding, conv without bias, positions incl. the class token, pre- and post-norm
            parts.append(_Part(other=hidden + channels * patch * patch * hidden + (patches + 1) * hidden + 4 * hidden))
        if top_type == "gemma3":  # mm_input_projection weight (a parameter, not a linear layer) and soft-embedding norm
            parts.append(_Part(other=hidden * text_hidden + hidden))
        else:  # LLaVA-style two-layer projector
            parts.append(
                _Part(
                    _linears(
                        "multi_modal_projector", [("linear_1", hidden, text_hidden), ("linear_2", text_hidden, text_hidden)]
                    ),
                    other=2 * text_hidden,
                )
            )
        return parts
    if kind in ("qwen2_5_vl", "qwen2_vl"):
        depth = v.integer("depth", high=_LAYERS_MAX)
        channels = v.first_int(("in_chans", "in_channels"), high=64) or 3
        patch, temporal, merge = (
            v.integer("patch_size", high=1 << 10),
            v.integer("temporal_patch_size", high=64),
            v.integer("spatial_merge_size", high=64),
        )
        if kind == "qwen2_5_vl":
            hidden, width = v.integer("hidden_size", high=_DIM_MAX), v.integer("intermediate_size", high=_DIM_MAX)
            out = v.integer("out_hidden_size", high=_DIM_MAX, default=text_hidden)
            norm = hidden  # RMSNorm
            mlp_shapes = [("gate_proj", hidden, width), ("up_proj", hidden, width), ("down_proj", width, hidden)]
            mlp_bias = 2 * width + hidden
        else:
            hidden = v.integer("embed_dim", high=_DIM_MAX)
            width = hidden * v.integer("mlp_ratio", high=64)
            out = v.integer("hidden_size", high=_DIM_MAX, default=text_hidden)
            norm = 2 * hidden  # LayerNorm
            mlp_shapes = [("fc1", hidden, width), ("fc2", width, hidden)]
            mlp_bias = width + hidden
        parts = [_Part(other=channels * temporal * patch * patch * hidden)]  # Conv3d patch embedding, no bias
        for i in range(depth):
            block = f"visual.blocks.{i}"
            linears = _linears(f"{block}.attn", [("qkv", hidden, 3 * hidden), ("proj", hidden, hidden)]) + _linears(
                f"{block}.mlp", mlp_shapes
            )
            parts.append(_Part(linears, other=3 * hidden + hidden + mlp_bias + 2 * norm))
        merged = hidden * merge * merge
        merger = _linears("visual.merger.mlp", [("0", merged, merged), ("2", merged, out)])
        parts.append(_Part(merger, other=norm + merged + out))
        return parts
    return _generic_vision(v, text_hidden)


def _generic_vision(v: _Section, text_hidden: int) -> list[_Part]:
    """A vision tower of a type without a formula here: a ViT of its stated size and one projector."""
    size = v.first_int(("hidden_size", "embed_dim", "width"), high=_DIM_MAX)
    depth = v.first_int(("num_hidden_layers", "depth", "layers"), high=_LAYERS_MAX)
    if size is None or depth is None:
        raise InputError(f"{v.where}: vision_config needs hidden_size and num_hidden_layers to size the vision tower")
    parts = _vit_layers("vision_tower.encoder", depth, size, v.integer("intermediate_size", high=_DIM_MAX, default=4 * size))
    parts.append(_Part(_linears("multi_modal_projector", [("linear", size, text_hidden)]), other=text_hidden))
    return parts


# --------------------------------------------------------------------------------------------
# Quantised checkpoints: which precision, and which modules stay 16 bit.


class _Ignore:
    """A checkpoint's list of modules left unconverted (modules_to_not_convert, ignore, ...):
    plain module names match as a dotted component sequence ("lm_head", "self_attn",
    "model.layers.0.mlp.gate"), entries with * or ? as globs over the same boundaries, "re:"
    entries as regular expressions matched from the start of the name (compressed-tensors). Globs
    and expressions are joined into one expression, so a long list costs one match per module."""

    def __init__(self, entries: Sequence[str], where: str) -> None:
        if len(entries) > _IGNORE_MAX:
            raise InputError(f"{where}: lists {len(entries)} modules to leave unconverted, more than {_IGNORE_MAX}")
        self.plain: set[str] = set()
        sources: list[str] = []
        for entry in entries:
            if len(entry) > _PATTERN_MAX:
                raise InputError(f"{where}: module pattern {_show(entry)} is longer than {_PATTERN_MAX} characters")
            if entry.startswith("re:"):
                try:
                    re.compile(entry[3:])
                except re.error as e:
                    raise InputError(f"{where}: module pattern {_show(entry)} is not a valid regular expression ({e})") from e
                sources.append(entry[3:])
            elif "*" in entry or "?" in entry:
                glob = entry.strip(".")
                sources.extend(fnmatch.translate(p) for p in (glob, f"{glob}.*", f"*.{glob}", f"*.{glob}.*"))
            elif entry.strip("."):
                self.plain.add(entry.strip("."))
        self.pattern = re.compile("|".join(f"(?:{source})" for source in sources)) if sources else None

    def __bool__(self) -> bool:
        return bool(self.plain or self.pattern)

    def matches(self, name: str) -> bool:
        parts = name.split(".")
        if self.plain and any(
            ".".join(parts[a:b]) in self.plain for a in range(len(parts)) for b in range(a + 1, len(parts) + 1)
        ):
            return True
        return bool(self.pattern and self.pattern.match(name))


@dataclass(frozen=True, slots=True)
class _Quant:
    precision: str
    ignore: _Ignore
    lm_head: bool = False  # GPTQ's lm_head: true quantises the LM head too


def _string_list(q: Mapping[str, Any], keys: Sequence[str], where: str) -> list[str]:
    entries: list[str] = []
    for key in keys:
        value = q.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise InputError(f"{where}: quantization_config.{key} must be a list of module names, got {_show(value)}")
        entries.extend(value)
    return entries


_QUANT_METHODS = "fp8, fbgemm_fp8, mxfp4, awq, gptq, compressed-tensors, modelopt (FP8), bitsandbytes"


def _quantization(cfg: Mapping[str, Any], where: str) -> _Quant | None:
    q = cfg.get("quantization_config")
    if q is None:
        return None
    if not isinstance(q, Mapping):
        raise InputError(f"{where}: quantization_config must be an object, got {_json_type(q)}")
    method = q.get("quant_method")
    if not isinstance(method, str):
        raise InputError(f"{where}: quantization_config.quant_method must be a string, got {_show(method)}")
    m = method.lower()
    ignore_keys: tuple[str, ...] = ("modules_to_not_convert",)
    lm_head = False
    if m in ("fp8", "fbgemm_fp8", "ptpc_fp8"):
        precision, ignore_keys = "fp8", ("modules_to_not_convert", "ignored_layers")
    elif m == "mxfp4":
        precision = "mxfp4"
    elif m in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
        bits = q.get("bits", q.get("w_bit", 4))
        if isinstance(bits, bool) or bits not in (4, 8):
            raise InputError(f"{where}: quantization_config.bits must be 4 or 8 for {method}, got {_show(bits)}")
        precision = "int4" if bits == 4 else "int8"
        head = q.get("lm_head", False)
        if not isinstance(head, bool):
            raise InputError(f"{where}: quantization_config.lm_head must be true or false, got {_show(head)}")
        lm_head = head
    elif m == "compressed-tensors":
        precision, ignore_keys = _compressed_tensors_precision(q, where), ("ignore",)
    elif m == "modelopt":
        algo = q.get("quant_algo")
        if algo != "FP8":
            raise InputError(
                f"{where}: quantization_config.quant_algo {_show(algo)} of modelopt is not one aim-engine can price (FP8)"
            )
        precision, ignore_keys = "fp8", ("exclude_modules", "ignore")
    elif m == "bitsandbytes":
        precision = "int4" if q.get("load_in_4bit") is True else "int8"
        ignore_keys = ("llm_int8_skip_modules",)
    else:
        raise InputError(
            f"{where}: quantization_config.quant_method {_show(method)} is not one aim-engine can price ({_QUANT_METHODS})"
        )
    return _Quant(precision=precision, ignore=_Ignore(_string_list(q, ignore_keys, where), where), lm_head=lm_head)


_CT_FORMATS = {("float", 8): "fp8", ("int", 8): "int8", ("int", 4): "int4"}


def _compressed_tensors_precision(q: Mapping[str, Any], where: str) -> str:
    groups = q.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        raise InputError(f"{where}: quantization_config.config_groups of compressed-tensors must be a non-empty object")
    found: set[str] = set()
    for name, group in groups.items():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        if not isinstance(weights, Mapping):
            raise InputError(f"{where}: quantization_config.config_groups.{name}.weights must be an object")
        kind, bits = weights.get("type"), weights.get("num_bits")
        precision = _CT_FORMATS.get((str(kind), bits)) if isinstance(bits, int) and not isinstance(bits, bool) else None
        if precision is None:
            raise InputError(
                f"{where}: compressed-tensors weights of type {_show(kind)} with {_show(bits)} bits "
                "are not a format aim-engine can price (fp8, int8, int4)"
            )
        found.add(precision)
    return max(found, key=("int4", "int8", "fp8").index)  # mixed groups: price at the widest


def _quantized_weights(parts: Sequence[_Part], quant: _Quant | None) -> int:
    """Linear-layer weights held at the quantised precision."""
    ignore = quant.ignore if quant else None
    total = 0
    for part in parts:
        for linear in part.linears:
            if not part.quantizable and not (quant and quant.lm_head and linear.name == "lm_head"):
                continue
            if ignore and ignore.matches(linear.name):
                continue
            total += linear.weights * part.copies
    return total


# --------------------------------------------------------------------------------------------
# config.json -> ModelProfile.

_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "bf16", "float": "bf16"}


def _dtype_precision(sections: Sequence[_Section]) -> str:
    for s in sections:
        for key in ("torch_dtype", "dtype"):
            value = s.text(key)
            if value is not None:
                return _DTYPES.get(value.lower(), "bf16")
    return "bf16"


def _architecture(cfg: Mapping[str, Any], where: str) -> str | None:
    archs = cfg.get("architectures")
    if archs is None or archs == []:
        return None
    if not isinstance(archs, list) or not all(isinstance(a, str) and len(a) <= 200 for a in archs):
        raise InputError(f"{where}: architectures must be a list of class names, got {_show(archs)}")
    return str(archs[0])


def model_from_hf_config(model_id: str, cfg: Mapping[str, Any]) -> ModelProfile:
    """Analyse a model from its parsed config.json; anything malformed or unsupported is a one-line
    InputError that names the key to change."""
    where = f"config.json of {model_id}"
    if not isinstance(cfg, Mapping):
        raise InputError(f"{where}: expected a JSON object, got {_json_type(cfg)}")
    try:
        return _from_hf_config(model_id, cfg, where)
    except InputError:
        raise
    except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError) as e:
        raise InputError(f"{where}: malformed value ({e})") from e


def _from_hf_config(model_id: str, cfg: Mapping[str, Any], where: str) -> ModelProfile:
    top = _Section(cfg, {}, where)
    top_type = top.text("model_type") or ""
    architecture = _architecture(cfg, where)
    if (
        cfg.get("is_encoder_decoder") is True
        or top_type in _ENCODER_TYPES
        or (architecture and not architecture.endswith(_GENERATIVE_SUFFIXES))
    ):
        what = " ".join(
            x for x in (f"model_type {top_type!r}" if top_type else "", f"({architecture})" if architecture else "") if x
        )
        raise InputError(
            f"{where}: {what} is not a decoder-only generative model; aim-engine serves ...ForCausalLM and "
            "...ForConditionalGeneration models with vLLM"
        )
    text_raw = top.section("text_config")
    vision_raw = top.section("vision_config")
    if text_raw is not None:
        text_type = _Section(text_raw, {}, where, "text_config.").text("model_type") or _TEXT_TYPE.get(top_type, top_type)
        t = _Section(text_raw, _DEFAULTS.get(text_type, {}), where, "text_config.")
    else:
        text_type = top_type
        t = _Section(cfg, _DEFAULTS.get(text_type, {}), where)
    shape = _text_shape(t, text_type, top)
    text_parts = _text_parts(t, shape)
    vision_parts = _vision_parts(top, top_type, vision_raw, shape.hidden) if vision_raw is not None else []
    parts = text_parts + vision_parts
    quant = _quantization(cfg, where) or (_quantization(text_raw, where) if text_raw is not None else None)
    total = sum(p.total for p in parts)
    active = sum(p.active for p in parts)
    return ModelProfile(
        id=model_id,
        architecture=architecture or "unknown",
        parameters=Decimal(total),
        active_parameters=Decimal(active) if shape.experts else None,
        layers=shape.layers,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        moe_intermediate_size=shape.expert_width,
        attention_heads=shape.heads,
        kv_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        vocab_size=shape.vocab,
        max_context=shape.max_context,
        experts=shape.experts,
        experts_per_token=shape.experts_per_token,
        mla_kv_lora_rank=shape.kv_lora_rank,
        mla_rope_head_dim=shape.rope_head_dim,
        sliding_window_size=shape.sliding_window_size,
        sliding_window_layers=shape.sliding_window_layers,
        native_precision=quant.precision if quant else _dtype_precision([top, t]),
        quantized_parameters=Decimal(_quantized_weights(parts, quant)),
        vision_parameters=Decimal(sum(p.total for p in vision_parts)),
        source="config.json",
    )
