"""The README's first command: `make demo` (tools/demo.py) on a real API server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_make_demo_detects_selects_refuses_injects_and_leaves_nothing_running():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py")], capture_output=True, text=True, timeout=240, check=False
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "mi300x-node-2  MI300X  amd.com/gpu     8            0     8     no: cordoned" in text
    assert "Selected (primary): qwen3-32b-mi300x-1gpu-fp8" in text
    assert "HTTP 403" in text and "[GPU_COUNT_MISMATCH]" in text
    assert "recipe qwen3-32b-mi300x-1gpu-fp8, gpu MI300X" in text and "--tensor-parallel-size 1" in text
    left = subprocess.run(["pgrep", "-f", "aim-demo-"], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", "a process of the demo was left running"
