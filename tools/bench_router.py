#!/usr/bin/env python3
"""Router benchmark on loopback: prints figures, asserts nothing.

Two engine simulators (tools/engine/simulator.py: TTFT 20 ms, ITL 5 ms plus 1 ms per running
sequence, so a replica with more running requests steps slower; a prefix cache over 16-token
blocks) behind, in turn:

- `service`: a per-connection balancer — each new TCP connection to a replica drawn at random, as
  kube-proxy's iptables mode does for a ClusterIP Service (a small asyncio relay in this process);
- `router <policy>`: vLLM's router (vllm-router, as the chart runs it) with that policy.

Each is driven by vLLM's own client (`vllm bench serve`, keep-alive connections) at the same load:
random prompts (128 in, 64 out, 16 in flight) for p50/p99 TTFT and ITL side by side, each replica's
share counted from its own `vllm:request_success_total`; then a shared-prefix workload (vLLM's
`prefix_repetition` dataset: 16 prefixes of 512 tokens, 64-token suffixes, 4 in flight; each
replica's cache holds half the prefixes) under round_robin and cache_aware, judged by each
replica's `vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total`.
Traffic stays on 127.0.0.1.

    make bench-router   (or: .tools/venv/bin/python tools/bench_router.py [--prompts N])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".tools" / "venv" / "bin"
VLLM_VENV = ROOT / ".tools" / "vllm-venv" / "bin"
MODEL = "aim-engine/tiny-llama"
HF_HOME = ROOT / ".tools" / "images" / "test-model"
# Each replica's KV cache (and so its prefix cache): 6,144 tokens hold 8 of the shared-prefix
# workload's 16 prefixes of 512 tokens, not all 16 — what a policy that keeps a prefix on one
# replica can exploit and one that sends every prefix everywhere cannot.
KV_CACHE_TOKENS = 6144


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, *, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.2)
    raise SystemExit(f"bench_router: {url} did not answer in {timeout:.0f} s")


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vllm:") and "{" in line:
            name = line.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


@contextlib.contextmanager
def process(cmd: list[str], log: Path, *, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield p
        finally:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class ConnectionBalancer:
    """A per-connection TCP relay: each accepted connection goes to a backend drawn at random."""

    def __init__(self, backends: list[int]) -> None:
        self.backends, self.port = backends, free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", random.choice(self.backends))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def __enter__(self) -> ConnectionBalancer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop).result()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def bench(port: int, work: Path, name: str, *, prompts: int, dataset: list[str], concurrency: int, seed: int) -> dict[str, float]:
    env = {**os.environ, "HF_HOME": str(HF_HOME), "HF_HUB_OFFLINE": "1"}
    cmd = [
        str(VLLM_VENV / "vllm"), "bench", "serve", "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}",
        "--model", MODEL, *dataset, "--num-prompts", str(prompts), "--max-concurrency", str(concurrency),
        "--ignore-eos", "--percentile-metrics", "ttft,itl", "--metric-percentiles", "50,99", "--seed", str(seed),
        "--save-result", "--result-dir", str(work), "--result-filename", f"{name}.json",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"bench_router: vllm bench serve exited {out.returncode}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return dict(json.loads((work / f"{name}.json").read_text()))


RANDOM = ["--dataset-name", "random", "--random-input-len", "128", "--random-output-len", "64"]
PREFIX = [
    "--dataset-name", "prefix_repetition", "--prefix-repetition-prefix-len", "512",
    "--prefix-repetition-suffix-len", "64", "--prefix-repetition-num-prefixes", "16", "--prefix-repetition-output-len", "32",
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=320, help="requests per run (default 320)")
    args = parser.parse_args()
    for tool in (VLLM_VENV / "vllm", VENV / "vllm-router"):
        if not tool.exists():
            raise SystemExit(f"bench_router: {tool} missing: run make setup")
    work = Path(tempfile.mkdtemp(prefix="bench-router-"))
    sims = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        for port in sims:
            sim = [
                str(VLLM_VENV / "python"), str(ROOT / "tools/engine/simulator.py"), "serve", MODEL, "--host", "127.0.0.1",
                "--port", str(port), "--ttft-ms", "20", "--itl-ms", "5", "--itl-per-seq-ms", "1", "--max-num-seqs", "16",
                "--max-model-len", "2048", "--kv-cache-tokens", str(KV_CACHE_TOKENS),
            ]  # fmt: skip
            stack.enter_context(process(sim, work / f"sim-{port}.log"))
        for port in sims:
            wait_http(f"http://127.0.0.1:{port}/health")

        runs = iter(range(1, 100))

        def run(label: str, port: int, dataset: list[str], *, concurrency: int = 16) -> None:
            """One run; each with its own seed (a repeated prompt would hit the last run's cache)."""
            before = [metrics(p) for p in sims]
            name = label.replace(" ", "-").replace("(", "").replace(")", "")
            result = bench(port, work, name, prompts=args.prompts, dataset=dataset, concurrency=concurrency, seed=next(runs))
            after = [metrics(p) for p in sims]

            def delta(family: str) -> list[float]:
                return [a[family] - b[family] for a, b in zip(after, before, strict=True)]

            served = delta("vllm:request_success_total")
            hits, queries = delta("vllm:prefix_cache_hits_total"), delta("vllm:prefix_cache_queries_total")
            total = sum(served) or 1
            print(
                f"{label:<24} {result['median_ttft_ms']:>9.1f} {result['p99_ttft_ms']:>9.1f} {result['median_itl_ms']:>8.2f} "
                f"{result['p99_itl_ms']:>8.2f} {result['output_throughput']:>9.0f} {result.get('failed', 0):>6} "
                f"{' / '.join(f'{s / total:.0%}' for s in served):>11} "
                f"{' / '.join(f'{h / q:.0%}' if q else '-' for h, q in zip(hits, queries, strict=True)):>11} "
                f"{sum(hits) / (sum(queries) or 1):>6.0%}",
                flush=True,
            )

        print(
            f"{args.prompts} requests a run, 16 in flight (the prefix runs: 4), two simulator replicas on loopback "
            f"(KV cache {KV_CACHE_TOKENS} tokens each); latencies in ms"
        )
        print(
            f"{'client → replicas via':<24} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8} {'out tok/s':>9} "
            f"{'failed':>6} {'share':>11} {'hit rate':>11} {'hits':>6}"
        )
        with ConnectionBalancer(sims) as lb:
            run("service (per connection)", lb.port, RANDOM)
        for policy in ("round_robin", "power_of_two", "cache_aware"):
            port, mport = free_port(), free_port()
            with process(
                [str(VENV / "vllm-router"), "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
                 "--prometheus-port", str(mport), "--worker-urls", *(f"http://127.0.0.1:{p}" for p in sims)],
                work / f"router-{policy}.log",
            ):  # fmt: skip
                wait_http(f"http://127.0.0.1:{port}/health")
                run(f"router {policy}", port, RANDOM)
                if policy in ("round_robin", "cache_aware"):
                    run(f"router {policy} (prefix)", port, PREFIX, concurrency=4)
    print(f"(results and logs: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
