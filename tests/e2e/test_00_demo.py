"""The README's first command, `make demo` (tools/demo.py), on the suite's cluster: its steps and
what it prints, with the cluster the suite brings up (one cluster for the whole suite) instead of
its own. The CPU release of the test model on the real vLLM CPU engine stays for
test_01_real_engine.py; the seed's production release is uninstalled after the checks. `make demo`
itself brings up a cluster of its own and leaves everything running; `make cluster-down` removes
it (docs/cluster.md). Cost: about 100 s (two installs, vLLM's start)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT, E2ECluster


def test_make_demo_installs_selects_explains_refuses_and_serves(e2e: E2ECluster) -> None:
    env = {**os.environ, "AIM_DEMO_KUBECONFIG": str(e2e.kubeconfig)}
    try:
        out = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "demo.py")], capture_output=True, text=True, timeout=1200, check=False, env=env
        )
    finally:
        # The seed release has shown what it shows; its webhook replicas' share of the node's two
        # cores goes to the lanes beside this one. (The CPU release stays for test_01_real_engine.py.)
        e2e.helm("uninstall", "aim-engine", "-n", "aim-engine", "--timeout", "3m")
    text = out.stdout + out.stderr
    print(text[-6000:])
    assert out.returncode == 0, text[-4000:]
    assert "mi300x-0" in text
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
