#!/usr/bin/env python3
"""Webhook benchmark: prints figures, asserts nothing.

Starts `aim-webhook serve` (gunicorn, gthread, TLS) on loopback and drives it with wrk over TLS
with keep-alive, as the API server connects. For a realistic recipe-managed Deployment review
(validate and mutate) and, in the same run, the same server's no-op endpoint as the floor:
throughput and p50/p99 latency at 100 and 500 reviews/s and at the maximum rate, and the webhook's
resident memory (all gunicorn processes).

    make bench-webhook      (installs wrk from Debian if missing)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "webhook"))
sys.path.insert(0, str(ROOT / "tests"))

from server import start  # noqa: E402

REVIEW = ROOT / "tests" / "fixtures" / "admission" / "deployment-good.json"
LUA = ROOT / "tools" / "wrk" / "review.lua"


def rss_mib(pid: int) -> float:
    pids = [pid] + [
        int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    ]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def wrk(port: int, path: str, *, rate: int, connections: int, seconds: int) -> dict[str, float]:
    env = {**os.environ, "REVIEW_FILE": str(REVIEW), "RATE": str(rate), "CONNECTIONS": str(connections)}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), f"https://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    m = re.search(r"RESULT (.*)", out)
    if not m:
        raise RuntimeError(out)
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: make bench-webhook installs it (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="aim-bench-"))
    server = start(tmp, workers=args.workers, threads=args.threads)
    try:
        print(
            f"aim-webhook: {args.workers} gunicorn gthread workers x {args.threads} threads, TLS, keep-alive; "
            f"wrk 1 thread; review: {REVIEW.name}; {os.cpu_count()} CPUs"
        )
        print(
            f"{'endpoint':<10} {'target':>8} {'conns':>5} {'reviews/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8} {'errors':>6}"
        )
        for path in ("/noop", "/validate", "/mutate"):
            for rate, conns in ((100, 8), (500, 16), (0, 64)):
                wrk(server.port, path, rate=rate, connections=conns, seconds=2)  # warm up
                r = wrk(server.port, path, rate=rate, connections=conns, seconds=args.seconds)
                print(
                    f"{path[1:]:<10} {rate or 'max':>8} {conns:>5} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} "
                    f"{r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} {r['errors']:>6.0f}"
                )
        print(f"webhook RSS (master + workers): {rss_mib(server.proc.pid):.0f} MiB")
    finally:
        server.stop(signal.SIGTERM)


if __name__ == "__main__":
    main()
