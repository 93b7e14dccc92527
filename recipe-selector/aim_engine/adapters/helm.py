"""Helm, as `aim-recipes tune` drives it: install or upgrade a release of the chart, run its test
(the benchmark), uninstall it. A thin wrapper around the helm binary: each call returns what helm
said, and its failure carries helm's own error lines."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aim_engine.domain.errors import InputError


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

    def _run(self, args: Sequence[str], *, timeout: float) -> HelmResult:
        cmd = [self.binary, *args]
        if self.kubeconfig:
            cmd += ["--kubeconfig", self.kubeconfig]
        if self.context:
            cmd += ["--kube-context", self.context]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            return HelmResult(ok=False, output=f"helm {args[0]} did not finish in {timeout:.0f} s: {e.output or ''}")
        return HelmResult(ok=out.returncode == 0, output=out.stdout + out.stderr)

    def upgrade_install(
        self, *, release: str, chart: Path, namespace: str, values: Sequence[Path], sets: Sequence[str], timeout_s: int
    ) -> HelmResult:
        args = ["upgrade", "--install", release, str(chart), "-n", namespace, "--wait", "--timeout", f"{timeout_s}s"]
        for v in values:
            args += ["-f", str(v)]
        for s in sets:
            args += ["--set", s]
        return self._run(args, timeout=timeout_s + 60)

    def test(self, *, release: str, namespace: str, timeout_s: int) -> HelmResult:
        return self._run(["test", release, "-n", namespace, "--timeout", f"{timeout_s}s"], timeout=timeout_s + 60)

    def uninstall(self, *, release: str, namespace: str, timeout_s: int = 300) -> HelmResult:
        return self._run(["uninstall", release, "-n", namespace, "--wait", "--timeout", f"{timeout_s}s"], timeout=timeout_s + 60)
