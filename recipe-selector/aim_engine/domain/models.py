"""Models as domain values: the architecture facts selection needs (parameters, layers, heads,
context, experts, precision) and what follows from them (valid parallel sizes, active parameters),
from the bundled table (recipes/models/models.yaml). aim_engine.domain.model_config builds the same
value from a Hugging Face config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aim_engine.domain.errors import InputError
from aim_engine.domain.hardware import PRECISIONS


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
    # Of `parameters`, the weights held at a quantised precision: for a pre-quantised checkpoint
    # the ones stored at `native_precision`, for a 16-bit checkpoint the ones vLLM converts when it
    # quantises online (linear-layer weights). The rest (embeddings, LM head, norms, biases,
    # routers, modules a checkpoint leaves unconverted) stays 16 bit. None: not known (bundled
    # entries without the figure), every weight is priced at the precision.
    quantized_parameters: Decimal | None = None
    vision_parameters: Decimal = Decimal(0)  # vision tower and projector, included in `parameters`
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

    @property
    def sixteen_bit_parameters(self) -> Decimal | None:
        """Parameters that stay at 16 bit when the model is served quantised (None: not known)."""
        return None if self.quantized_parameters is None else self.parameters - self.quantized_parameters

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
        quantized_parameters=_dec(raw["quantized_parameters"], where) if "quantized_parameters" in raw else None,
        source="bundled",
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
