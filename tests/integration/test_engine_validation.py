"""The engine validates the catalog: vLLM's own parser (exact flags) and engine-config builder, in
the pinned CPU build of `make setup` (.tools/vllm-venv), judge every recipe's `vllm serve` command
line, built as the chart starts it and the webhook completes it, on the model's real config.json
(recipes/models/configs). See aim_engine/adapters/engine_check.py and tools/vllm/check_recipes.py.

Integration tier: it needs the built vLLM venv and Helm. A missing venv fails these tests (a skipped
engine check is not a passed one). The catalog run prints its timing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from aim_engine.adapters.catalog import load_bundle, load_recipe_file
from aim_engine.adapters.engine_check import (
    CHART_SERVE_ARGS,
    EngineCheck,
    EngineSettings,
    EngineUnavailable,
    checks_for,
    engine_issues,
    model_config_path,
    run_checker,
    serve_argv,
)
from aim_engine.cli.main import main
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.pod import parse_workload
from aim_webhook.mutate import apply, mutate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
BUNDLE = load_bundle(ROOT / "recipes")
CONFIGS = ROOT / "recipes" / "models" / "configs"
HELM = ROOT / ".tools" / "bin" / "helm"
SETTINGS = EngineSettings.resolve(recipes_root=BUNDLE.root, python=None, env=os.environ)
BASE = next(r for r in BUNDLE.recipes if r.recipe_id == "qwen3-32b-h100-2gpu-bf16")  # Qwen3-32B: 64 heads, 40,960 positions


@pytest.fixture(scope="module")
def vllm_venv() -> EngineSettings:
    assert SETTINGS.python.is_file(), f"{SETTINGS.python} is missing: run `make setup` (the vLLM venv)"
    return SETTINGS


def _broken(name: str, **args: Any) -> Recipe:
    merged = {k: v for k, v in {**BASE.args, **args}.items() if v is not None}
    return dataclasses.replace(BASE, recipe_id=f"broken-{name}", args=merged, raw={})


# ---------------------------------------------------------------- the model configs


def test_every_catalog_model_has_its_sourced_config_json() -> None:
    sources = yaml.safe_load((CONFIGS / "sources.yaml").read_text())["configs"]
    by_model = {s["model"]: s for s in sources}
    for model in sorted({r.huggingface_id for r in BUNDLE.recipes}):
        path = model_config_path(BUNDLE.root, model)
        assert path.is_file(), f"{model}: no {path.relative_to(ROOT)}"
        entry = by_model.get(model)
        assert entry is not None, f"{model}: not in recipes/models/configs/sources.yaml"
        assert {"repo", "path", "commit"} <= set(entry["source"]), entry
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], f"{path} is not the sourced file"
    assert {p.parent.name for p in CONFIGS.glob("*/config.json")} == {m.replace("/", "--") for m in by_model}


def test_the_bundled_model_table_agrees_with_the_real_config_files() -> None:
    for profile in BUNDLE.models.models.values():
        raw = json.loads(model_config_path(BUNDLE.root, profile.id).read_text())
        cfg = raw.get("text_config", raw)
        facts = {
            "layers": cfg["num_hidden_layers"],
            "attention_heads": cfg["num_attention_heads"],
            "kv_heads": cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
            "hidden_size": cfg["hidden_size"],
            "vocab_size": cfg["vocab_size"],
            "max_context": cfg["max_position_embeddings"],
        }
        ours = {k: getattr(profile, k) for k in facts}
        assert ours == facts, f"{profile.id}: recipes/models/models.yaml {ours} != config.json {facts}"


# ---------------------------------------------------------------- the command line


def _helm(*args: str) -> list[dict[str, Any]]:
    assert HELM.is_file(), f"{HELM} is missing: run `make setup`"
    cmd = [str(HELM), "template", "aim-engine", str(ROOT / "chart"), "-n", "aim-engine", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "LeaderWorkerSet":
        return list(obj["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"])
    return list(obj["spec"]["template"]["spec"]["containers"])


def _vllm_container(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in _containers(obj) if c["name"] == "vllm")


def test_serve_argv_is_what_the_chart_and_the_webhook_make_a_pod_run() -> None:
    """For every recipe: render the chart for its model (a Deployment, or a LeaderWorkerSet for a
    multi-node recipe), let the webhook inject the recipe, and read the vLLM container's command
    line: it must be engine_check.serve_argv(recipe), token for token."""
    rendered: dict[tuple[str, bool], dict[str, Any]] = {}
    for recipe in BUNDLE.recipes:
        key = (recipe.huggingface_id, recipe.multi_node)
        if key not in rendered:
            extra = ["--set", f"aim_engine.model_id={recipe.huggingface_id}"]
            if recipe.multi_node:
                extra += ["-f", str(ROOT / "chart/ci/leaderworkerset-values.yaml")]
                extra += ["--api-versions", "leaderworkerset.x-k8s.io/v1/LeaderWorkerSet"]
            kind = "LeaderWorkerSet" if recipe.multi_node else "Deployment"
            rendered[key] = next(
                d for d in _helm(*extra) if d["kind"] == kind and any(c["name"] == "vllm" for c in _containers(d))
            )
        obj = rendered[key]
        workload = parse_workload(obj, kind=obj["kind"], namespace="aim-engine")
        assert workload is not None
        pod = _vllm_container(apply(obj, mutate(workload, recipe, catalog=BUNDLE.hardware).patch))
        if recipe.multi_node:  # sh -c 'ray start …; exec vllm serve "MODEL" "$@"' vllm ARGS…
            script = shlex.split(pod["command"][2].rsplit("exec ", 1)[1])
            assert script[-1] == "$@"
            argv = [*script[1:-1], *pod["args"]]
        else:
            argv = [*pod["command"][1:], *pod["args"]]
        assert tuple(argv) == serve_argv(recipe), recipe.recipe_id
        assert tuple(pod["args"][: len(CHART_SERVE_ARGS)]) == CHART_SERVE_ARGS


# ---------------------------------------------------------------- vLLM's verdicts
# One run of the checker for the three tests below (each run is vLLM's import, about 10 s): the
# catalog, the seed's custom recipe and broken recipes, and the spellings and platforms.

QWEN = model_config_path(BUNDLE.root, "Qwen/Qwen3-32B")
GPU = {"kind": "cuda", "name": "H100", "memory_bytes": 80 * 2**30}
MI300X = {"kind": "rocm", "name": "MI300X", "memory_bytes": 192 * 2**30}
MOE = model_config_path(BUNDLE.root, "Qwen/Qwen3-235B-A22B")
INT8 = ("serve", "Qwen/Qwen3-235B-A22B", "--quantization", "experts_int8", "--tensor-parallel-size", "8")
SPELLED = (
    "serve", "Qwen/Qwen3-32B", "--max_model_len", "8192", "-tp=2", "--no-enable-prefix-caching",
    "--served-model-name", "qwen", "--compilation-config.mode", "0", "--max-num-seqs=64",
)  # fmt: skip
SPELLING_CHECKS = [
    EngineCheck("spelled", SPELLED, QWEN, GPU),
    EngineCheck("unknown", ("serve", "Qwen/Qwen3-32B", "--max-model-lenght", "8192"), QWEN, GPU),
    # a CPU recipe: vLLM's CPU platform, unadapted
    EngineCheck(
        "cpu",
        ("serve", "Qwen/Qwen3-8B", "--max-model-len", "4096"),
        model_config_path(BUNDLE.root, "Qwen/Qwen3-8B"),
        {"kind": "cpu", "name": "cpu", "memory_bytes": 0},
    ),
    # vLLM's ROCm platform takes only the quantisation methods of its list; CUDA takes them all.
    EngineCheck("int8-rocm", INT8, MOE, MI300X),
    EngineCheck("int8-cuda", INT8, MOE, GPU),
]
BROKEN = [
    _broken("tp3", tensor_parallel_size=3),  # 64 attention heads
    _broken("len", max_model_len=131072),  # 40,960 positions
    _broken("kvdtype", kv_cache_dtype="fp9"),
    _broken("abbrev", tensor_parallel_size=None, tensor_parallel=2),  # renders --tensor-parallel 2
]


@dataclasses.dataclass(frozen=True)
class Judged:
    report: Any
    catalog: list[EngineCheck]
    mixed: list[EngineCheck]
    seconds: float


@pytest.fixture(scope="module")
def judged(vllm_venv: EngineSettings) -> Judged:
    catalog, unchecked = checks_for(BUNDLE.recipes, recipes_root=BUNDLE.root, catalog=BUNDLE.hardware)
    assert unchecked == [] and len(catalog) == len(BUNDLE.recipes)
    custom = load_recipe_file(BUNDLE, ROOT / "examples" / "custom-recipe.yaml")
    mixed, unchecked = checks_for([*custom, *BROKEN], recipes_root=BUNDLE.root, catalog=BUNDLE.hardware)
    assert unchecked == []
    started = time.perf_counter()
    report = run_checker([*catalog, *mixed, *SPELLING_CHECKS], vllm_venv)
    return Judged(report, catalog, mixed, time.perf_counter() - started)


def test_vllm_accepts_every_catalog_recipe(judged: Judged) -> None:
    report, checks = judged.report, judged.catalog
    in_vllm = sum(v.seconds for v in report.verdicts)
    print(
        f"\nvLLM {report.vllm_version} ({report.platform}) judged {len(report.verdicts)} command lines ({len(checks)} of the "
        f"catalog) in {judged.seconds:.1f} s (in vLLM: {in_vllm:.1f} s, the rest is the interpreter and vLLM's import)"
    )
    verdicts = report.by_id()
    refused = {
        c.check_id: f"[{verdicts[c.check_id].stage}] {verdicts[c.check_id].error}" for c in checks if not verdicts[c.check_id].ok
    }
    assert refused == {}, json.dumps(refused, indent=2)
    assert not [i for i in engine_issues(report, checks) if i.severity == "error"]
    # vLLM built the config the recipe meant: the parallelism, context and quantisation it states.
    for recipe in BUNDLE.recipes:
        cfg = verdicts[recipe.recipe_id].config
        assert cfg["tensor_parallel_size"] == recipe.tp and cfg["pipeline_parallel_size"] == recipe.pp, recipe.recipe_id
        assert cfg["max_model_len"] == recipe.max_model_len, recipe.recipe_id
        if "quantization" in recipe.args:
            assert cfg["quantization"] == recipe.args["quantization"], recipe.recipe_id
        if recipe.args.get("kv_cache_dtype"):
            assert cfg["kv_cache_dtype"] == recipe.args["kv_cache_dtype"], recipe.recipe_id
        assert verdicts[recipe.recipe_id].inexact_flags == ()


def test_vllm_refuses_broken_recipes_and_accepts_the_seed_custom_recipe(judged: Judged) -> None:
    v = judged.report.by_id()
    assert v["custom-qwen-32b-4gpu-bf16"].ok, v["custom-qwen-32b-4gpu-bf16"].error
    assert v["custom-qwen-32b-4gpu-bf16"].config["tensor_parallel_size"] == 4  # filled in from gpu_count
    expected = {
        "broken-tp3": ("engine-config", "Total number of attention heads (64) must be divisible by tensor parallel size (3)"),
        "broken-len": ("engine-config", "User-specified max_model_len (131072) is greater than the derived max_model_len"),
        "broken-kvdtype": ("parse", "argument --kv-cache-dtype: invalid choice: 'fp9'"),
        "broken-abbrev": (
            "flags",
            "--tensor-parallel is not a vLLM option: vLLM's parser would take it as --tensor-parallel-size",
        ),
    }
    for check_id, (stage, text) in expected.items():
        assert not v[check_id].ok and v[check_id].stage == stage, (check_id, v[check_id])
        assert text in (v[check_id].error or ""), (check_id, v[check_id].error)
    # The abbreviation parses (vLLM alone would serve it): only the exact-flag check refuses it.
    assert v["broken-abbrev"].config["tensor_parallel_size"] == 2
    assert [f.resolves_to for f in v["broken-abbrev"].inexact_flags] == ["--tensor-parallel-size"]
    codes = {(i.recipe_id, i.code) for i in engine_issues(judged.report, judged.mixed) if i.severity == "error"}
    assert codes == {(cid, "ENGINE_REFUSED") for cid in expected}


def test_the_checker_reads_flags_and_platforms_as_vllm_does(judged: Judged) -> None:
    """Exact options only, but vLLM's own spellings are exact: `_` for `-`, `--flag=value`,
    short options, `--no-` booleans, `--json-arg.key value`; values are never taken for flags.
    A CPU recipe runs on vLLM's CPU platform unadapted; ROCm's quantisation list applies to AMD."""
    v = judged.report.by_id()
    assert v["int8-cuda"].ok, v["int8-cuda"].error
    assert (v["int8-rocm"].stage, v["int8-rocm"].error) == (
        "platform",
        "experts_int8 quantization is currently not supported in rocm.",
    )
    assert v["cpu"].ok and v["cpu"].adapted == () and v["cpu"].config["max_model_len"] == 4096, v["cpu"]
    assert v["spelled"].adapted != ()
    assert v["spelled"].ok, v["spelled"].error
    assert v["spelled"].config["max_model_len"] == 8192 and v["spelled"].config["tensor_parallel_size"] == 2
    assert v["spelled"].config["enable_prefix_caching"] is False and v["spelled"].config["max_num_seqs"] == 64
    assert not v["unknown"].ok and v["unknown"].stage == "parse"
    assert [f.flag for f in v["unknown"].inexact_flags] == ["--max-model-lenght"]


# ---------------------------------------------------------------- the CLI edge


def test_validate_engine_maps_refusals_to_lint_errors(vllm_venv: EngineSettings, tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.yaml"
    doc = {**BASE.to_seed(), "recipe_id": "too-long", "config": {"args": {**BASE.args, "max_model_len": 131072}}}
    bad.write_text(yaml.safe_dump(doc))
    code = main(["validate", "--engine", "-o", "json", str(ROOT / "examples" / "custom-recipe.yaml"), str(bad)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["valid"]
    assert report["engine"]["checked"] == 2 and report["engine"]["refused"] == 1
    engine = [i for i in report["issues"] if i["code"].startswith("ENGINE_")]
    assert [(i["recipe_id"], i["code"]) for i in engine] == [("too-long", "ENGINE_REFUSED")]
    assert "max_model_len (131072) is greater than the derived max_model_len" in engine[0]["message"]


def test_validate_engine_without_the_venv_is_an_error_not_a_skip(tmp_path: Path, capsys: Any) -> None:
    code = main(["validate", "--engine", "--vllm-python", str(tmp_path / "no" / "python")])
    err = capsys.readouterr().err
    assert code == 2 and "needs the vLLM venv" in err and "make setup" in err
    with pytest.raises(EngineUnavailable):
        run_checker([], dataclasses.replace(SETTINGS, python=tmp_path / "python"))


def test_the_test_models_config_is_what_make_test_model_writes() -> None:
    """aim-engine/tiny-llama's config.json in the catalog is the one the local cluster serves."""
    src = (ROOT / "tools/engine/make_test_model.py").read_text()
    start = src.index("CONFIG = {")
    namespace: dict[str, object] = {}
    exec(src[start : src.index("\n}\n", start) + 3], namespace)  # the literal only: no tokenizers import
    written = json.dumps(namespace["CONFIG"], indent=2, sort_keys=True).encode()
    assert (CONFIGS / "aim-engine--tiny-llama" / "config.json").read_bytes() == written
