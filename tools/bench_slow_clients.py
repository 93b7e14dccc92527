#!/usr/bin/env python3
"""Slow-client benchmark: prints figures, asserts nothing.

Starts `aim-webhook serve` (gunicorn, TLS) on loopback, opens N connections that complete the TLS
handshake and then send request headers one byte every INTERVAL seconds (a "slowloris"), and
meanwhile measures, on fresh connections, how long a legitimate AdmissionReview (/validate) and
/healthz take to be answered. Then it reports how long the server kept the slow connections open
before dropping them, and what the server counted and logged about them.

Traffic goes to 127.0.0.1 only, bounded in count (--slow) and time (--hold).

    .tools/venv/bin/python tools/bench_slow_clients.py --slow 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "webhook"))
sys.path.insert(0, str(ROOT / "tests"))

from server import Server, start  # noqa: E402

REVIEW = ROOT / "tests" / "fixtures" / "admission" / "deployment-good.json"
SLOW_REQUEST = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 4000


async def slow_client(port: int, ctx: ssl.SSLContext, interval: float, hold: float, out: dict[str, list[float]]) -> None:
    """One slow client for `hold` seconds: reconnects when the server drops it, as an attacker would,
    so the server has this connection open (or being opened) the whole time."""
    started = time.monotonic()
    while time.monotonic() - started < hold:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"),
                timeout=max(0.1, hold - (time.monotonic() - started)),
            )
        except (OSError, TimeoutError):
            out.setdefault("connect_failed", []).append(0.0)
            return
        handshake_done = time.monotonic()
        out.setdefault("connected", []).append(handshake_done - started)

        async def watch(reader: asyncio.StreamReader = reader) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                await reader.read()  # b"" or an error when the server drops us

        closed = asyncio.ensure_future(watch())
        try:
            for i in range(len(SLOW_REQUEST)):
                if closed.done() or time.monotonic() - started > hold:
                    break
                try:
                    writer.write(SLOW_REQUEST[i : i + 1])
                    await writer.drain()
                except (OSError, ssl.SSLError):
                    break
                await asyncio.wait([closed], timeout=interval)
            if closed.done():
                out.setdefault("dropped_after", []).append(time.monotonic() - handshake_done)
            else:
                out.setdefault("still_open", []).append(time.monotonic() - handshake_done)
                return
        finally:
            closed.cancel()
            writer.close()


async def timed_review(port: int, ctx: ssl.SSLContext, path: str, body: bytes | None, timeout: float) -> float | None:
    """Seconds to a complete answer on a fresh connection, or None after `timeout`."""
    started = time.monotonic()

    async def run() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        if body is None:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        else:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        await writer.drain()
        data = await reader.read()
        writer.close()
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(data[:200])

    try:
        await asyncio.wait_for(run(), timeout=timeout)
    except (TimeoutError, OSError, ssl.SSLError, RuntimeError):
        return None
    return time.monotonic() - started


async def scenario(server: Server, args: argparse.Namespace) -> dict[str, object]:
    ctx = server.context()
    body = REVIEW.read_bytes()
    out: dict[str, list[float]] = {}
    baseline = [await timed_review(server.port, ctx, "/validate", body, args.timeout) for _ in range(5)]
    tasks = [asyncio.ensure_future(slow_client(server.port, ctx, args.interval, args.hold, out)) for _ in range(args.slow)]
    # Probe once every slow connection has completed TLS and started sending (or could not, in 5 s).
    deadline = time.monotonic() + 5
    while len(out.get("connected", [])) + len(out.get("connect_failed", [])) < args.slow and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(args.interval * 1.5)
    open_at_probe = len(out.get("connected", [])) - len(out.get("dropped_after", []))
    # Probes one second apart, each waiting at most --timeout, all while the slow clients hold on.
    probes = []
    for _ in range(args.probes):
        probes.append(asyncio.ensure_future(timed_review(server.port, ctx, "/validate", body, args.timeout)))
        probes.append(asyncio.ensure_future(timed_review(server.port, ctx, "/healthz", None, args.timeout)))
        await asyncio.sleep(1.0)
    done = await asyncio.gather(*probes)
    under, health = list(done[0::2]), list(done[1::2])
    await asyncio.gather(*tasks)
    return {"baseline": baseline, "under": under, "health": health, "open_at_probe": open_at_probe, **out}


def fmt(values: list[float | None]) -> str:
    answered = sorted(v for v in values if v is not None)
    missing = len(values) - len(answered)
    if not answered:
        return f"none answered ({missing} timed out)"
    text = f"median {answered[len(answered) // 2] * 1000:.1f} ms, max {answered[-1] * 1000:.1f} ms"
    return text + (f", {missing} of {len(values)} unanswered within the timeout" if missing else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", type=int, default=200, help="slow connections")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between the slow clients' bytes")
    parser.add_argument("--hold", type=float, default=40.0, help="a slow client gives up after this many seconds")
    parser.add_argument("--probes", type=int, default=5, help="legitimate reviews (and /healthz) timed meanwhile")
    parser.add_argument("--timeout", type=float, default=10.0, help="a probe unanswered after this is counted as lost")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `aim-webhook serve` argument")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aim-bench-slow-"))
    server = start(tmp, workers=args.workers, threads=args.threads, extra=tuple(args.serve_arg))
    try:
        result = asyncio.run(scenario(server, args))
        conn = server.connection()
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
    finally:
        server.stop(signal.SIGTERM)
    dropped = sorted(result.get("dropped_after", []))  # type: ignore[arg-type]
    still = result.get("still_open", [])
    print(
        f"aim-webhook: {args.workers} workers x {args.threads} threads, TLS on 127.0.0.1; {args.slow} slow connections "
        f"(TLS done, then 1 header byte every {args.interval:g} s, giving up after {args.hold:g} s)"
    )
    print(f"legitimate /validate, no slow clients:    {fmt(result['baseline'])}")  # type: ignore[arg-type]
    print(f"legitimate /validate, slow clients open:  {fmt(result['under'])}")  # type: ignore[arg-type]
    print(f"/healthz, slow clients open:              {fmt(result['health'])}")  # type: ignore[arg-type]
    print(f"slow connections past TLS when probing:   {result['open_at_probe']} of {args.slow}")
    print(f"slow-client TLS connections made:         {len(result.get('connected', []))} (reconnecting when dropped)")  # type: ignore[arg-type]
    if dropped:
        print(
            f"slow connections dropped by the server:   {len(dropped)}, after {dropped[0]:.1f}–{dropped[-1]:.1f} s "
            f"(median {dropped[len(dropped) // 2]:.1f} s)"
        )
    else:
        print("slow connections dropped by the server:   0")
    print(f"slow connections still open at the end:   {len(still)}")  # type: ignore[arg-type]
    counted = [line for line in metrics.splitlines() if line.startswith("aim_webhook_connections_dropped_total")]
    print("server metric: " + ("; ".join(counted) if counted else "no aim_webhook_connections_dropped_total series"))
    logged = [
        json.loads(line) for line in server.logs().splitlines() if line.startswith("{") and re.search(r"dropped|timed out", line)
    ]
    print(f"server log lines about dropped connections: {len(logged)}" + (f" (e.g. {logged[0]['msg']!r})" if logged else ""))


if __name__ == "__main__":
    main()
