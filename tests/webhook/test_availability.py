"""The webhook stays available: slow clients cost no thread and are dropped on deadlines, the
workers share the connections, SIGTERM drains before stopping, and the server leaves nothing behind.

Real gunicorn over TLS on loopback (tests/webhook/server.py). The deadlines asserted are functional
bounds, generous for a 2-core machine, not performance figures (tools/bench_slow_clients.py and
tools/bench_webhook.py print those)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import review
from server import ROOT, Server, start

BODY = json.dumps(review("deployment-good.json")).encode()
FAST = ("--handshake-timeout", "1", "--header-timeout", "2", "--body-timeout", "2")


def metrics(server: Server) -> str:
    conn = server.connection()
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def per_worker(text: str, name: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(rf'^{name}\{{worker="(\d+)"\}} (\S+)$', text, re.M)}


def tls_socket(server: Server, timeout: float = 10.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return server.context().wrap_socket(raw, server_hostname="localhost")


def read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with Content-Length (what the webhook sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if status == 100:
        return read_response_rest(sock, rest)
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def read_response_rest(sock: ssl.SSLSocket, pending: bytes) -> tuple[int, dict[str, str], bytes]:
    class Prefixed:
        def __init__(self) -> None:
            self.pending = pending

        def recv(self, n: int) -> bytes:
            if self.pending:
                out, self.pending = self.pending, b""
                return out
            return sock.recv(n)

    return read_response(Prefixed())  # type: ignore[arg-type]


def post_bytes(path: str = "/validate", body: bytes = BODY, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def closed_by_server(sock: ssl.SSLSocket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


# ---- slow clients ---------------------------------------------------------------------------------


async def _slow_clients(server: Server, n: int, opened: asyncio.Event, stop: asyncio.Event) -> list[float]:
    """n connections that complete TLS, then send a request head one byte every 0.5 s; the
    seconds each stayed open before the server dropped it."""
    ctx = server.context()
    dropped: list[float] = []
    ready = 0

    async def one() -> None:
        nonlocal ready
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx, server_hostname="localhost")
        since = time.monotonic()
        ready += 1
        if ready == n:
            opened.set()
        head = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
        closed = asyncio.ensure_future(reader.read())
        try:
            for i in range(len(head)):
                if closed.done() or stop.is_set():
                    break
                with contextlib.suppress(OSError, ssl.SSLError):
                    writer.write(head[i : i + 1])
                    await writer.drain()
                await asyncio.wait([closed], timeout=0.5)
            if closed.done():
                dropped.append(time.monotonic() - since)
        finally:
            closed.cancel()
            writer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    return dropped


async def _timed(server: Server, request: bytes) -> float:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=server.context(), server_hostname="localhost")
    writer.write(request)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    assert line.startswith(b"HTTP/1.1 200"), line
    return time.monotonic() - started


def test_200_slow_clients_neither_stop_admission_nor_stay(tmp_path: Path) -> None:
    server = start(tmp_path, extra=FAST)
    try:

        async def scenario() -> tuple[list[float], list[float], list[float]]:
            opened, stop = asyncio.Event(), asyncio.Event()
            slow = asyncio.ensure_future(_slow_clients(server, 200, opened, stop))
            await asyncio.wait_for(opened.wait(), timeout=60)
            await asyncio.sleep(0.3)  # every slow connection is into its request head
            reviews = [await asyncio.wait_for(_timed(server, post_bytes(extra="Connection: close\r\n")), 5) for _ in range(3)]
            health = [
                await asyncio.wait_for(_timed(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 5)
                for _ in range(3)
            ]
            dropped = await asyncio.wait_for(slow, timeout=30)
            stop.set()
            return reviews, health, dropped

        reviews, health, dropped = asyncio.run(scenario())
        assert max(reviews) < 1.0, reviews
        assert max(health) < 1.0, health
        assert len(dropped) == 200 and max(dropped) < 2 + 1.5, sorted(dropped)[-5:]
        text = metrics(server)
        assert metric(text, "aim_webhook_connections_dropped_total", reason="header_timeout") == 200
        assert "request head not complete within 2 s" in server.logs()
    finally:
        server.stop(signal.SIGKILL)


def test_a_silent_connection_is_dropped_at_the_handshake_deadline(tmp_path: Path) -> None:
    server = start(tmp_path, extra=FAST)
    try:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        started = time.monotonic()
        raw.settimeout(10)
        assert raw.recv(1) == b""
        assert time.monotonic() - started < 1 + 1.5
        assert metric(metrics(server), "aim_webhook_connections_dropped_total", reason="handshake_timeout") == 1
        raw.close()
    finally:
        server.stop(signal.SIGKILL)


def test_a_stalled_body_is_dropped_at_the_body_deadline(tmp_path: Path) -> None:
    server = start(tmp_path, extra=FAST)
    try:
        s = tls_socket(server)
        s.sendall(post_bytes()[:-100])  # head complete, the body 100 bytes short
        started = time.monotonic()
        assert closed_by_server(s, within=10)
        assert time.monotonic() - started < 2 + 1.5
        assert metric(metrics(server), "aim_webhook_connections_dropped_total", reason="body_timeout") == 1
        # An idle kept-alive connection is not a slow client: it stays.
        s = tls_socket(server)
        s.sendall(post_bytes())
        assert read_response(s)[0] == 200
        assert not closed_by_server(s, within=3)
        s.close()
    finally:
        server.stop(signal.SIGKILL)


def test_a_connection_dialled_ahead_is_idle_not_slow(tmp_path: Path) -> None:
    """TLS done and nothing sent (Go's transport pools connections it dialled ahead): kept like a
    kept-alive connection, not dropped at the header deadline; its request, later, is answered."""
    server = start(tmp_path, extra=FAST)
    try:
        s = tls_socket(server)
        assert not closed_by_server(s, within=2 + 1.5)
        s.settimeout(10)
        s.sendall(post_bytes())
        assert read_response(s)[0] == 200
        assert "aim_webhook_connections_dropped_total" not in metrics(server)
        s.close()
    finally:
        server.stop(signal.SIGKILL)


def test_connections_that_never_ask_are_evicted_when_the_worker_is_full(tmp_path: Path) -> None:
    """Connections opened only to hold slots (TLS done, nothing sent) cannot fill the workers:
    near --worker-connections the longest-waiting of them is closed for each new one."""
    server = start(tmp_path, extra=("--worker-connections", "20"))
    try:
        holders = [tls_socket(server) for _ in range(60)]
        started = time.monotonic()
        s = tls_socket(server, timeout=5)
        s.sendall(post_bytes())
        assert read_response(s)[0] == 200
        assert time.monotonic() - started < 2
        text = metrics(server)
        assert metric(text, "aim_webhook_connections_dropped_total", reason="idle_evicted") >= 20
        assert max(per_worker(text, "aim_webhook_worker_connections").values()) <= 20
        for h in holders:
            h.close()
    finally:
        server.stop(signal.SIGKILL)


def test_http_details_the_event_loop_must_keep(tmp_path: Path) -> None:
    """Pipelined requests, a body in many small pieces, Expect: 100-continue, a chunked body (411),
    an oversized head (431) and an oversized body (413, unread)."""
    server = start(tmp_path)
    try:
        s = tls_socket(server)
        s.sendall(post_bytes() + post_bytes("/mutate") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [read_response(s)[0] for _ in range(3)] == [200, 200, 200]
        req = post_bytes()
        for i in range(0, len(req), 700):
            s.sendall(req[i : i + 700])
            time.sleep(0.01)
        status, _, body = read_response(s)
        assert status == 200 and json.loads(body)["response"]["allowed"] is True
        s.close()

        s = tls_socket(server)
        head, _, body = post_bytes(extra="Expect: 100-continue\r\n").partition(b"\r\n\r\n")
        s.sendall(head + b"\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        status, _, data = read_response(s)
        assert status == 200 and b"HTTP/1.1 100" not in data
        s.close()

        s = tls_socket(server)
        s.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert read_response(s)[0] == 411
        s.close()

        s = tls_socket(server)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n")
        assert read_response(s)[0] == 431
        s.close()

        s = tls_socket(server)
        s.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8388608\r\n\r\n"
            + b"{" * 1000
        )
        status, headers, _ = read_response(s)
        assert status == 413 and headers.get("connection") == "close"
        s.close()
        text = metrics(server)
        assert metric(text, "aim_webhook_http_errors_total", status="411") == 1
        assert metric(text, "aim_webhook_http_errors_total", status="431") == 1
        assert metric(text, "aim_webhook_connections_dropped_total", reason="headers_too_large") == 1
    finally:
        server.stop(signal.SIGKILL)


# ---- the workers share the load ------------------------------------------------------------------


@pytest.mark.parametrize("connections", [2, 16])
def test_keep_alive_connections_are_spread_over_the_workers(tmp_path: Path, connections: int) -> None:
    server = start(tmp_path)
    try:
        socks = []
        for _ in range(connections):
            s = tls_socket(server)
            s.sendall(post_bytes())
            assert read_response(s)[0] == 200
            socks.append(s)
        for _ in range(5):
            for s in socks:
                s.sendall(post_bytes())
                assert read_response(s)[0] == 200
        text = metrics(server)  # its own connection is counted too (and closed after)
        conns = per_worker(text, "aim_webhook_worker_connections")
        reqs = per_worker(text, "aim_webhook_worker_requests_total")
        assert len(conns) == 2, text
        assert sorted(conns.values()) == [connections // 2, connections // 2 + 1], conns
        assert min(reqs.values()) >= 6 * (connections // 2), reqs
        for s in socks:
            s.close()
    finally:
        server.stop(signal.SIGKILL)


def test_a_stuck_worker_is_left_out_and_gets_its_share_back(tmp_path: Path) -> None:
    """While one worker is stopped (no heartbeat), every connection goes to the other; once it
    runs again, the loaded worker closes connections after their response until both are even."""
    server = start(tmp_path)
    children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True, check=False).stdout
    workers = [int(p) for p in children.split()]
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGSTOP)
    try:
        time.sleep(3)  # longer than STALE_AFTER
        socks = [tls_socket(server) for _ in range(8)]
        for s in socks:
            s.sendall(post_bytes())
            assert read_response(s)[0] == 200
    finally:
        os.kill(workers[1], signal.SIGCONT)
    try:
        time.sleep(1.5)
        for _ in range(3):
            for i, s in enumerate(socks):
                s.sendall(post_bytes())
                status, headers, _ = read_response(s)
                assert status == 200
                if headers.get("connection") == "close":  # rebalancing: reconnect, as clients do
                    s.close()
                    socks[i] = tls_socket(server)
        conns = per_worker(metrics(server), "aim_webhook_worker_connections")
        assert sorted(conns.values()) == [4, 5], conns
    finally:
        server.stop(signal.SIGKILL)


# ---- SIGTERM drains first -------------------------------------------------------------------------


def test_sigterm_drains_then_stops(tmp_path: Path) -> None:
    server = start(tmp_path, extra=("--shutdown-delay", "3"))
    kept = tls_socket(server)
    kept.sendall(post_bytes())
    assert read_response(kept)[1].get("connection") != "close"
    idle = tls_socket(server)
    idle.sendall(post_bytes())
    assert read_response(idle)[0] == 200
    late = tls_socket(server)
    late.sendall(post_bytes())
    assert read_response(late)[0] == 200
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.3)
    # Draining: not ready, still serving, every response closes its connection.
    conn = server.connection(timeout=5)
    conn.request("GET", "/readyz")
    r = conn.getresponse()
    assert r.status == 503
    r.read()
    kept.sendall(post_bytes())
    status, headers, _ = read_response(kept)
    assert status == 200 and headers.get("connection") == "close"
    s = tls_socket(server)
    s.sendall(post_bytes())
    assert read_response(s)[0] == 200
    # Idle kept-alive connections stay open through the drain (closing one could cross a request
    # the client is writing); a request on one is answered, and closes it.
    assert not closed_by_server(idle, within=1.5)
    idle.sendall(post_bytes())
    status, headers, _ = read_response(idle)
    assert status == 200 and headers.get("connection") == "close"
    assert server.proc.poll() is None
    # After the drain, gunicorn's stop closes what is still idle (within its 2 s linger).
    assert closed_by_server(late, within=10)
    assert time.monotonic() - signalled >= 3
    assert server.proc.wait(timeout=30) == 0
    assert "SIGTERM: draining for 3 s" in server.logs()


# ---- leaves nothing behind; credentials ------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_metrics_directory_is_removed_on_exit(tmp_path: Path, sig: int) -> None:
    server = start(tmp_path)
    assert list(tmp_path.glob("aim-webhook-metrics-*")), "serve should have created its metrics directory"
    assert server.stop(sig) == 0
    assert not list(tmp_path.glob("aim-webhook-metrics-*"))


def test_serve_without_cluster_credentials_is_one_line_naming_no_kube(tmp_path: Path) -> None:
    server_tmp = tmp_path / "srv"
    server_tmp.mkdir()
    from aim_webhook.tls import new_ca, new_serving_cert, write_atomically

    pem = new_serving_cert(new_ca(), dns_names=["localhost"])
    write_atomically(tmp_path / "tls.crt", pem.cert)
    write_atomically(tmp_path / "tls.key", pem.key)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(HOME=str(tmp_path), AIM_RECIPES_DIR=str(ROOT / "recipes"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aim_webhook.cli",
            "serve",
            "--tls-cert",
            str(tmp_path / "tls.crt"),
            "--tls-key",
            str(tmp_path / "tls.key"),
            "--worker-tmp-dir",
            str(server_tmp),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "--no-kube" in lines[0] and "KUBECONFIG" in lines[0] and "service account" in lines[0]
    assert "--cluster" not in out.stderr and "Traceback" not in out.stderr
    assert not list(server_tmp.glob("aim-webhook-metrics-*"))
