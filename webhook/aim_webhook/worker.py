"""The webhook's gunicorn worker and master: deadlines for slow clients, balanced workers, a drain.

gunicorn's gthread worker gives a thread to a connection as soon as its first byte arrives (the
TLS ClientHello counts) and that thread then waits, with no deadline, for the handshake, the
request head and the body: eight connections that send their headers a byte every few seconds hold
2 workers × 4 threads and admission stops. `DeadlineWorker` keeps gthread's model for the
application (a pool of threads running Flask, kept-alive connections parked in a selector) and
moves everything before the application into the worker's event loop, with a deadline each:

- the TLS handshake (non-blocking) within `handshake_timeout` of the accept;
- the request head within `header_timeout` of the request's first byte, at most `max_header_bytes`
  (431 above). A connection that has sent nothing since its handshake or its last response is
  idle, kept like any kept-alive connection (`keepalive`): clients dial ahead — Go's transport, the
  API server's, pools a connection it dialled for a request that another connection served — and
  closing such a connection races the request the client may be writing on it;
- the body, by Content-Length, within `body_timeout` of the head (a body above `max_body_bytes` is
  not read: the application answers 413 from the header and the connection closes; a chunked body
  is refused with 411 — the API server always sends Content-Length).

Only a complete request is answered, with every byte already in memory, so nothing waits on a
client. It is answered in the event loop itself (a review is pure computation: handing it to a thread
and back cost more than the review, and doubled its tail latency), unless it must wait for the API
server — a Pod's selection ConfigMap is read fresh — or is /metrics (whose collectors read the API
server) or larger than INLINE_MAX_BYTES: those go to the thread pool. A review finds out it must
wait just before the read (offload.py): its placeholder answer is discarded and it starts again on a
thread from its raw bytes. Responses are written in one piece (`_Gather`), and gunicorn's heartbeat
to the master is sent at most twice a second. A connection that misses a deadline is closed, counted in
`aim_webhook_connections_dropped_total{reason}` and logged (at most a few lines a second; the rest
are summed into the next line). An idle connection costs a selector entry, not a thread. Near
`worker_connections`, the connection that has waited longest without ever sending a request is
closed for each new one (connections opened only to hold slots: `idle_evicted`).

Balance: the workers share one listening socket, and a worker accepts only while it holds no more
connections than the least-loaded live worker (counts in shared memory, `Board`). Keep-alive
connections — the API server's are long-lived — are therefore spread evenly at any count; a stuck
or dead worker (no heartbeat for `STALE_AFTER` s) is left out of the comparison, and a worker two
connections above another (after a worker restart) closes connections after their response
(`Connection: close`: the client reconnects, and knows it must) until even. (SO_REUSEPORT
spreads by a hash of the client's address and port: uneven at small counts, and the accept queue of
a killed worker is reset with it.)

Drain: on SIGTERM the master (`DrainingArbiter`) first drains for `shutdown_delay` seconds: it keeps
serving, /readyz answers 503 and every response carries `Connection: close`, so the API server
moves to other replicas while the endpoint removal propagates; then gunicorn's graceful stop
(finish in-flight requests, close kept-alive connections after STOP_LINGER, exit). Idle
connections are not closed during the drain: a server-side close of an idle connection can cross a
request the client is writing on it (seen as "write: broken pipe" in the rollout test); once the
endpoint removal has reached the API server it writes none to this replica, so closing them at the
end of the drain is safe.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import mmap
import os
import selectors
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import TConn, ThreadWorker
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import offload
from .observability import DROPPED, HTTP_ERRORS, OFFLOADED

log = logging.getLogger("aim_webhook.server")

STALE_AFTER = 2.0  # seconds without a heartbeat: the worker is left out of the balance (its loop beats ≥ 1/s)
STOP_LINGER = 2.0  # a stopping worker keeps idle kept-alive connections this long (gunicorn's value)
LINGER_CLOSE = 2.0  # after a refusal, read and discard what the client still sends, this long
NOTIFY_EVERY = 0.5  # seconds between two heartbeats to gunicorn's master
COALESCE_MAX = 256 * 1024  # a response up to this size goes out in one write
INLINE_MAX_BYTES = 256 * 1024  # a larger request is answered on a thread (its parsing alone takes a while)
THREADED_PATHS = (b"/metrics",)  # its collectors read the API server: always on a thread


@dataclass(frozen=True)
class Limits:
    handshake_timeout: float = 5.0
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 7 * 1024 * 1024
    keepalive: float = 120.0
    inline: bool = True  # answer complete requests in the event loop (offload.py); False: every one on a thread


class _Slot(ctypes.Structure):
    _fields_ = (
        ("pid", ctypes.c_int64),
        ("conns", ctypes.c_int64),
        ("requests", ctypes.c_int64),
        ("beat", ctypes.c_double),
    )


class Board:
    """Shared memory between the master and its workers (an anonymous shared mapping, inherited
    by fork): the drain flag and, per worker slot, its pid, open connections, requests answered
    and last heartbeat (time.monotonic, the same clock in every process)."""

    def __init__(self, workers: int, slots: int | None = None) -> None:
        self.workers = workers
        slots = slots or max(2 * workers, 8)
        size = 16 + ctypes.sizeof(_Slot) * slots
        self._mem = mmap.mmap(-1, size)
        self._draining = ctypes.c_int64.from_buffer(self._mem, 0)
        self._started = ctypes.c_int64.from_buffer(self._mem, 8)
        self.slots = (_Slot * slots).from_buffer(self._mem, 16)

    @property
    def draining(self) -> bool:
        return bool(self._draining.value)

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining.value = int(value)

    def free_slot(self, taken: set[int]) -> int | None:
        return next((i for i in range(len(self.slots)) if i not in taken), None)

    def clear(self, index: int) -> None:
        s = self.slots[index]
        s.pid, s.conns, s.requests, s.beat = 0, 0, 0, 0.0

    def live(self, now: float) -> Iterator[tuple[int, _Slot]]:
        for i, s in enumerate(self.slots):
            if s.pid and now - s.beat < STALE_AFTER:
                yield i, s

    def ready(self) -> bool:
        """Not draining, and every worker has been up: at start-up, connections made while a worker
        is still booting would all land on the others. (Later, a worker that restarts gets its
        share back by rebalancing, and the pod stays ready meanwhile.)"""
        if self.draining:
            return False
        if not self._started.value and sum(1 for _ in self.live(time.monotonic())) >= self.workers:
            self._started.value = 1
        return bool(self._started.value)


class BoardCollector(Collector):
    """Per-worker figures for /metrics, labelled by worker slot (stable across restarts)."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[Any]:
        conns = GaugeMetricFamily("aim_webhook_worker_connections", "Open connections held by each worker", labels=["worker"])
        reqs = CounterMetricFamily(
            "aim_webhook_worker_requests", "Requests answered by each worker since it started", labels=["worker"]
        )
        for i, s in self.board.live(time.monotonic()):
            conns.add_metric([str(i)], float(s.conns))
            reqs.add_metric([str(i)], float(s.requests))
        yield conns
        yield reqs
        yield GaugeMetricFamily(
            "aim_webhook_draining", "1 while the server drains before stopping (SIGTERM)", value=float(self.board.draining)
        )


class _RateLimitedLog:
    """At most `burst` lines, refilled at `per_second`; suppressed lines are summed into the next."""

    def __init__(self, per_second: float = 5.0, burst: float = 20.0) -> None:
        self.per_second, self.burst = per_second, burst
        self.tokens, self.stamp, self.suppressed = burst, time.monotonic(), 0

    def warning(self, msg: str, *args: Any, **extra: Any) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens < 1:
            self.suppressed += 1
            return
        self.tokens -= 1
        if self.suppressed:
            msg += f" (and {self.suppressed} more not logged)"
            self.suppressed = 0
        log.warning(msg, *args, extra=extra)


HANDSHAKE, HEAD, BODY, BUSY, IDLE, LINGER, CLOSED = "handshake", "head", "body", "busy", "idle", "linger", "closed"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _canned(status: int, reason: str, message: str) -> bytes:
    body = f'{{"error": "{message}", "code": {status}}}\n'.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


class _Conn(TConn):  # type: ignore[misc]
    """A connection and where it is: handshake, head, body (in the event loop), busy (a thread
    has it), idle (kept alive), linger (closing)."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.phase = HEAD
        self.deadline = 0.0
        self.buf = bytearray()
        self.scanned = 0
        self.need = -1
        self.idle_since = 0.0
        self.continue_sent = False
        self.body_unread = False
        self.answered = False
        self.served = 0
        self.events = 0

    def init(self) -> None:
        # The socket is wrapped (and its handshake done) by the event loop: only the parser here.
        self.initialized = True
        if self.parser is None:  # type: ignore[has-type]
            self.parser = http.get_parser(self.cfg, self.sock, self.client)

    def peer(self) -> str:
        c = self.client
        return f"{c[0]}:{c[1]}" if isinstance(c, tuple) and len(c) >= 2 else str(c)


class DeadlineWorker(ThreadWorker):  # type: ignore[misc]
    """See the module docstring. `board` and `limits` are set by `worker_class()`."""

    board: Board
    limits: Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parked: set[_Conn] = set()
        self.drop_log = _RateLimitedLog()
        self.next_sweep = 0.0
        self.fewest: int | None = None
        self.slot: _Slot | None = None
        self.notified = 0.0

    # ---- process start and the shared board -------------------------------------------------

    def init_process(self) -> None:
        index = getattr(self, "aim_slot", None)
        if index is not None:
            self.slot = self.board.slots[index]
            self.slot.pid, self.slot.conns, self.slot.requests, self.slot.beat = os.getpid(), 0, 0, time.monotonic()
        super().init_process()

    def notify(self) -> None:
        """gunicorn's liveness signal to the master (a utime of the worker's temporary file),
        at most twice a second: gthread calls it at every turn of the loop, and at a few hundred
        reviews a second that syscall was among the worker's largest costs (tools/bench_webhook.py).
        The master's timeout (30 s) is far longer."""
        now = time.monotonic()
        if now - self.notified >= NOTIFY_EVERY:
            self.notified = now
            super().notify()

    def _beat(self, now: float) -> None:
        if self.slot is not None:
            self.slot.beat = now
            self.slot.conns = self.nr_conns

    def _fewest_elsewhere(self, now: float) -> int | None:
        pid = os.getpid()
        return min((int(s.conns) for _, s in self.board.live(now) if s.pid != pid), default=None)

    def _may_accept(self, now: float) -> bool:
        fewest = self.fewest = self._fewest_elsewhere(now)
        if not self.alive or self.nr_conns >= self.worker_connections:
            return False
        return fewest is None or self.nr_conns <= fewest

    def _overloaded(self) -> bool:
        """Two connections more than another live worker (after a worker restart, say): this
        response closes its connection, and the client reconnects to a less-loaded worker. (The
        other workers' count as the event loop last read it: a thread does not scan the board.)"""
        fewest = self.fewest
        return fewest is not None and self.nr_conns > fewest + 1

    # ---- the event loop ---------------------------------------------------------------------

    def run(self) -> None:
        self.poller.register(self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks)
        while self.alive:
            self.notify()
            now = time.monotonic()
            self._beat(now)
            accepting = self._may_accept(now)
            self.set_accept_enabled(accepting)
            # Gated off: look again soon, the other workers' counts change without waking us.
            self.wait_for_and_dispatch_events(timeout=0.05 if not accepting else self._select_timeout())
            if not self.is_parent_alive():
                break
            self._sweep(time.monotonic())

        # Graceful stop: no new connections; a kept-alive connection stays open STOP_LINGER at most
        # (a request on it is answered with Connection: close); requests under way finish.
        self.set_accept_enabled(False)
        now = time.monotonic()
        for conn in self.parked:
            if conn.phase == IDLE:
                conn.deadline = min(conn.deadline, now + STOP_LINGER)
        self.next_sweep = now
        stop_by = now + self.cfg.graceful_timeout
        while self.nr_conns > 0 and time.monotonic() < stop_by:
            self.notify()
            self._beat(time.monotonic())
            self.wait_for_and_dispatch_events(timeout=min(0.25, self._select_timeout()))
            self._sweep(time.monotonic())
        for conn in list(self.parked):
            self._close(conn)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        for s in self.sockets:
            s.close()
        if self.slot is not None:
            self.slot.conns = 0

    def _select_timeout(self) -> float:
        """Until the next deadline (kept by _park and _sweep), at most a second."""
        return min(1.0, max(0.0, self.next_sweep - time.monotonic()))

    def _sweep(self, now: float) -> None:
        """Close what missed its deadline, and note when the next one falls. A scan of the parked
        set, when a deadline is due, and at least once a second."""
        if now < self.next_sweep:
            return
        nxt = now + 1.0
        for conn in list(self.parked):
            due = conn.deadline
            if now < due:
                nxt = min(nxt, due)
            elif conn.phase in (IDLE, LINGER):
                self._close(conn)
            else:
                self._drop(conn, now)
        self.next_sweep = nxt

    def accept(self, listener: socket.socket) -> None:
        if not self._may_accept(time.monotonic()):
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        if self.slot is not None:
            self.slot.conns = self.nr_conns
        now = time.monotonic()
        conn = _Conn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._evict_if_crowded()
        if self.cfg.is_ssl:
            try:
                conn.sock = gsock.ssl_context(self.cfg).wrap_socket(
                    client_sock, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=True
                )
            except (OSError, ValueError) as e:
                log.warning("cannot start TLS with %s: %s", conn.peer(), e)
                self._close(conn)
                return
            conn.phase, conn.deadline = HANDSHAKE, now + self.limits.handshake_timeout
            self._park(conn, selectors.EVENT_READ)
        else:
            self._idle(conn, now)

    def _evict_if_crowded(self) -> None:
        """Near `worker_connections`, make room: close the connection that has waited longest
        without ever sending a request (connections opened to hold the server's slots look like
        that; a client's pooled connection that has served requests is kept)."""
        if self.nr_conns < 0.9 * self.worker_connections:
            return
        victim = min((c for c in self.parked if c.phase == IDLE and not c.served), key=lambda c: c.idle_since, default=None)
        if victim is not None:
            DROPPED.labels(reason="idle_evicted").inc()
            self.drop_log.warning(
                "closed connection from %s: never sent a request, and the worker is near its %d connections",
                victim.peer(),
                self.worker_connections,
                peer=victim.peer(),
                reason="idle_evicted",
            )
            self._close(victim)

    def _park(self, conn: _Conn, events: int) -> None:
        self.next_sweep = min(self.next_sweep, conn.deadline)
        cb = partial(self._on_event, conn)
        if conn in self.parked:
            if conn.events != events:
                self.poller.modify(conn.sock, events, cb)
        else:
            self.poller.register(conn.sock, events, cb)
            self.parked.add(conn)
        conn.events = events

    def _unpark(self, conn: _Conn) -> None:
        if conn in self.parked:
            self.parked.discard(conn)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)

    def _idle(self, conn: _Conn, now: float) -> None:
        conn.phase, conn.idle_since = IDLE, now
        conn.deadline = now + self.limits.keepalive
        if not self.alive:
            conn.deadline = min(conn.deadline, now + STOP_LINGER)
        self._park(conn, selectors.EVENT_READ)

    def _start_request(self, conn: _Conn, now: float) -> None:
        conn.phase, conn.deadline = HEAD, now + self.limits.header_timeout
        conn.scanned, conn.need = 0, -1
        conn.continue_sent = conn.body_unread = False

    def _on_event(self, conn: _Conn, fileobj: Any) -> None:
        try:
            self._event(conn, fileobj)
        except Exception:  # a client never takes the worker down
            log.exception("unexpected error on the connection from %s; closing it", conn.peer())
            self._close(conn)

    def _event(self, conn: _Conn, _fileobj: Any) -> None:
        now = time.monotonic()
        if conn.phase == CLOSED:  # closed earlier in this round of events
            return
        if conn.phase == HANDSHAKE:
            try:
                conn.sock.do_handshake()
            except ssl.SSLWantReadError:
                self._park(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._park(conn, selectors.EVENT_WRITE)
                return
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
                self._close(conn)  # the client left (a TCP health check, a client giving up)
                return
            except (ssl.SSLError, OSError) as e:
                DROPPED.labels(reason="handshake_failed").inc()
                self.drop_log.warning(
                    "closed connection from %s: TLS handshake failed (%s)",
                    conn.peer(),
                    e,
                    peer=conn.peer(),
                    reason="handshake_failed",
                )
                self._close(conn)
                return
            # Connected but not yet asked anything: idle, like a kept-alive connection. Clients
            # dial ahead (Go's transport puts a connection it dialled for a request another
            # connection served into its idle pool): the deadline starts with the request's first byte.
            self._idle(conn, now)
        elif conn.phase == LINGER:
            self._linger_read(conn)
            return
        self._read(conn)

    def _read(self, conn: _Conn) -> None:
        """Read what the client has sent (TLS may hold decrypted bytes the selector cannot see:
        read until it would block); hand the request to a thread once it is complete."""
        while True:
            want = 65536 if conn.need < 0 else min(max(conn.need - len(conn.buf), 16384), 1024 * 1024)
            try:
                data = conn.sock.recv(want)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                self._park(conn, selectors.EVENT_WRITE)
                return
            except (ssl.SSLError, OSError):
                self._close(conn)
                return
            if not data:  # the client went away
                self._close(conn)
                return
            if conn.phase == IDLE:  # a request begins (readable alone may be TLS records without data)
                self._start_request(conn, time.monotonic())
            conn.buf += data
            if conn.need < 0 and not self._head(conn):
                return
            if 0 <= conn.need <= len(conn.buf):
                self._dispatch(conn)
                return
        if conn.phase != LINGER:
            self._park(conn, selectors.EVENT_READ)

    def _head(self, conn: _Conn) -> bool:
        """Once the head is in: how many bytes the request has. False when the connection was
        refused (and is closing)."""
        end = conn.buf.find(b"\r\n\r\n", max(0, conn.scanned - 3))
        if (end if end >= 0 else len(conn.buf)) > self.limits.max_header_bytes:
            self._refuse(conn, 431, "Request Header Fields Too Large", "request head too large", "headers_too_large")
            return False
        if end < 0:
            conn.scanned = len(conn.buf)
            return True
        lengths: set[bytes] = set()
        chunked = expect = False
        for line in bytes(conn.buf[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                lengths.add(value.strip())
            elif key == b"transfer-encoding":
                chunked = True
            elif key == b"expect" and value.strip().lower() == b"100-continue":
                expect = True
        if chunked:
            self._refuse(conn, 411, "Length Required", "a body needs Content-Length (chunked bodies are not accepted)", "")
            return False
        conn.phase = BODY
        conn.deadline = time.monotonic() + self.limits.body_timeout
        length = int(next(iter(lengths))) if len(lengths) == 1 and next(iter(lengths)).isdigit() else None if lengths else 0
        if length is None or length > self.limits.max_body_bytes:
            # gunicorn answers a malformed Content-Length with 400, the application a large one with
            # 413 — from the head alone; the body is never read and the connection closes after.
            conn.need, conn.body_unread = end + 4, length is not None
            return True
        conn.need = end + 4 + length
        if expect and len(conn.buf) < conn.need:
            try:
                conn.sock.send(_CONTINUE)
                conn.continue_sent = True
            except OSError:
                pass
        return True

    def _dispatch(self, conn: _Conn) -> None:
        self._unpark(conn)
        conn.phase = BUSY
        try:
            # Blocking, with a timeout as a safety net only: the request is in memory; a response a
            # client will not read ends here.
            conn.sock.settimeout(self.limits.body_timeout)
        except OSError:
            self._close(conn)
            return
        raw = bytes(conn.buf)
        conn.buf = bytearray()
        if self._may_inline(raw):
            keep = self._inline(conn, raw)
            if keep is not None:
                self._finish(conn, keep)
                return
        conn.init()
        conn.parser.unreader.unread(raw)
        fs = self.tpool.submit(self.handle, conn)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def _may_inline(self, raw: bytes) -> bool:
        if not self.limits.inline or len(raw) > INLINE_MAX_BYTES:
            return False
        line = raw[: raw.find(b"\r\n")].split(b" ")
        path = line[1].split(b"?", 1)[0] if len(line) > 1 else b""
        return path not in THREADED_PATHS

    def _inline(self, conn: _Conn, raw: bytes) -> bool | None:
        """Answer in the event loop; None when the request must wait for I/O (offload.py): the
        answer it produced was discarded, and it goes to a thread with a fresh parser."""
        conn.init()
        conn.parser.unreader.unread(raw)
        with offload.inline() as state:
            keep = self.handle(conn)
        if not state.escaped:
            return keep
        OFFLOADED.inc()
        conn.answered = False
        conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        return None

    def enqueue_req(self, conn: Any) -> None:  # gthread's path; every request here goes through _dispatch
        self._dispatch(conn)

    def finish_request(self, conn: _Conn, fs: futures.Future[Any]) -> None:
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        try:
            self._finish(conn, keep)
        except Exception:
            log.exception("unexpected error after a response to %s; closing the connection", conn.peer())
            self._close(conn)

    def _finish(self, conn: _Conn, keep: bool) -> None:
        if conn.answered:
            conn.served += 1
            if self.slot is not None:
                self.slot.requests += 1
        conn.answered = False
        if not keep:
            self._close(conn, graceful=True)
            return
        now = time.monotonic()
        try:
            conn.sock.setblocking(False)
            leftover = conn.parser.unreader.take_buffered()
            pending = conn.sock.pending() if isinstance(conn.sock, ssl.SSLSocket) else 0
        except OSError:
            self._close(conn)
            return
        self._idle(conn, now)
        if leftover:  # the client sent its next request already
            conn.buf = bytearray(leftover)
            self._start_request(conn, now)
            self._park(conn, selectors.EVENT_READ)
            if not self._head(conn):
                return
            if 0 <= conn.need <= len(conn.buf):
                # Pipelined requests: the next one after this turn of the loop, not by recursion
                # (answered in the event loop, a client's hundreds of pipelined requests would nest).
                self.method_queue.defer(self._dispatch_if_complete, conn)
                return
        if leftover or pending:  # (TLS holds decrypted bytes the selector cannot see)
            self._read(conn)

    def _dispatch_if_complete(self, conn: _Conn) -> None:
        if conn.phase in (HEAD, BODY) and 0 <= conn.need <= len(conn.buf):
            self._dispatch(conn)

    # ---- in a thread --------------------------------------------------------------------------

    def handle(self, conn: _Conn) -> bool:
        req = None
        try:
            req = next(conn.parser)
            if not req:
                return False
            if conn.continue_sent:
                req._expected_100_continue = False
            if self.board.draining or conn.body_unread or self._overloaded():
                # Draining: the client reconnects, to a replica that is not going away. A body left
                # unread: where the next request would start is unknown. Overloaded: to rebalance.
                req.must_close = True
            keep = self._respond(req, conn)
            conn.answered = True
            if not keep or conn.body_unread:
                return False
            # The body is in memory: this discards what the application did not read, without waiting.
            return bool(conn.parser.finish_body(deadline=time.monotonic() + 1.0))
        except http.errors.NoMoreData as e:
            self.log.debug("Ignored premature client disconnection. %s", e)
        except StopIteration as e:
            self.log.debug("Closing connection. %s", e)
        except TimeoutError:
            self.log.debug("client stopped reading the response")
        except ssl.SSLError as e:
            if e.args[0] != ssl.SSL_ERROR_EOF:
                self.handle_error(req, conn.sock, conn.client, e)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as e:
            self.handle_error(req, conn.sock, conn.client, e)
        return False

    def _respond(self, req: Any, conn: _Conn) -> bool:
        """gunicorn's handle_request, with the response written once: gunicorn writes the head
        and then each body chunk, each its own TLS record, syscall and (on loopback) TCP segment;
        gathered, an answer is one of each."""
        real = conn.sock
        out = _Gather(real)
        conn.sock = out
        try:
            return bool(self.handle_request(req, conn))
        finally:
            conn.sock = real
            if offload.escaped():
                # The placeholder answer of a request that must wait (offload.py): never sent, the
                # request is answered again on a thread. (It is small: it cannot have been flushed.)
                out.discard()
            else:
                out.flush()

    # ---- closing --------------------------------------------------------------------------------

    def _drop(self, conn: _Conn, now: float) -> None:
        reason = {HANDSHAKE: "handshake_timeout", HEAD: "header_timeout", BODY: "body_timeout"}.get(conn.phase, "timeout")
        limit = {
            HANDSHAKE: self.limits.handshake_timeout,
            HEAD: self.limits.header_timeout,
            BODY: self.limits.body_timeout,
        }.get(conn.phase, 0.0)
        DROPPED.labels(reason=reason).inc()
        what = {HANDSHAKE: "TLS handshake", HEAD: "request head", BODY: "request body"}.get(conn.phase, "request")
        self.drop_log.warning(
            "dropped slow connection from %s: %s not complete within %g s (%d bytes received)",
            conn.peer(),
            what,
            limit,
            len(conn.buf),
            peer=conn.peer(),
            reason=reason,
        )
        self._close(conn)

    def _refuse(self, conn: _Conn, status: int, reason_phrase: str, message: str, drop_reason: str) -> None:
        HTTP_ERRORS.labels(status=str(status)).inc()
        if drop_reason:
            DROPPED.labels(reason=drop_reason).inc()
            self.drop_log.warning("refused %s: %s", conn.peer(), message, peer=conn.peer(), reason=drop_reason)
        with contextlib.suppress(OSError):
            conn.sock.send(_canned(status, reason_phrase, message))
        self._close(conn, graceful=True)

    def _close(self, conn: _Conn, graceful: bool = False) -> None:
        """Close now, or (graceful) send FIN and discard what the client still sends for a moment, so
        unread request bytes do not turn the close into a reset that destroys the response."""
        if conn.phase == CLOSED:
            return
        if graceful and conn.phase != LINGER:
            try:
                conn.sock.setblocking(False)
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                graceful = False
            if graceful:
                conn.phase, conn.deadline = LINGER, time.monotonic() + LINGER_CLOSE
                self._park(conn, selectors.EVENT_READ)
                self._linger_read(conn)
                return
        self._unpark(conn)
        if conn.phase == CLOSED:
            return
        self.nr_conns -= 1
        conn.phase = CLOSED
        if self.slot is not None:
            self.slot.conns = self.nr_conns
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _linger_read(self, conn: _Conn) -> None:
        while True:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except OSError:
                break
            if not data:
                break
        self._close(conn)


class _Gather:
    """A socket whose sendall gathers what it is given (up to COALESCE_MAX) until flush(); every
    other use flushes first and goes to the socket itself."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._parts: list[bytes] = []
        self._size = 0

    def sendall(self, data: bytes) -> None:
        self._parts.append(bytes(data))
        self._size += len(data)
        if self._size > COALESCE_MAX:
            self.flush()

    def discard(self) -> None:
        self._parts, self._size = [], 0

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts, self._size = [], 0
            self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._sock, name)


def worker_class(board: Board, limits: Limits) -> type[DeadlineWorker]:
    return type("DeadlineWorker", (DeadlineWorker,), {"board": board, "limits": limits})


class DrainingArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, with a drain before the graceful stop on the first SIGTERM."""

    board: Board
    shutdown_delay: float = 0.0
    _drain_until: float | None = None

    def handle_term(self) -> None:
        if self.shutdown_delay <= 0 or self._drain_until is not None:
            raise StopIteration
        self._drain_until = time.monotonic() + self.shutdown_delay
        self.board.draining = True
        log.info(
            "SIGTERM: draining for %g s (readiness false, connections closed after their response), then stopping",
            self.shutdown_delay,
        )

    def manage_workers(self) -> None:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            raise StopIteration
        super().manage_workers()


def arbiter_class(board: Board, shutdown_delay: float) -> type[DrainingArbiter]:
    return type("DrainingArbiter", (DrainingArbiter,), {"board": board, "shutdown_delay": shutdown_delay})


def hooks(board: Board, on_exit: Callable[[int], None]) -> dict[str, Any]:
    """gunicorn settings that give each worker a board slot and free it when the worker exits."""

    def pre_fork(server: Any, worker: Any) -> None:
        taken = {getattr(w, "aim_slot", None) for w in server.WORKERS.values()}
        worker.aim_slot = board.free_slot({t for t in taken if t is not None})
        if worker.aim_slot is not None:  # more workers than slots (SIGTTIN): it serves, outside the balance
            board.clear(worker.aim_slot)

    def child_exit(server: Any, worker: Any) -> None:
        slot = getattr(worker, "aim_slot", None)
        if slot is not None:
            board.clear(slot)
        on_exit(worker.pid)

    return {"pre_fork": pre_fork, "child_exit": child_exit}
