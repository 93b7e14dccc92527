"""Benchmark records (aim_engine.domain.benchmark), the `aim-recipes bench record` edge in dry-run
and the measured series the webhook exports from a release's history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aim_engine.adapters.metrics import BenchmarkCollector
from aim_engine.cli.main import main
from aim_engine.domain.benchmark import HISTORY, Conditions, Provenance, from_client, latest_measured, parse_history, with_result

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "tests" / "fixtures" / "benchmarks" / "vllm-bench-serve-cpu-5-failed.json"
COND = Conditions(input_tokens=128, output_tokens=128, concurrency=32, request_rate=None, num_prompts=1200)
PROV = Provenance(
    release="perf",
    namespace="ns",
    recipe_id="tiny-llama-cpu-x86-bf16",
    hardware="CPU-x86",
    node="aim-engine-node",
    image="aim-engine.local/vllm-cpu:0.32.0",
    engine_version="vllm 0.32.0",
    client="vllm bench serve",
    time="2026-11-28T16:09:03Z",
)


def raw() -> dict[str, Any]:
    return dict(json.loads(RESULT.read_text()))


def test_a_run_within_the_error_bound_is_a_measurement_with_the_clients_figures() -> None:
    r = from_client(raw(), conditions=COND, provenance=PROV, max_error_ratio=0.01)
    assert r.outcome == "measured" and r.completed == 1195 and r.failed == 5
    assert r.figures["output_throughput"] == pytest.approx(2172.95, abs=0.01)
    assert r.figures["p99_ttft_ms"] == pytest.approx(5050.65, abs=0.01)
    assert "median_ttft_ms" not in r.figures and "std_itl_ms" not in r.figures  # p50 is the median's name here


def test_errors_above_the_bound_record_a_failure_not_a_number() -> None:
    r = from_client(raw(), conditions=COND, provenance=PROV, max_error_ratio=0.0)
    assert r.outcome == "failed" and not r.figures
    assert r.reason == "5 of 1200 requests failed (0.4%, above the bound 0.0%)"


def test_a_failed_run_says_why_its_requests_failed_when_the_client_kept_the_errors() -> None:
    samples = ["aiohttp.client_exceptions.ServerDisconnectedError: Server disconnected", " ", 7, "x" * 400, "a", "b"]
    r = from_client({**raw(), "error_samples": samples}, conditions=COND, provenance=PROV, max_error_ratio=0.0)
    assert r.outcome == "failed"
    assert r.reason == (
        "5 of 1200 requests failed (0.4%, above the bound 0.0%); the client's errors: "
        "aiohttp.client_exceptions.ServerDisconnectedError: Server disconnected | " + "x" * 300 + " | a"
    )
    plain = from_client({**raw(), "error_samples": "not a list"}, conditions=COND, provenance=PROV, max_error_ratio=0.0)
    assert plain.reason == "5 of 1200 requests failed (0.4%, above the bound 0.0%)"


@pytest.mark.parametrize(
    ("doc", "error", "reason"),
    [
        (None, "", "the benchmark client wrote no result (it could not reach the Service?)"),
        (
            None,
            "the benchmark client exited 1: Cannot connect to host perf-service:8000",
            "the benchmark client exited 1: Cannot",
        ),
        ({"completed": 0, "failed": 10, "num_prompts": 10}, "", "no request completed of 10"),
        ({"completed": 5, "failed": 0, "duration": "x"}, "", "unreadable client result"),
        ({"completed": 5, "failed": 0}, "", "the client's result has no output_throughput"),
    ],
)
def test_a_client_that_measured_nothing_is_a_failure_with_its_reason(doc: Any, error: str, reason: str) -> None:
    r = from_client(doc, conditions=COND, provenance=PROV, max_error_ratio=0.01, client_error=error)
    assert r.outcome == "failed" and r.reason.startswith(reason)


def test_the_history_keeps_the_newest_and_round_trips() -> None:
    ok = from_client(raw(), conditions=COND, provenance=PROV, max_error_ratio=0.01)
    bad = from_client(None, conditions=COND, provenance=PROV, max_error_ratio=0.01)
    text = ""
    for r in [ok] * (HISTORY + 3) + [bad]:
        text = with_result(parse_history(text), r)
    history = parse_history(text)
    assert len(history) == HISTORY and history[-1] == bad and history[0] == ok
    assert latest_measured(history) == ok
    assert latest_measured(history, recipe_id="another") is None


@pytest.mark.parametrize("text", ["{", '{"a": 1}', '[{"outcome": "measured"}]'])
def test_an_unreadable_history_is_an_input_error(text: str) -> None:
    from aim_engine.domain.errors import InputError

    with pytest.raises(InputError):
        parse_history(text)


def test_the_webhook_exports_the_newest_measurement_per_recipe_and_the_last_outcome() -> None:
    ok = from_client(raw(), conditions=COND, provenance=PROV, max_error_ratio=0.01)
    bad = from_client(None, conditions=COND, provenance=PROV, max_error_ratio=0.01)
    cm = {
        "metadata": {"namespace": "ns", "name": "perf-recipe-benchmarks", "labels": {"app.kubernetes.io/instance": "perf"}},
        "data": {"benchmarks.json": with_result([ok], bad)},
    }
    broken = {"metadata": {"namespace": "ns", "name": "x-recipe-benchmarks"}, "data": {"benchmarks.json": "{"}}
    registry = CollectorRegistry()
    registry.register(BenchmarkCollector(lambda: [cm, broken]))
    text = generate_latest(registry).decode()
    labels = (
        'concurrency="32",hardware="CPU-x86",namespace="ns",recipe_id="tiny-llama-cpu-x86-bf16",release="perf",request_rate="inf"'
    )
    assert f"aim_recipe_measured_output_tokens_per_second{{{labels}}} 2172.9" in text
    assert f'aim_recipe_measured_ttft_seconds{{{labels},stat="p99"}} 5.05' in text
    assert f"aim_recipe_measured_timestamp_seconds{{{labels}}} 1.795882143e+09" in text
    assert 'aim_recipe_benchmark_last_success{namespace="ns",release="perf"} 0.0' in text
    assert 'release="x"' not in text


def test_bench_record_dry_run_prints_the_record_and_exits_by_outcome(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = [
        "bench", "record", "--release", "perf", "--namespace", "ns", "--input-tokens", "128", "--output-tokens", "128",
        "--concurrency", "32", "--num-prompts", "1200", "--recipe-id", "r", "--hardware", "CPU-x86", "--dry-run",
    ]  # fmt: skip
    assert main([*base, "--result", str(RESULT), "--max-error-ratio", "0.01"]) == 0
    record = json.loads(capsys.readouterr().out.split("aim-benchmark-record: ", 1)[1].splitlines()[0])
    assert record["outcome"] == "measured" and record["provenance"]["recipe_id"] == "r"
    assert record["conditions"]["request_rate"] is None
    log = tmp_path / "client.log"
    log.write_text(
        "Starting initial single prompt test run...\nTraceback (most recent call last):\n"
        '  File "/opt/vllm/lib/python3.11/site-packages/aiohttp/connector.py", line 1345, in _wrap_create_connection\n'
        "    raise client_error(req.connection_key, exc) from exc\n"
        "aiohttp.client_exceptions.ClientConnectorError: Cannot connect to host 10.96.85.160:8000 ssl:default\n"
    )
    code = main([*base, "--result", str(tmp_path / "missing.json"), "--client-exit", "1", "--client-log", str(log)])
    out = capsys.readouterr()
    assert code == 1
    assert (
        "benchmark failed: the benchmark client exited 1: aiohttp.client_exceptions.ClientConnectorError: "
        "Cannot connect to host 10.96.85.160:8000 ssl:default"
    ) in out.err
    assert main([*base, "--result", str(RESULT), "--request-rate", "0"]) == 2
    assert "--request-rate '0' must be above 0" in capsys.readouterr().err


def test_bench_show_prints_the_history_as_a_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from aim_engine.cli import bench

    ok = from_client(raw(), conditions=COND, provenance=PROV, max_error_ratio=0.01)
    bad = from_client(None, conditions=COND, provenance=PROV, max_error_ratio=0.01)

    class FakeKube:
        def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
            assert (namespace, name) == ("ns", "perf-recipe-benchmarks")
            return {"data": {"benchmarks.json": with_result([ok], bad)}}

    monkeypatch.setattr(bench, "_kube", lambda args: FakeKube())
    assert main(["bench", "show", "--release", "perf", "--namespace", "ns"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "time",
        "recipe",
        "hardware",
        "in/out",
        "conc",
        "rate",
        "outcome",
        "out",
        "tok/s",
        "TTFT",
        "p50/p99",
        "ms",
        "ITL",
        "p50/p99",
        "ms",
    ]
    assert "measured" in lines[1] and "2173" in lines[1] and "887/5051" in lines[1]
    assert "failed: the benchmark client wrote no result" in lines[2]
    assert main(["bench", "show", "--release", "perf", "--namespace", "ns", "-o", "json"]) == 0
    assert [r["outcome"] for r in json.loads(capsys.readouterr().out)] == ["measured", "failed"]
