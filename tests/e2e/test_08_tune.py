"""`aim-recipes tune` on the local cluster: each trial a real deployment through the chart, its
selector hook and the webhook, the session's engine (conftest.ENGINE: the engine simulator in
`make e2e`, tune's workflow being what is tested; vLLM's CPU build serving the test model in `make
test-engine`) on the real node, measured by the chart's `helm test` (vLLM's own client).
Bounded: the baseline, one trial the selector's rules refuse before it is deployed, and one real
trial; run in two parts (a trial budget, then a resume) to show an interrupted tune goes on where
it stopped. The ≥6-trial tune of the closing note is the documented command in docs/tuning.md."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

import realcluster
from localcluster import wait_for

from .conftest import ENGINE, IMAGE_VALUES, ROOT, E2ECluster, engine_sets

NS = "aim-engine-tune"
RELEASE = "tune"
CATALOG_RECIPE = "tiny-llama-cpu-x86-bf16"
# The simulator's trials start from the catalog's recipe with a sliver of a core requested (the
# modules beside this one share the node's two cores); the real engine's from the catalog's own.
BASE = f"{CATALOG_RECIPE}-sim" if ENGINE == "simulator" else CATALOG_RECIPE


def base_recipe(tmp: Path) -> list[str]:
    """tune's `--recipe ID` (the real engine), or `--recipe-file` with the simulator's copy of it."""
    if ENGINE != "simulator":
        return ["--recipe", BASE]
    recipe = yaml.safe_load((ROOT / "recipes" / "catalog" / "tiny-llama" / f"{CATALOG_RECIPE}.yaml").read_text())
    recipe["recipe_id"] = BASE
    recipe["resources"]["requests"]["cpu"] = "100m"
    path = tmp / f"{BASE}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return ["--recipe-file", str(path)]


def tune(e2e: E2ECluster, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    repository, _, tag = realcluster.vllm_image().rpartition(":")
    values = {
        "aim_engine.env_vars.HF_HUB_OFFLINE": "1",
        "image.vllm.repository": repository,
        "image.vllm.tag": tag,
        "image.vllm.pull_policy": "Never",
        "service.type": "ClusterIP",
        "benchmark.resources.requests.cpu": "200m",
        # conftest.own_webhook
        "admission_controller.resources.requests.cpu": "20m",
        "admission_controller.webhook.namespaces": "{" + NS + "}",
        **IMAGE_VALUES,
    }
    cmd = [
        str(ROOT / ".tools/venv/bin/aim-recipes"), "tune", *base_recipe(out.parent), "--namespace", NS, "--release", RELEASE,
        "--chart", str(ROOT / "chart"), "--helm", str(ROOT / ".tools/bin/helm"), "--kubeconfig", str(e2e.kubeconfig),
        "--grid", "max_num_seqs=0,8", "--slo", "itl_p95_ms=500", "--num-prompts", "64", "--trial-timeout", "600",
        "--out", str(out), "--no-progress",
        *[a for k, v in values.items() for a in ("--set", f"{k}={v}")],
        *engine_sets(ttft_ms=20, itl_ms=5),
        *extra,
    ]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=e2e.env(), capture_output=True, text=True, timeout=1800, check=False)
    print(f"\n$ aim-recipes tune ... {' '.join(extra)}  ({time.monotonic() - t0:.0f} s, exit {done.returncode})\n{done.stdout}")
    return done


def test_a_tune_deploys_measures_resumes_and_writes_the_best_as_a_custom_recipe(e2e: E2ECluster, tmp_path: Path) -> None:
    if ENGINE == "vllm":  # the node's two CPUs serve one real engine at a time: the others must be gone
        for ns in ("aim-engine-perf", "aim-engine-scale"):
            wait_for(lambda ns=ns: e2e.kubectl("get", "namespace", ns).returncode != 0, timeout=300, what=f"{ns} gone")
    e2e.kubectl("create", "namespace", NS, check=True)
    out = tmp_path / "out"
    try:
        # Part 1, a budget of two trials: the baseline (the catalog recipe as written) and
        # max_num_seqs=0, which the selector's rules refuse: recorded as failed, never deployed.
        first = tune(e2e, out, "--max-trials", "2")
        assert first.returncode == 0, first.stdout + first.stderr
        state = json.loads((out / "state.json").read_text())
        outcomes = {tuple(map(tuple, t["params"])): t for t in state["trials"]}
        assert outcomes[()]["outcome"] == "measured", outcomes[()]
        assert outcomes[(("max_num_seqs", 0),)]["outcome"] == "failed"
        assert outcomes[(("max_num_seqs", 0),)]["reason"].startswith("not deployed:")
        baseline = outcomes[()]["result"]
        assert baseline["provenance"]["node"] == realcluster.NODE and baseline["conditions"]["concurrency"] == 16
        # The release is gone after each run (its benchmark history is kept, by the chart's policy).
        assert e2e.helm("status", RELEASE, "-n", NS).returncode != 0
        # Part 2, the same command without the budget: it resumes with the one trial left.
        second = tune(e2e, out)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "resuming: 2 trial(s) done" in second.stdout and "1 to run now" in second.stdout
        trials = json.loads((out / "state.json").read_text())["trials"]
        assert len(trials) == 3 and trials[-1]["outcome"] == "measured", trials[-1]
        # The best as a custom recipe ConfigMap in the seed's format with its measured figures.
        tuned_path = out / f"{BASE}-tuned.yaml"
        cm = yaml.safe_load(tuned_path.read_text())
        recipe = yaml.safe_load(cm["data"]["recipe.yaml"])
        assert recipe["performance"]["provenance"]["expected_tokens_per_second"]["kind"] == "measured"
        assert recipe["performance"]["expected_itl_p95_ms"] > 0
        validate = subprocess.run(
            [str(ROOT / ".tools/venv/bin/aim-recipes"), "validate", str(tuned_path)], capture_output=True, text=True, check=False
        )
        assert validate.returncode == 0, validate.stdout + validate.stderr
        for name in ("report.md", "trials.csv", "tune.png", "tune.html"):
            assert (out / name).stat().st_size > 0
        history = e2e.kubectl("get", "configmap", f"{RELEASE}-recipe-benchmarks", "-n", NS, "-o", "json", check=True).stdout
        assert len(json.loads(json.loads(history)["data"]["benchmarks.json"])) == 2  # the two deployed trials
    finally:
        e2e.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m")
        e2e.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")
