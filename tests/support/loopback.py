"""Servers the integration tier starts on loopback: the engine simulator (with the vLLM venv's
Python) and any process that answers a health URL once it is up."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from support import ROOT

VLLM_PY = ROOT / ".tools" / "vllm-venv" / "bin" / "python"
SIM = ROOT / "tools" / "engine" / "simulator.py"
MODEL = "aim-engine/tiny-llama"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(cmd: list[str], *, health: str, what: str, timeout: float = 60) -> Iterator[None]:
    """Runs `cmd` until the block ends; the block starts once `health` answers 200."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(health, timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    out = proc.stdout.read() if proc.stdout else ""
                    raise AssertionError(f"{what} did not start: {out[-3000:]}") from None
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def simulator(*flags: str) -> Iterator[str]:
    """The engine simulator serving MODEL on a free loopback port; yields its base URL."""
    if not VLLM_PY.exists():
        pytest.fail(f"{VLLM_PY} is missing: run make setup")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(VLLM_PY), str(SIM), "serve", MODEL, "--host", "127.0.0.1", "--port", str(port), *flags]
    with serving(cmd, health=f"{base}/health", what="the simulator"):
        yield base
