"""Write aim-engine's test model: a tiny random-weight Llama that vLLM's CPU build serves, with a
byte-level BPE tokenizer trained here. No hub, no download: everything is generated from a seed.

The model lands in a Hugging Face cache layout (HF_HOME/hub/models--ORG--NAME/snapshots/REV), so
`vllm serve aim-engine/tiny-llama` finds it offline (HF_HUB_OFFLINE=1) exactly as it finds a
downloaded model in the chart's model cache.

Shape (the smallest vLLM's CPU attention backends take): 2 layers, hidden 128, 4 attention heads
and 2 KV heads of size 32 (CPU kernels need a head size >= 32), intermediate 256, vocabulary 2,048
(the tokenizer, trained on a fixed text, uses fewer), context 2,048. Runs in the vLLM venv (numpy,
safetensors and tokenizers are vLLM dependencies).

  python tools/engine/make_test_model.py --hf-home DIR [--model-id aim-engine/tiny-llama]
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

with contextlib.redirect_stdout(io.StringIO()):
    import this  # the Zen of Python, printed on import

MODEL_ID = "aim-engine/tiny-llama"
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 2048,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "attention_bias": False,
    "mlp_bias": False,
}
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def corpus() -> list[str]:
    """Training text for the tokenizer, fixed so the model is the same on every machine: the Zen
    of Python (in the standard library), numbers, and the words chat requests to it use."""
    zen = codecs.decode(this.s, "rot13")
    numbers = " ".join(str(i) for i in range(1000))
    words = "hello world say the answer is what how many tokens per second recipe model GPU vLLM serve test"
    return [zen] * 20 + [numbers, words] * 10


def train_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def weights(cfg: dict[str, object], seed: int) -> dict[str, np.ndarray]:
    """Random weights with the shapes transformers' and vLLM's Llama expect (bf16 stored as fp32
    would double the size for nothing: saved as float16, which vLLM casts to the served dtype)."""
    rng = np.random.default_rng(seed)
    h, inter, v = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["vocab_size"])  # type: ignore[call-overload]
    heads, kv, hd = int(cfg["num_attention_heads"]), int(cfg["num_key_value_heads"]), int(cfg["head_dim"])  # type: ignore[call-overload]

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    out = {"model.embed_tokens.weight": w(v, h), "model.norm.weight": np.ones(h, np.float16), "lm_head.weight": w(v, h)}
    for i in range(int(cfg["num_hidden_layers"])):  # type: ignore[call-overload]
        p = f"model.layers.{i}"
        out |= {
            f"{p}.self_attn.q_proj.weight": w(heads * hd, h),
            f"{p}.self_attn.k_proj.weight": w(kv * hd, h),
            f"{p}.self_attn.v_proj.weight": w(kv * hd, h),
            f"{p}.self_attn.o_proj.weight": w(h, heads * hd),
            f"{p}.mlp.gate_proj.weight": w(inter, h),
            f"{p}.mlp.up_proj.weight": w(inter, h),
            f"{p}.mlp.down_proj.weight": w(h, inter),
            f"{p}.input_layernorm.weight": np.ones(h, np.float16),
            f"{p}.post_attention_layernorm.weight": np.ones(h, np.float16),
        }
    return out


def write(hf_home: Path, model_id: str, seed: int) -> Path:
    cfg = dict(CONFIG)
    tok = train_tokenizer(int(cfg["vocab_size"]))  # type: ignore[call-overload]
    # The embedding keeps 2,048 rows (aligned) even though the small corpus trains fewer tokens,
    # as real models pad their vocabulary.
    assert tok.get_vocab_size() <= int(cfg["vocab_size"])  # type: ignore[call-overload]
    files: dict[str, bytes] = {
        "config.json": json.dumps(cfg, indent=2, sort_keys=True).encode(),
        "generation_config.json": json.dumps({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}).encode(),
        "tokenizer.json": tok.to_str().encode(),
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "model_max_length": cfg["max_position_embeddings"],
                "chat_template": CHAT_TEMPLATE,
            },
            indent=2,
        ).encode(),
        "special_tokens_map.json": json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
        ).encode(),
    }
    revision = hashlib.sha1(b"".join(files[k] for k in sorted(files)) + str(seed).encode()).hexdigest()
    repo = hf_home / "hub" / ("models--" + model_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    save_file(weights(cfg, seed), str(snapshot / "model.safetensors"), metadata={"format": "pt"})
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-home", type=Path, required=True, help="the Hugging Face cache root (HF_HOME) to write into")
    p.add_argument("--model-id", default=MODEL_ID)
    p.add_argument("--seed", type=int, default=20261128)
    args = p.parse_args(argv)
    snapshot = write(args.hf_home, args.model_id, args.seed)
    size = sum(f.stat().st_size for f in snapshot.iterdir())
    sys.stdout.write(f"{args.model_id}: {snapshot} ({size / 2**20:.1f} MiB)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
