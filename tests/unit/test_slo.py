"""SLO-aware selection (aim_engine.rules.slo): targets parsed and checked against a recipe's figures
as ranked (measured, else the catalog's), recipes that miss refused with the numbers, the Pareto
set, what would meet an SLO nothing here meets, and the webhook holding a workload to the same
check through its annotations."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aim_engine.cli.main import main
from aim_engine.domain.benchmark import Conditions, Provenance, from_client
from aim_engine.domain.errors import InputError
from aim_engine.rules.evidence import Measurement, Measurements
from aim_engine.rules.ranking import pareto_front
from aim_engine.rules.slo import SLO_KEYS, Slo, check_slo, parse_slo
from k8s_objects import amd_node, cluster, gfd_node, pod
from support import run_select

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "tests" / "fixtures" / "benchmarks" / "vllm-bench-serve-cpu-5-failed.json"
QWEN = "Qwen/Qwen3-32B"


def recipe(bundle: Any, rid: str) -> Any:
    return next(r for r in bundle.recipes if r.recipe_id == rid)


def codes(candidate: Any) -> list[str]:
    return [f.code for f in candidate.reasons]


def by_id(sel: Any, rid: str) -> Any:
    return next(c for c in sel.candidates if c.recipe.recipe_id == rid)


def test_targets_are_parsed_and_bad_ones_refused_with_the_keys() -> None:
    slo = parse_slo(["ttft_p95_ms=500", "itl_p95_ms=30", "min_output_tokens_per_second=1000"])
    assert slo == Slo(ttft_p95_ms=Decimal(500), itl_p95_ms=Decimal(30), min_output_tokens_per_second=Decimal(1000))
    assert slo.text() == "ttft_p95_ms=500, itl_p95_ms=30, min_output_tokens_per_second=1000"
    assert not parse_slo([])
    for bad, error in (
        ("ttft=5", ", ".join(SLO_KEYS)),
        ("itl_p95_ms", "expected KEY=VALUE"),
        ("itl_p95_ms=0", "positive number"),
        ("itl_p95_ms=fast", "positive number"),
        ("itl_p95_ms=nan", "positive number"),
    ):
        with pytest.raises(InputError, match=error):
            parse_slo([bad])
    with pytest.raises(InputError, match="given twice"):
        parse_slo(["itl_p95_ms=1", "itl_p95_ms=2"])


@pytest.mark.parametrize(
    ("pair", "error"),
    [
        ("ttft_p95_ms=1e400", "ttft_p95_ms=1e400: outside 1 to 600000 ms; give the target in ms"),
        ("ttft_p95_ms=1e-400", "ttft_p95_ms=1e-400: outside 1 to 600000 ms"),
        ("ttft_p95_ms=0.5", "outside 1 to 600000 ms"),
        ("itl_p95_ms=60001", "outside 0.1 to 60000 ms"),
        ("min_output_tokens_per_second=1e9", "outside 0.1 to 100000000 tok/s"),
    ],
)
def test_targets_outside_sane_bounds_are_refused_with_the_range(pair: str, error: str) -> None:
    with pytest.raises(InputError, match=error.replace(".", r"\.")):
        parse_slo([pair])


def test_the_bounds_themselves_are_accepted() -> None:
    from aim_engine.rules.slo import SLO_BOUNDS

    for key, bound in SLO_BOUNDS.items():
        assert parse_slo([f"{key}={bound.low}"]).targets().__next__() == (key, bound.low)
        assert parse_slo([f"{key}={bound.high}"]).targets().__next__() == (key, bound.high)


def test_a_mean_above_a_p95_target_is_a_miss_and_a_mean_below_it_proves_nothing(bundle: Any) -> None:
    fp8 = recipe(bundle, "qwen3-32b-mi300x-1gpu-fp8")  # 3140 tok/s, 17.2 ms mean ITL, estimated
    check = check_slo(fp8, Slo(itl_p95_ms=Decimal(15), min_output_tokens_per_second=Decimal(4000)))
    assert [f.code for f in check.missed] == ["SLO_THROUGHPUT", "SLO_LATENCY"]
    assert check.missed[0].message == (
        "--slo min_output_tokens_per_second is 4000 tok/s; recipe qwen3-32b-mi300x-1gpu-fp8 expects 3140 tok/s (estimated)"
    )
    assert "17.2 ms per token on average (estimated)" in check.missed[1].message
    passing = check_slo(fp8, Slo(itl_p95_ms=Decimal(20), ttft_p95_ms=Decimal(500)))
    assert not passing.missed
    assert [f.code for f in passing.unverified] == ["SLO_UNKNOWN", "SLO_UNKNOWN"]
    assert "states no p95 TTFT" in passing.unverified[1].message and "helm test" in passing.unverified[1].fix


def measured_fp8(bundle: Any, **figures: float) -> Any:
    """The fp8 recipe with a comparable measurement: the client's real result, figures as given."""
    raw = json.loads(RESULT.read_text()) | figures
    conditions = Conditions(input_tokens=1024, output_tokens=1024, concurrency=64, request_rate=None, num_prompts=1200)
    prov = Provenance(
        release="qwen",
        namespace="llm",
        recipe_id="qwen3-32b-mi300x-1gpu-fp8",
        hardware="MI300X",
        node="a",
        image="rocm/vllm",
        engine_version="vllm 0.10.2",
        client="vllm bench serve",
        time="2026-11-28T10:00:00Z",
    )
    result = from_client(raw, conditions=conditions, provenance=prov, max_error_ratio=0.01)
    return Measurements([Measurement(result=result, origin="ConfigMap llm/qwen-recipe-benchmarks")])


def test_a_measured_p95_decides_what_a_mean_cannot(bundle: Any) -> None:
    doc = cluster([amd_node("a", "MI300X")])
    slo = Slo(ttft_p95_ms=Decimal(300), itl_p95_ms=Decimal(20))
    fast = run_select(bundle, doc, model_id=QWEN, slo=slo, measurements=measured_fp8(bundle, p95_ttft_ms=250.0, p95_itl_ms=18.0))
    assert fast.recipe.recipe_id == "qwen3-32b-mi300x-1gpu-fp8"
    assert "SLO_UNKNOWN" not in codes(fast.candidates[0])  # both targets decided by the measurement
    slow = run_select(bundle, doc, model_id=QWEN, slo=slo, measurements=measured_fp8(bundle, p95_ttft_ms=900.0, p95_itl_ms=18.0))
    refused = by_id(slow, "qwen3-32b-mi300x-1gpu-fp8")
    assert refused.verdict == "rejected" and codes(refused) == ["SLO_TTFT", "MEASURED"]
    assert "p95 TTFT of 900 ms (measured)" in refused.reasons[0].message


def test_recipes_that_miss_are_refused_and_the_pareto_set_is_given(bundle: Any) -> None:
    doc = cluster([amd_node("a", "MI300X")])
    plain = run_select(bundle, doc, model_id=QWEN)
    assert plain.recipe.recipe_id == "qwen3-32b-mi300x-1gpu-fp8"
    front = {p.recipe_id for p in plain.pareto}
    # fp8 1 GPU is the cheapest per token, 4 GPUs bf16 the fastest per token: neither beats the other.
    assert front == {"qwen3-32b-mi300x-1gpu-fp8", "qwen3-32b-mi300x-4gpu-bf16"}
    tight = run_select(bundle, doc, model_id=QWEN, slo=Slo(itl_p95_ms=Decimal(15)))
    assert tight.recipe.recipe_id == "qwen3-32b-mi300x-4gpu-bf16"  # the only one whose mean is under 15 ms
    assert codes(by_id(tight, "qwen3-32b-mi300x-1gpu-fp8")) == ["SLO_LATENCY"]
    assert [p.recipe_id for p in tight.pareto] == ["qwen3-32b-mi300x-4gpu-bf16"]


def test_pareto_front_keeps_points_no_other_beats_on_both(bundle: Any) -> None:
    recipes = [r for r in bundle.recipes if r.model_key == QWEN.lower()]
    front = pareto_front(recipes, bundle.hardware)
    for p in front:
        assert not any(
            r.tokens_per_second_per_gpu >= p.tokens_per_second_per_gpu
            and r.performance.latency_ms <= p.latency_ms
            and (r.tokens_per_second_per_gpu, r.performance.latency_ms) != (p.tokens_per_second_per_gpu, p.latency_ms)
            for r in recipes
        )
    assert [p.tokens_per_second_per_gpu for p in front] == sorted((p.tokens_per_second_per_gpu for p in front), reverse=True)


def test_when_nothing_meets_the_slo_the_answer_says_what_would(bundle: Any) -> None:
    # The MI300X node has 2 GPUs free: the 4-GPU recipe, the only one fast enough, cannot be placed.
    doc = cluster([amd_node("a", "MI300X")], [pod("busy", "a", gpus=6, resource="amd.com/gpu")])
    sel = run_select(bundle, doc, model_id=QWEN, slo=Slo(itl_p95_ms=Decimal(15)))
    assert sel.result == "not_found" and sel.level is None
    assert "recipe(s) miss the SLO (--slo itl_p95_ms 15)" in sel.message
    blocker = "would meet it: qwen3-32b-mi300x-4gpu-bf16 (4 x MI300X), but needs 4 free amd.com/gpu on one MI300X node"
    assert blocker in sel.message
    # The fastest recipe that runs here (fp8 on 1 GPU, 17.2 ms), not one for a product it lacks.
    assert (
        "closest, target by target (placeable now): --slo itl_p95_ms 15: nearest is qwen3-32b-mi300x-1gpu-fp8 "
        "(1 x MI300X), mean ITL 17.2 ms (estimated; misses it)"
    ) in sel.message
    assert "; closest: " not in sel.message  # the per-target line replaces the fewest-findings guess
    # No fallback to an untested configuration: it claims no performance.
    assert "a synthesised recipe states no performance, so it cannot be held to the SLO" in sel.message


def test_another_product_is_named_when_only_it_meets_the_slo(bundle: Any) -> None:
    sel = run_select(bundle, cluster([gfd_node("h", "H100")]), model_id=QWEN, slo=Slo(itl_p95_ms=Decimal(15)))
    assert sel.result == "not_found"
    assert "would meet it: qwen3-32b-mi300x-4gpu-bf16 (4 x MI300X), but no schedulable, ready node has MI300X GPUs" in sel.message


def test_the_cli_takes_slo_targets_and_prints_the_pareto_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(json.dumps(cluster([amd_node("a", "MI300X")])))
    rc = main(["select", "--model", QWEN, "--cluster", str(snapshot), "--slo", "itl_p95_ms=15", "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["recipe"]["recipe_id"] == "qwen3-32b-mi300x-4gpu-bf16"
    assert out["slo"] == {"itl_p95_ms": 15.0}
    assert out["pareto"] == [
        {
            "recipe_id": "qwen3-32b-mi300x-4gpu-bf16",
            "tokens_per_second_per_gpu": 1337.5,
            "latency_ms": 10.4,
            "source": "estimated",
            "chosen": True,
        }
    ]
    rc = main(["select", "--model", QWEN, "--cluster", str(snapshot), "--slo", "itl_p95_ms=5", "--explain"])
    text = capsys.readouterr().out
    assert rc == 1 and "Pareto set" in text and "SLO_LATENCY" in text
    assert main(["select", "--model", QWEN, "--cluster", str(snapshot), "--slo", "latency=5"]) == 2


def test_the_hook_names_targets_as_the_chart_values_do(bundle: Any) -> None:
    from aim_engine.rules.slo import VALUES_NAMES

    sel = run_select(
        bundle, cluster([amd_node("a", "MI300X")]), model_id=QWEN, slo=Slo(itl_p95_ms=Decimal(5)), slo_names=VALUES_NAMES
    )
    assert "aim_engine.slo.itl_p95_ms 5: nearest is qwen3-32b-mi300x-4gpu-bf16" in sel.message


def test_the_closest_candidate_is_the_placeable_one_nearest_each_target(bundle: Any) -> None:
    # Two targets no recipe meets at once: each names the recipe nearest it, with its number.
    doc = cluster([amd_node("a", "MI300X")])
    here = [r for r in bundle.recipes if r.model_key == QWEN.lower() and r.hardware == "MI300X" and r.performance]
    fastest = max(here, key=lambda r: r.performance.tokens_per_second)
    quickest = min(here, key=lambda r: r.performance.latency_ms)
    slo = Slo(min_output_tokens_per_second=fastest.performance.tokens_per_second * 10, itl_p95_ms=Decimal("0.5"))
    sel = run_select(bundle, doc, model_id=QWEN, slo=slo)
    assert sel.result == "not_found"
    tps = fastest.performance.tokens_per_second
    assert f"--slo min_output_tokens_per_second {tps * 10}: nearest is {fastest.recipe_id}" in sel.message
    assert f"expects {tps} tok/s" in sel.message.replace(".0 tok/s", " tok/s")
    assert f"--slo itl_p95_ms 0.5: nearest is {quickest.recipe_id}" in sel.message
    assert f"mean ITL {quickest.performance.latency_ms} ms" in sel.message


def test_a_measured_slo_reaches_the_recipe_written(bundle: Any) -> None:
    sel = run_select(
        bundle,
        cluster([amd_node("a", "MI300X")]),
        model_id=QWEN,
        measurements=measured_fp8(bundle, p95_ttft_ms=250.0, p95_itl_ms=18.0),
    )
    perf = sel.recipe.to_seed()["performance"]
    assert perf["expected_ttft_p95_ms"] == 250 and perf["expected_itl_p95_ms"] == 18
    assert perf["provenance"]["expected_ttft_p95_ms"]["kind"] == "measured"
    bundle.validator.validate(sel.recipe.to_seed())
    assert dataclasses.replace(sel.request).slo == Slo()


def test_the_charts_schema_bounds_are_the_selectors() -> None:
    import json

    from aim_engine.rules.slo import SLO_BOUNDS

    schema = json.loads((ROOT / "chart" / "values.schema.json").read_text())
    slo = schema["properties"]["aim_engine"]["properties"]["slo"]["properties"]
    for key, bound in SLO_BOUNDS.items():
        assert (Decimal(str(slo[key]["minimum"])), Decimal(str(slo[key]["maximum"]))) == (bound.low, bound.high), key


def test_the_pareto_sweep_is_the_definition_on_random_points(bundle: Any) -> None:
    """pareto_front sorts and sweeps (n log n); it keeps exactly the points no other beats."""
    import random

    from aim_engine.domain.recipe import Performance, with_changes

    base = recipe(bundle, "qwen3-32b-mi300x-1gpu-fp8")
    rng = random.Random(7)
    for _ in range(50):
        pts = [
            with_changes(
                base,
                recipe_id=f"r{i}",
                performance=Performance(
                    tokens_per_second=Decimal(rng.choice([100, 200, 300, 400])),
                    latency_ms=Decimal(rng.choice([5, 10, 15, 20])),
                    conditions={},
                    provenance={},
                ),
            )
            for i in range(rng.randrange(1, 30))
        ]

        def beats(q: Any, p: Any) -> bool:
            qt, pt = q.performance.tokens_per_second, p.performance.tokens_per_second
            ql, pl = q.performance.latency_ms, p.performance.latency_ms
            return qt >= pt and ql <= pl and (qt > pt or ql < pl)

        expected = {p.recipe_id for p in pts if not any(beats(q, p) for q in pts)}
        assert {p.recipe_id for p in pareto_front(pts, bundle.hardware)} == expected
