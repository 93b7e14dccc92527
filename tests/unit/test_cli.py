"""aim-recipes end to end through main(): formats, exit codes, no tracebacks for user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from aim_engine.cli.main import main
from support import ROOT

CLUSTER = str(ROOT / "examples" / "cluster-mixed.json")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_is_an_array_of_seed_format_recipes(capsys):
    code, out, _ = run(capsys, "list", "-o", "json")
    assert code == 0
    recipes = json.loads(out)
    assert isinstance(recipes, list) and len(recipes) >= 40
    for r in recipes:
        assert {
            "recipe_id",
            "huggingface_id",
            "hardware",
            "gpu_count",
            "precision",
            "backend",
            "config",
            "performance",
            "resources",
        } <= set(r)
        assert {"expected_tokens_per_second", "expected_latency_ms"} <= set(r["performance"])
        assert {"requests", "limits"} <= set(r["resources"])


def test_list_filters_and_table(capsys):
    code, out, _ = run(capsys, "list", "--model", "qwen/qwen3-32b", "--hardware", "mi300x")
    assert code == 0 and out.startswith("RECIPE")
    assert out.count("\n") == 4 and "qwen3-32b-mi300x-1gpu-fp8" in out


def test_show(capsys):
    code, out, _ = run(capsys, "show", "llama-3.1-70b-instruct-mi300x-8gpu-fp8")
    doc = yaml.safe_load(out)
    assert code == 0 and doc["recipe"]["gpu_count"] == 8
    assert doc["vllm_command"][:3] == ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    assert "--tensor-parallel-size" in doc["vllm_command"] and doc["findings"] == []
    code, _, err = run(capsys, "show", "no-such-recipe")
    assert code == 2 and "no recipe 'no-such-recipe'" in err


def test_validate_bundled_catalog(capsys):
    code, out, _ = run(capsys, "validate")
    assert code == 0 and "0 error(s)" in out


def test_validate_user_files_reports_semantic_errors(capsys, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(
            {
                "recipe_id": "mine",
                "huggingface_id": "Qwen/Qwen3-8B",
                "hardware": "H100",
                "gpu_count": 1,
                "precision": "bf16",
                "backend": "vllm",
                "config": {"args": {"max_model_len": 8192}},
            }
        )
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "recipe_id": "bad",
                "huggingface_id": "meta-llama/Llama-3.1-70B-Instruct",
                "hardware": "A100",
                "gpu_count": 3,
                "precision": "fp8",
                "backend": "vllm",
                "config": {"args": {"tensor_parallel_size": 3, "max_num_seqz": 4}},
            }
        )
    )
    code, out, _ = run(capsys, "validate", str(good))
    assert code == 0, out
    code, out, _ = run(capsys, "validate", str(good), str(bad), "-o", "json")
    report = json.loads(out)
    assert code == 1 and not report["valid"]
    found = {i["code"] for i in report["issues"]}
    assert {"TP_INDIVISIBLE", "PRECISION_UNSUPPORTED", "INVALID_ARG"} <= found
    code, out, _ = run(capsys, "validate", str(tmp_path / "missing.yaml"))
    assert code == 1 and "no such file" in out


def test_detect_snapshot(capsys):
    code, out, _ = run(capsys, "detect", "--cluster", CLUSTER, "-o", "json")
    inv = json.loads(out)
    assert code == 0 and inv["products"]["MI300X"]["free"] == 10
    assert {n["name"]: n["reason"] for n in inv["nodes"]}["mi300x-node-2"] == "cordoned"


def test_select_json_contract(capsys):
    code, out, err = run(capsys, "select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "-o", "json", "--explain")
    doc = json.loads(out)
    assert code == 0
    assert doc["level"] == "primary" and doc["result"] == "selected"
    assert doc["recipe"]["recipe_id"] == "qwen3-32b-mi300x-1gpu-fp8"
    assert all({"recipe_id", "verdict", "reasons"} <= set(c) for c in doc["candidates"])
    assert all(r["code"] for c in doc["candidates"] for r in c["reasons"])
    assert "Selected (primary)" in err  # --explain goes to stderr when stdout is JSON


def test_select_values_pin_the_selection_for_gitops(capsys):
    code, out, _ = run(capsys, "select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "-o", "values")
    values = yaml.safe_load(out)
    assert code == 0
    ae = values["aim_engine"]
    assert ae["auto_select"] is False and ae["recipe_id"] == "qwen3-32b-mi300x-1gpu-fp8"
    assert ae["gpu_count"] == 1 and ae["precision"] == "fp8" and ae["hardware"]["gpu_type"] == "MI300X"
    assert ae["pinned_recipe"]["config"]["args"]["tensor_parallel_size"] == 1


def test_select_explain_says_why_not_and_what_would_fit(capsys):
    code, out, _ = run(capsys, "select", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--cluster", CLUSTER, "--explain")
    assert code == 0
    assert "Selected (primary)" in out and "Other candidates:" in out and "to fit:" in out
    assert "memory per GPU" in out and "vLLM: vllm serve" in out


def test_select_not_found_exits_1(capsys):
    code, out, _ = run(
        capsys,
        "select",
        "--model",
        "Qwen/Qwen3-32B",
        "--cluster",
        CLUSTER,
        "--precision",
        "fp8",
        "--gpu-type",
        "A100",
        "-o",
        "json",
    )
    doc = json.loads(out)
    assert code == 1 and doc["recipe"] is None and doc["level"] is None and doc["result"] == "not_found"


def test_select_pinned_recipe_file(capsys, tmp_path):
    f = tmp_path / "custom-recipe.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "custom-recipe"},
                "data": {
                    "recipe.yaml": yaml.safe_dump(
                        {
                            "recipe_id": "custom-qwen-32b-4gpu-bf16",
                            "huggingface_id": "Qwen/Qwen3-32B",
                            "hardware": "MI300X",
                            "gpu_count": 4,
                            "precision": "bf16",
                            "backend": "vllm",
                            "config": {"args": {"tensor_parallel_size": 4, "max_model_len": 32768}},
                        }
                    )
                },
            }
        )
    )
    code, out, _ = run(capsys, "select", "--recipe-file", str(f), "--cluster", CLUSTER, "-o", "json")
    doc = json.loads(out)
    assert code == 0 and doc["recipe"]["recipe_id"] == "custom-qwen-32b-4gpu-bf16"


def test_select_with_model_config_for_an_unbundled_model(capsys):
    cfg = str(ROOT / "tests" / "fixtures" / "configs" / "qwen3-32b.config.json")
    code, out, _ = run(
        capsys, "select", "--model", "acme/qwen3-32b-finetune", "--model-config", cfg, "--cluster", CLUSTER, "-o", "json"
    )
    doc = json.loads(out)
    assert code == 0 and doc["level"] == "default" and doc["model"]["source"] == "config.json"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["select", "--model", "Qwen/Qwen3-32B", "--cluster", "/nonexistent.json"], "no such file"),
        (["select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "--precision", "fp3"], "precision 'fp3'"),
        (["select", "--cluster", CLUSTER], "--model is required"),
        (["select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "--gpu-count", "0"], "must be at least 1"),
        (["select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "--gpu-count", "two"], "not an integer"),
        (["frobnicate"], "invalid choice"),
        (["--catalog", "/tmp", "list"], "not an aim-engine recipes directory"),
    ],
)
def test_usage_and_system_errors_exit_2_without_traceback(capsys, argv, message):
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as e:  # argparse usage errors exit from parse_args
        code = e.code
        err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


def test_snapshot_that_is_not_json(capsys, tmp_path):
    f = tmp_path / "c.json"
    f.write_text("nodes: [")
    code, _, err = run(capsys, "select", "--model", "Qwen/Qwen3-32B", "--cluster", str(f))
    assert code == 2 and "not valid JSON" in err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "aim_engine.cli.main", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("aim-recipes ")


def test_estimate_reproduces_the_catalog_figure(capsys):
    code, out, _ = run(capsys, "estimate", "qwen3-32b-mi300x-1gpu-fp8")
    doc = json.loads(out)
    recipe = json.loads(run(capsys, "list", "-o", "json")[1])
    stated = next(r for r in recipe if r["recipe_id"] == "qwen3-32b-mi300x-1gpu-fp8")["performance"]
    assert code == 0 and doc["expected_tokens_per_second"] == stated["expected_tokens_per_second"]


PARTITIONS = str(ROOT / "examples" / "cluster-partitions.json")

JSON_COMMANDS = [
    ["list", "-o", "json"],
    ["show", "qwen3-8b-h100-mig-3g40gb-bf16", "-o", "json"],
    ["validate", "-o", "json"],
    ["detect", "--cluster", CLUSTER, "-o", "json"],
    ["detect", "--cluster", PARTITIONS, "-o", "json"],
    ["select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "-o", "json"],
    ["select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "--explain", "-o", "json"],
    ["select", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--cluster", PARTITIONS, "-o", "json"],
    ["select", "--model", "Qwen/Qwen3-8B", "--cluster", PARTITIONS, "--gpu-count", "4", "-o", "json"],
    ["select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "--slo", "ttft_p95_ms=600000", "-o", "json"],
    ["select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "--slo", "min_output_tokens_per_second=1e8", "-o", "json"],
    ["select", "--model", "deepseek-ai/DeepSeek-R1", "--cluster", CLUSTER, "--no-default", "-o", "json"],
]


@pytest.mark.parametrize("argv", JSON_COMMANDS, ids=lambda a: " ".join(a[:1] + a[2:3]))
def test_every_json_output_is_json(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code in (0, 1), err
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON: {' '.join(argv)}"))


def test_an_absurd_slo_exits_2_with_one_line(capsys):
    code, out, err = run(capsys, "select", "--model", "Qwen/Qwen3-32B", "--cluster", CLUSTER, "--slo", "ttft_p95_ms=1e400")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "outside 1 to 600000 ms" in err


def test_the_collector_is_paused_for_the_block_and_restored_after_even_on_error():
    import gc

    from aim_engine.cli.collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()  # a caller that had it off keeps it off
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_environment_defaults_go_through_the_parser_a_bad_one_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path):
    """$AIM_RECIPES_DIR is the --catalog default, checked as the flag is (no traceback later)."""
    monkeypatch.setenv("AIM_RECIPES_DIR", str(tmp_path / "missing"))
    with pytest.raises(SystemExit) as e:
        main(["list"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "$AIM_RECIPES_DIR=" in err and "is no directory" in err, err
    monkeypatch.delenv("AIM_RECIPES_DIR")
    with pytest.raises(SystemExit) as e:
        main(["--catalog", str(tmp_path / "missing"), "list"])
    assert e.value.code == 2 and "argument --catalog" in capsys.readouterr().err


def test_each_subcommand_declares_its_arguments_beside_its_code():
    import inspect

    from aim_engine.cli import main as cli

    for name in ("list", "show", "validate", "detect", "select", "place", "estimate", "metrics"):
        adder = getattr(cli, f"add_{name}")
        assert inspect.signature(adder).parameters.keys() == {"sub"}, name
    assert len(inspect.getsource(cli.build_parser).splitlines()) < 40
