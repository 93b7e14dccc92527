"""Run aim-webhook under gunicorn with TLS on loopback, for the real-server tests and the benchmark."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aim_webhook.tls import new_ca, new_serving_cert, write_atomically

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    log_file: Path
    ca_pem: object

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.check_hostname = True
        return ctx

    def connection(self, timeout: float = 10.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", self.port, context=self.context(), timeout=timeout)

    def rotate(self) -> None:
        pem = new_serving_cert(self.ca_pem, dns_names=["localhost"], ip_addresses=["127.0.0.1"])  # type: ignore[arg-type]
        # The order a Secret volume update gives: both files replaced atomically; the key first so a
        # reader never pairs a new certificate with the old key for long.
        write_atomically(self.key_file, pem.key)
        write_atomically(self.cert_file, pem.cert)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace")


def start(
    tmp: Path, *, workers: int = 2, threads: int = 4, extra: tuple[str, ...] = (), kubeconfig: Path | None = None
) -> Server:
    ca = new_ca()
    pem = new_serving_cert(ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    ca_file, cert, key = tmp / "ca.crt", tmp / "tls.crt", tmp / "tls.key"
    ca_file.write_bytes(ca.cert)
    write_atomically(cert, pem.cert)
    write_atomically(key, pem.key)
    port = free_port()
    log = tmp / "webhook.log"
    env = {**os.environ, "AIM_RECIPES_DIR": str(ROOT / "recipes")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    cmd = [
        sys.executable,
        "-m",
        "aim_webhook.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--kube" if kubeconfig is not None else "--no-kube",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-tmp-dir",
        str(tmp),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    server = Server(proc, port, ca_file, cert, key, log, ca)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"webhook exited: {server.logs()}")
        try:
            conn = server.connection(timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return server
        except OSError:
            time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"webhook did not become ready: {server.logs()}")
