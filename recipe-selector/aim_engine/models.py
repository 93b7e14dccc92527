"""Model analysis: architecture facts for a model, from the bundled table or a Hugging Face
config.json, and the derived quantities selection needs (valid parallel sizes, active parameters)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import InputError
from .hardware import PRECISIONS


@dataclass(frozen=True, slots=True, eq=False)
class ModelProfile:
    """Hashed by identity (profiles are created once per load), so memory plans memoise cheaply."""

    id: str
    architecture: str
    parameters: Decimal
    layers: int
    hidden_size: int
    intermediate_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int
    native_precision: str
    active_parameters: Decimal | None = None
    moe_intermediate_size: int | None = None
    experts: int | None = None
    experts_per_token: int | None = None
    mla_kv_lora_rank: int | None = None
    mla_rope_head_dim: int | None = None
    sliding_window_size: int | None = None
    sliding_window_layers: int = 0
    checkpoint_gib: Decimal | None = None
    source: str = "bundled"

    @property
    def is_moe(self) -> bool:
        return bool(self.experts and self.experts > 1)

    @property
    def is_mla(self) -> bool:
        return self.mla_kv_lora_rank is not None

    @property
    def active(self) -> Decimal:
        return self.active_parameters if self.active_parameters is not None else self.parameters

    def tp_divides(self, tp: int) -> bool:
        """vLLM shards attention heads across tensor-parallel ranks: heads must divide evenly, and
        KV heads either divide evenly or are replicated (tp a multiple of the KV heads)."""
        if tp < 1 or self.attention_heads % tp != 0:
            return False
        if self.is_mla:
            return True
        return self.kv_heads % tp == 0 or tp % self.kv_heads == 0

    def valid_tp_sizes(self, *, up_to: int = 64) -> list[int]:
        return [tp for tp in range(1, up_to + 1) if self.tp_divides(tp)]


def _dec(value: object, where: str) -> Decimal:
    try:
        return Decimal(str(value))
    except Exception as e:
        raise InputError(f"{where}: expected a number, got {value!r}") from e


def _int(raw: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}: {key} must be a non-negative integer, got {value!r}")
    return value


def parse_bundled_model(raw: Mapping[str, Any], *, where: str) -> ModelProfile:
    """One entry of recipes/models/models.yaml."""
    if not isinstance(raw, Mapping) or "id" not in raw:
        raise InputError(f"{where}: a model entry needs an id")
    precision = str(raw.get("native_precision", "bf16"))
    if precision not in PRECISIONS:
        raise InputError(f"{where}: native_precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    mla = raw.get("mla") or {}
    sw = raw.get("sliding_window") or {}
    return ModelProfile(
        id=str(raw["id"]),
        architecture=str(raw.get("architecture", "unknown")),
        parameters=_dec(raw["parameters"], where),
        active_parameters=_dec(raw["active_parameters"], where) if "active_parameters" in raw else None,
        layers=_int(raw, "layers", where),
        hidden_size=_int(raw, "hidden_size", where),
        intermediate_size=_int(raw, "intermediate_size", where),
        moe_intermediate_size=raw.get("moe_intermediate_size"),
        attention_heads=_int(raw, "attention_heads", where),
        kv_heads=_int(raw, "kv_heads", where),
        head_dim=_int(raw, "head_dim", where),
        vocab_size=_int(raw, "vocab_size", where),
        max_context=_int(raw, "max_context", where),
        experts=raw.get("experts"),
        experts_per_token=raw.get("experts_per_token"),
        mla_kv_lora_rank=mla.get("kv_lora_rank"),
        mla_rope_head_dim=mla.get("qk_rope_head_dim"),
        sliding_window_size=sw.get("size"),
        sliding_window_layers=int(sw.get("layers", 0)),
        native_precision=precision,
        checkpoint_gib=_dec(raw["checkpoint_gib"], where) if "checkpoint_gib" in raw else None,
        source="bundled",
    )


_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "bf16", "float": "bf16"}


def _native_precision(cfg: Mapping[str, Any]) -> str:
    quant = cfg.get("quantization_config")
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method", "")).lower()
        if method == "mxfp4":
            return "mxfp4"
        if method in ("fp8", "fbgemm_fp8"):
            return "fp8"
        if method in ("awq", "gptq") and int(quant.get("bits", 4)) == 4:
            return "int4"
        if method == "compressed-tensors":
            return "fp8" if "float" in str(quant).lower() else "int8"
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").lower()
    return _DTYPES.get(dtype, "bf16")


def model_from_hf_config(model_id: str, cfg: Mapping[str, Any]) -> ModelProfile:
    """Analyse a model from its parsed config.json; malformed values become an InputError."""
    try:
        return _from_hf_config(model_id, cfg)
    except (TypeError, ValueError, ZeroDivisionError, AttributeError) as e:
        raise InputError(f"config.json of {model_id}: malformed value ({e})") from e


def _from_hf_config(model_id: str, cfg: Mapping[str, Any]) -> ModelProfile:
    """Analyse a model from its Hugging Face config.json (already parsed). Parameter counts are
    computed from the shapes: embeddings, attention projections, (gated) MLP or experts, LM head."""
    where = f"config.json of {model_id}"
    if not isinstance(cfg, Mapping):
        raise InputError(f"{where}: expected a JSON object")
    text = cfg.get("text_config")
    if isinstance(text, Mapping) and "num_hidden_layers" not in cfg:
        cfg = {**text, "quantization_config": cfg.get("quantization_config"), "torch_dtype": cfg.get("torch_dtype")}
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"):
        if key not in cfg:
            raise InputError(f"{where}: missing {key!r}; is this a decoder-only language model's config.json?")
    layers = _int(cfg, "num_hidden_layers", where)
    hidden = _int(cfg, "hidden_size", where)
    heads = _int(cfg, "num_attention_heads", where)
    if heads == 0 or layers == 0 or hidden == 0:
        raise InputError(f"{where}: num_hidden_layers, hidden_size and num_attention_heads must be positive")
    kv_heads = _int(cfg, "num_key_value_heads", where, heads) or heads
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    vocab = _int(cfg, "vocab_size", where)
    inter = int(cfg.get("intermediate_size") or 4 * hidden)
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts")
    per_tok = cfg.get("num_experts_per_tok")
    moe_inter = cfg.get("moe_intermediate_size") or (inter if experts else None)
    kv_lora = cfg.get("kv_lora_rank")
    rope_dim = cfg.get("qk_rope_head_dim")
    max_ctx = int(cfg.get("max_position_embeddings") or cfg.get("max_sequence_length") or 4096)

    if kv_lora:
        q_dim = heads * (int(cfg.get("qk_nope_head_dim", 128)) + int(rope_dim or 64))
        attn = hidden * q_dim + hidden * (int(kv_lora) + int(rope_dim or 64)) + heads * head_dim * hidden
    else:
        attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    dense_mlp = 3 * hidden * inter
    if experts and moe_inter:
        expert_mlp = 3 * hidden * int(moe_inter)
        dense_layers = int(cfg.get("first_k_dense_replace", 0))
        shared = int(cfg.get("n_shared_experts", 0)) * expert_mlp
        moe_layers = layers - dense_layers
        mlp_total = dense_layers * dense_mlp + moe_layers * (int(experts) * expert_mlp + shared)
        mlp_active = dense_layers * dense_mlp + moe_layers * (int(per_tok or 1) * expert_mlp + shared)
    else:
        mlp_total = mlp_active = layers * dense_mlp
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    total = layers * attn + mlp_total + embed
    active = layers * attn + mlp_active + embed
    sw = cfg.get("sliding_window")
    layer_types = cfg.get("layer_types")
    sw_layers = 0
    if sw and isinstance(layer_types, list):
        sw_layers = sum(1 for t in layer_types if t == "sliding_attention")
    return ModelProfile(
        id=model_id,
        architecture=str((cfg.get("architectures") or ["unknown"])[0]),
        parameters=Decimal(total),
        active_parameters=Decimal(active) if experts else None,
        layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        moe_intermediate_size=int(moe_inter) if moe_inter else None,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_context=max_ctx,
        experts=int(experts) if experts else None,
        experts_per_token=int(per_tok) if per_tok else None,
        mla_kv_lora_rank=int(kv_lora) if kv_lora else None,
        mla_rope_head_dim=int(rope_dim) if kv_lora and rope_dim else (64 if kv_lora else None),
        sliding_window_size=int(sw) if sw and sw_layers else None,
        sliding_window_layers=sw_layers,
        native_precision=_native_precision(cfg),
        source="config.json",
    )


@dataclass(frozen=True, slots=True)
class ModelTable:
    models: Mapping[str, ModelProfile]

    def get(self, model_id: str) -> ModelProfile | None:
        return self.models.get(model_id.lower())


def parse_models(doc: Mapping[str, Any]) -> ModelTable:
    entries = doc.get("models")
    if not isinstance(entries, list):
        raise InputError("models.yaml: 'models' must be a list")
    table: dict[str, ModelProfile] = {}
    for i, raw in enumerate(entries):
        profile = parse_bundled_model(raw, where=f"models.yaml models[{i}]")
        if profile.id.lower() in table:
            raise InputError(f"models.yaml: model {profile.id} listed twice")
        table[profile.id.lower()] = profile
    return ModelTable(models=table)
