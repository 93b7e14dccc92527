"""Helm, as `aim-recipes tune` drives it: install or upgrade a release of the chart, run its test
(the benchmark), uninstall it. A thin wrapper around the helm binary: each call returns what helm
said, and its failure carries helm's own error lines."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aim_engine.domain.errors import InputError

Abort = Callable[[], str | None]
ABORT_POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class HelmResult:
    ok: bool
    output: str

    def error(self) -> str:
        """Helm's error lines, else its last lines (what a trial failure reports)."""
        lines = [line for line in self.output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error") or "error" in line.lower()]
        return " | ".join((errors or lines)[-3:])[-600:] or "helm printed nothing"


@dataclass(frozen=True, slots=True, kw_only=True)
class Helm:
    binary: str
    kubeconfig: str | None = None
    context: str | None = None

    @staticmethod
    def find(binary: str | None) -> Helm:
        path = binary or shutil.which("helm")
        if not path or not Path(path).exists():
            raise InputError("helm not found: install Helm 3.8+ or pass --helm PATH")
        return Helm(binary=path)

    def _run(self, args: Sequence[str], *, timeout: float, abort: Abort | None = None) -> HelmResult:
        """Run helm; `abort()`, asked every few seconds while it runs, may end it early with a
        reason (a trial whose engine crash-loops need not wait out --wait's timeout)."""
        cmd = [self.binary, *args]
        if self.kubeconfig:
            cmd += ["--kubeconfig", self.kubeconfig]
        if self.context:
            cmd += ["--kube-context", self.context]
        with tempfile.TemporaryFile("w+") as log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True) as proc:
            deadline = time.monotonic() + timeout
            reason = ""
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    reason = f"helm {args[0]} did not finish in {timeout:.0f} s"
                elif abort is not None:
                    reason = abort() or ""
                if reason:
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    break
                time.sleep(ABORT_POLL_S)
            log.seek(0)
            output = log.read()
        if reason:
            return HelmResult(ok=False, output=f"Error: {reason}\n{output}")
        return HelmResult(ok=proc.returncode == 0, output=output)

    def upgrade_install(
        self,
        *,
        release: str,
        chart: Path,
        namespace: str,
        values: Sequence[Path],
        sets: Sequence[str],
        timeout_s: int,
        abort: Abort | None = None,
    ) -> HelmResult:
        args = ["upgrade", "--install", release, str(chart), "-n", namespace, "--wait", "--timeout", f"{timeout_s}s"]
        for v in values:
            args += ["-f", str(v)]
        for s in sets:
            args += ["--set", s]
        return self._run(args, timeout=timeout_s + 60, abort=abort)

    def test(self, *, release: str, namespace: str, timeout_s: int) -> HelmResult:
        return self._run(["test", release, "-n", namespace, "--timeout", f"{timeout_s}s"], timeout=timeout_s + 60)

    def uninstall(self, *, release: str, namespace: str, timeout_s: int = 300) -> HelmResult:
        return self._run(["uninstall", release, "-n", namespace, "--wait", "--timeout", f"{timeout_s}s"], timeout=timeout_s + 60)
