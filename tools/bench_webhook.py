#!/usr/bin/env python3
"""Webhook benchmark: prints figures, asserts nothing.

Starts `aim-webhook serve` (gunicorn, TLS) on loopback and drives it with wrk over TLS with
keep-alive, as the API server connects. For a realistic recipe-managed Deployment review
(validate and mutate) and, in the same run, the same server's no-op endpoint as the floor:

- throughput and p50/p90/p99 latency at 100 and 500 reviews/s and at the maximum rate;
- the cost of a review: CPU time of the server's processes (master + workers, from /proc) per
  review, and validate's and mutate's cost as a multiple of the floor's;
- how the workers share the load: connections each worker holds mid-run and requests each
  answered (from the server's own /metrics: aim_webhook_worker_connections and
  aim_webhook_worker_requests_total; the scrape's own connection is counted too), for 1 to 64
  connections;
- the webhook's resident memory (all gunicorn processes).

wrk and the webhook share this machine: run it when nothing else is busy (`uptime` is printed).

    make bench-webhook      (installs wrk from Debian if missing)
    .tools/venv/bin/python tools/bench_webhook.py --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "webhook"))
sys.path.insert(0, str(ROOT / "tests"))

from server import Server, start  # noqa: E402

REVIEW = ROOT / "tests" / "fixtures" / "admission" / "deployment-good.json"
LUA = ROOT / "tools" / "wrk" / "review.lua"


def _pids(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [pid, *(int(p) for p in out.split())]


def rss_mib(pid: int) -> float:
    total = 0
    for p in _pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server's processes (its workers live for the whole run)."""
    total = 0
    for p in _pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def scrape(server: Server) -> dict[str, dict[str, float]]:
    """Per-worker series from /metrics: {metric: {worker: value}}."""
    conn = server.connection()
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out: dict[str, dict[str, float]] = {}
    for m in re.finditer(r'^(aim_webhook_worker_\w+)\{worker="(\d+)"\} (\S+)$', text, re.M):
        out.setdefault(m[1], {})[m[2]] = float(m[3])
    return out


def distinct_review(tmp: Path) -> Path:
    """The review with an object annotation wrk turns into a counter (tools/wrk/review.lua, DISTINCT):
    every request then carries another object, which the webhook's memo has not seen."""
    doc = json.loads(REVIEW.read_text())
    meta = doc["request"]["object"].setdefault("metadata", {})
    meta.setdefault("annotations", {})["bench.aim-engine.io/seq"] = "__AIM_SEQ__"
    out = tmp / "review-distinct.json"
    out.write_text(json.dumps(doc))
    return out


def wrk(
    port: int, path: str, *, rate: int, connections: int, seconds: float, review: Path = REVIEW, distinct: bool = False
) -> dict[str, float]:
    env = {
        **os.environ,
        "REVIEW_FILE": str(review),
        "RATE": str(rate),
        "CONNECTIONS": str(connections),
        "DISTINCT": "1" if distinct else "0",
    }
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(LUA),
            f"https://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    m = re.search(r"RESULT (.*)", out)
    if not m:
        raise RuntimeError(out)
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def measured(
    server: Server, path: str, *, rate: int, connections: int, seconds: float, review: Path = REVIEW, distinct: bool = False
) -> dict[str, object]:
    """One wrk run with the server's CPU time, and per-worker connections (mid-run) and requests."""
    wrk(server.port, path, rate=rate, connections=connections, seconds=2, review=review, distinct=distinct)  # warm up
    before = scrape(server).get("aim_webhook_worker_requests_total", {})
    mid: dict[str, dict[str, float]] = {}
    sampler = threading.Timer(seconds / 2, lambda: mid.update(scrape(server)))
    cpu0 = cpu_seconds(server.proc.pid)
    sampler.start()
    r = wrk(server.port, path, rate=rate, connections=connections, seconds=seconds, review=review, distinct=distinct)
    cpu1 = cpu_seconds(server.proc.pid)
    sampler.join()
    after = scrape(server).get("aim_webhook_worker_requests_total", {})
    requests = {w: after[w] - before.get(w, 0.0) for w in sorted(after)}
    return {
        **r,
        "cpu_us": (cpu1 - cpu0) / max(r["requests"], 1) * 1e6,
        "conns": mid.get("aim_webhook_worker_connections", {}),
        "per_worker": requests,
    }


def split(values: dict[str, float]) -> str:
    return "/".join(f"{v:.0f}" for _, v in sorted(values.items())) or "-"


def goal(server: Server, *, rounds: int, seconds: float, distinct: Path) -> None:
    """The issue's goal at 500 reviews/s (16 connections): validate and mutate at most 1.15x the
    no-op floor's CPU per review, p99 at most 5 ms. The endpoints are measured in interleaved
    rounds (floor, validate, mutate, validate*, mutate*, again), so that whatever else the machine
    does weighs on each alike; the median of the rounds is the figure."""
    runs: dict[str, list[dict[str, object]]] = {}
    cases = (
        ("noop", "/noop", REVIEW, False),
        ("validate", "/validate", REVIEW, False),
        ("mutate", "/mutate", REVIEW, False),
        ("validate*", "/validate", distinct, True),
        ("mutate*", "/mutate", distinct, True),
    )
    for _ in range(rounds):
        for label, path, review, fresh in cases:
            r = measured(server, path, rate=500, connections=16, seconds=seconds, review=review, distinct=fresh)
            runs.setdefault(label, []).append(r)
    floor = statistics.median(float(r["cpu_us"]) for r in runs["noop"])  # type: ignore[arg-type]
    print(f"\n500 reviews/s, 16 connections, {rounds} interleaved rounds of {seconds:g} s (median; each round in brackets):")
    print(f"{'endpoint':<9} {'CPU us/review':>13} {'x floor':>7} {'p99 ms':>7}  rounds: p99 ms")
    for label, *_ in cases:
        cpu = statistics.median(float(r["cpu_us"]) for r in runs[label])  # type: ignore[arg-type]
        p99s = [float(r["p99_ms"]) for r in runs[label]]  # type: ignore[arg-type]
        print(
            f"{label:<9} {cpu:>13.0f} {cpu / floor:>7.2f} {statistics.median(p99s):>7.2f}  " + " ".join(f"{v:.2f}" for v in p99s)
        )
    worst = max(
        statistics.median(float(r["cpu_us"]) for r in runs[label]) / floor  # type: ignore[arg-type]
        for label in ("validate", "mutate")
    )
    p99 = max(statistics.median(float(r["p99_ms"]) for r in runs[label]) for label in ("noop", "validate", "mutate"))  # type: ignore[arg-type]
    print(
        f"goal (validate and mutate <= 1.15x the floor, p99 <= 5 ms): {worst:.2f}x, p99 {p99:.2f} ms -> "
        + ("met" if worst <= 1.15 and p99 <= 5 else "NOT met")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `aim-webhook serve` argument")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the 500 reviews/s goal check")
    parser.add_argument("--goal-only", action="store_true", help="only the 500 reviews/s goal check")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: make bench-webhook installs it (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="aim-bench-"))
    server = start(tmp, workers=args.workers, threads=args.threads, extra=tuple(args.serve_arg))
    load = os.getloadavg()
    try:
        print(
            f"aim-webhook: {args.workers} workers x {args.threads} threads, TLS, keep-alive; wrk 1 thread; "
            f"review: {REVIEW.name}; {os.cpu_count()} CPUs; load average before: {load[0]:.2f}"
        )
        print(
            f"{'endpoint':<9} {'target':>6} {'conns':>5} {'reviews/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
            f"{'max ms':>7} {'err':>4} {'CPU us/review':>13} {'conns/worker':>12} {'reviews/worker':>15}"
        )
        distinct = distinct_review(tmp)
        if args.goal_only:
            goal(server, rounds=args.rounds, seconds=args.seconds, distinct=distinct)
            return
        cost: dict[tuple[str, int], float] = {}
        # "same": one object reviewed again and again (the Pods of one controller: the memo answers);
        # "distinct": every review another object (the memo never does).
        for path, kind in (
            ("/noop", "same"),
            ("/validate", "same"),
            ("/mutate", "same"),
            ("/validate", "distinct"),
            ("/mutate", "distinct"),
        ):
            for rate, conns in ((100, 8), (500, 16), (0, 64)):
                review = distinct if kind == "distinct" else REVIEW
                r = measured(
                    server, path, rate=rate, connections=conns, seconds=args.seconds, review=review, distinct=kind == "distinct"
                )
                cost[(f"{path}/{kind}", rate)] = float(r["cpu_us"])  # type: ignore[arg-type]
                label = path[1:] if kind == "same" else f"{path[1:]}*"
                print(
                    f"{label:<9} {rate or 'max':>6} {conns:>5} {r['rps']:>9.0f} {r['p50_ms']:>7.2f} {r['p90_ms']:>7.2f} "
                    f"{r['p99_ms']:>7.2f} {r['max_ms']:>7.2f} {r['errors']:>4.0f} {r['cpu_us']:>13.0f} "
                    f"{split(r['conns']):>12} {split(r['per_worker']):>15}"  # type: ignore[arg-type]
                )
        print("(* every review a distinct object: the memo never answers)")
        for rate in (500, 0):
            floor = cost[("/noop/same", rate)]
            where = f"{rate} reviews/s" if rate else "the maximum rate"
            print(
                f"cost at {where}: validate {cost[('/validate/same', rate)] / floor:.2f}x and mutate "
                f"{cost[('/mutate/same', rate)] / floor:.2f}x the no-op floor's CPU per review; distinct objects: validate "
                f"{cost[('/validate/distinct', rate)] / floor:.2f}x, mutate {cost[('/mutate/distinct', rate)] / floor:.2f}x"
            )
        goal(server, rounds=args.rounds, seconds=args.seconds, distinct=distinct)
        print("\nworkers sharing the load (/validate at the maximum rate):")
        print(f"{'conns':>5} {'reviews/s':>9} {'p99 ms':>7} {'conns/worker (mid-run)':>23} {'reviews/worker':>15}")
        for conns in (1, 2, 4, 16, 64):
            r = measured(server, "/validate", rate=0, connections=conns, seconds=min(args.seconds, 5))
            print(
                f"{conns:>5} {r['rps']:>9.0f} {r['p99_ms']:>7.2f} {split(r['conns']):>23} {split(r['per_worker']):>15}"  # type: ignore[arg-type]
            )
        print(
            f"\nwebhook RSS (master + workers): {rss_mib(server.proc.pid):.0f} MiB; load average after: {os.getloadavg()[0]:.2f}"
        )
    finally:
        server.stop(signal.SIGTERM)


if __name__ == "__main__":
    main()
