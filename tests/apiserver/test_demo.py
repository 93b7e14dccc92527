"""The README's first command: `make demo` (tools/demo.py) on the local cluster, then
`make cluster-down` leaving nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import realcluster  # noqa: E402


def test_make_demo_installs_selects_explains_refuses_and_tears_down(tmp_path):
    env = {**os.environ, "AIM_CLUSTER_STATE": str(tmp_path / "cluster")}
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "demo.py")], capture_output=True, text=True, timeout=1200, check=False, env=env
        )
    finally:
        left = realcluster.down(tmp_path / "cluster")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "mi300x-0  MI300X" in text or "mi300x-0" in text
    assert "STATUS: deployed" in text
    assert "wrote selection to configmap aim-engine/aim-engine-recipe-config: qwen3-32b-mi300x-1gpu-fp8" in text
    assert "qwen3-32b-mi300x-1gpu-fp8   MI300X" in text  # the pod's labels, from kubectl get -L
    assert "--quantization fp8" in text
    assert 'admission webhook "workloads.validate.aim-engine.io" denied the request' in text
    assert "[GPU_COUNT_MISMATCH]" in text
    # A real engine: the CPU recipe selected for the test model, a chat completion through the
    # release's Service, vLLM's own /health and /metrics.
    assert "wrote selection to configmap aim-engine-cpu/tiny-recipe-config: tiny-llama-cpu-x86-bf16" in text
    assert "completion: '" in text and "/health: 200" in text
    assert " vllm: series" in text and "0 vllm: series" not in text
    assert "make cluster-down" in text
    assert not left, f"teardown left processes behind: {left}"
