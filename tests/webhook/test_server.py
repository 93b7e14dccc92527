"""The webhook for real: gunicorn, TLS on loopback, keep-alive, certificate rotation under load and
SIGTERM under load with zero failed requests."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import threading
import time
import warnings

import pytest
from cryptography import x509
from helpers import review
from server import start

BODY = json.dumps(review("deployment-good.json")).encode()
BAD = json.dumps(review("deployment-gpu-count-mismatch.json")).encode()
HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def server(tmp_path):
    s = start(tmp_path)
    yield s
    s.stop(signal.SIGKILL)


def post(conn, path="/validate", body=BODY):
    conn.request("POST", path, body=body, headers=HEADERS)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_reviews_over_tls_with_keep_alive(server):
    conn = server.connection()
    first_sock = None
    for i in range(50):
        status, data = post(conn, body=BAD if i % 2 else BODY)
        assert status == 200
        out = json.loads(data)
        assert out["response"]["allowed"] is (i % 2 == 0)
        first_sock = first_sock or conn.sock
        assert conn.sock is first_sock  # one TLS connection for all 50 reviews
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()


def test_tls_below_1_2_is_refused(server):
    ctx = server.context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        conn.request("GET", "/healthz")
        conn.getresponse()


def test_hostile_input_over_the_wire(server):
    conn = server.connection()
    conn.request("POST", "/validate", body=b"\xff" * 10, headers=HEADERS)
    assert conn.getresponse().status == 400
    conn = server.connection()
    conn.request("POST", "/validate", body=b"[" * 100000 + b"]" * 100000, headers=HEADERS)
    r = conn.getresponse()
    assert r.status == 400, r.read()
    r.read()
    conn.request("GET", "/validate")
    r = conn.getresponse()
    assert r.status == 405
    r.read()
    conn = server.connection()  # a body over the cap is refused from its Content-Length, unread
    conn.putrequest("POST", "/mutate")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(8 * 1024 * 1024))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn = server.connection()
    assert post(conn)[0] == 200  # the workers are alive


def test_metrics_cover_all_workers(server):
    for _ in range(20):
        conn = server.connection()
        post(conn, body=BAD)
        conn.close()
    conn = server.connection()
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    line = next(x for x in text.splitlines() if x.startswith("aim_webhook_requests_total{") and "GPU_COUNT_MISMATCH" in x)
    assert float(line.rsplit(" ", 1)[1]) == 20.0
    assert "aim_webhook_certificate_expiry_timestamp_seconds" in text


class Load:
    """Client threads posting reviews; a new connection every few requests so handshakes keep
    happening. A request fails when it gets anything but a well-formed 200 review response."""

    def __init__(self, server, threads=4, reconnect_every=5):
        self.server = server
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.serials: set[int] = set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(reconnect_every,)) for _ in range(threads)]

    def run(self, reconnect_every):
        conn = None
        n = 0
        while not self.stop.is_set():
            try:
                if conn is None or n % reconnect_every == 0:
                    if conn:
                        conn.close()
                    conn = self.server.connection()
                    conn.connect()
                    cert = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))
                    with self.lock:
                        self.serials.add(cert.serial_number)
                n += 1
                # (A response with Connection: close — the server rebalancing its workers — makes
                # http.client open a new connection for the next request by itself.)
                status, data = post(conn)
                ok = status == 200 and json.loads(data)["response"]["allowed"] is True
                with self.lock:
                    if ok:
                        self.ok += 1
                    else:
                        self.failures.append(f"{status} {data[:100]!r}")
            except Exception as e:
                with self.lock:
                    self.failures.append(repr(e))
                conn = None

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def test_certificate_rotation_under_load_without_restart_or_failed_requests(server):
    pid_before = server.proc.pid
    with Load(server) as load:
        time.sleep(1.5)
        before = set(load.serials)
        server.rotate()
        time.sleep(3.0)
    assert load.failures == []
    assert load.ok > 100
    assert len(before) == 1 and len(load.serials) == 2, "new handshakes must present the rotated certificate"
    assert server.proc.poll() is None and server.proc.pid == pid_before


def test_sigterm_under_load_drains_in_flight_requests(server):
    results = {"ok": 0, "failed": []}
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        conn = server.connection()
        while not stop.is_set():
            try:
                status, data = post(conn)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                # The server closed an idle keep-alive connection: the request was never processed, and
                # clients (Go's transport, as the API server uses) retry it on a new connection.
                try:
                    conn = server.connection()
                    status, data = post(conn)
                except ConnectionRefusedError:
                    return  # the listener is closed: the server is gone, nothing was in flight
                except Exception as e:
                    with lock:
                        results["failed"].append(repr(e))
                    return
            except ConnectionRefusedError:
                return
            except Exception as e:
                with lock:
                    results["failed"].append(repr(e))
                return
            with lock:
                if status == 200 and json.loads(data)["response"]["uid"]:
                    results["ok"] += 1
                else:
                    results["failed"].append(f"{status}")

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    before = results["ok"]
    rc = server.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert before > 50
    assert results["failed"] == [], results["failed"][:5]
    assert rc == 0, server.logs()[-2000:]
