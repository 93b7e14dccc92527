"""`aim-recipes tune` (seed 000's autotuner): the grid and its trials, the recipe each trial serves,
the resumable state, the best trial under an SLO, the report, and the command's orchestration
(budget, failures, interruption, resume) against stand-ins for Kubernetes and Helm. The real run,
through the chart, the webhook and vLLM on the local cluster, is tests/e2e/test_tune.py."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from aim_engine.adapters.helm import HelmResult
from aim_engine.cli import tune as tune_cli
from aim_engine.cli.main import main
from aim_engine.domain.benchmark import Conditions, Provenance, from_client, parse_history, with_result
from aim_engine.domain.errors import InputError
from aim_engine.domain.tuning import Axis, Trial, TuneState, parse_grid, trial_id, trial_params, trial_recipe
from aim_engine.rules.slo import Slo
from aim_engine.rules.tune import best, judge, tuned_recipe
from k8s_objects import node

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "tests" / "fixtures" / "benchmarks" / "vllm-bench-serve-cpu-5-failed.json"
TINY = "tiny-llama-cpu-x86-bf16"


def recipe(bundle: Any, rid: str) -> Any:
    return next(r for r in bundle.recipes if r.recipe_id == rid)


def test_a_grid_is_typed_axes_and_its_trials_every_combination() -> None:
    grid = parse_grid(["max_num_seqs=16,32", "enable-chunked-prefill=true,false", "env.VLLM_CPU_NUM_OF_RESERVED_CPU=0,1"])
    assert grid[0] == Axis(name="max_num_seqs", values=(16, 32))
    assert grid[1] == Axis(name="enable_chunked_prefill", values=(True, False))  # the recipe's spelling
    assert grid[2].is_env and grid[2].values == (0, 1)
    trials = trial_params(grid)
    assert len(trials) == 8 and trials[0] == (
        ("max_num_seqs", 16),
        ("enable_chunked_prefill", True),
        ("env.VLLM_CPU_NUM_OF_RESERVED_CPU", 0),
    )
    assert len({trial_id(p) for p in trials}) == 8 and trial_id(trials[3]) == trial_id(tuple(trials[3]))


@pytest.mark.parametrize(
    ("specs", "error"),
    [
        (["max_num_seqs"], "expected NAME=V1,V2"),
        (["max_num_seqs="], "expected NAME=V1,V2"),
        (["max_num_seqs=1", "max_num_seqs=2"], "given twice"),
        (["model=a,b"], "the model is the tune's"),
        (["port=1"], "the chart sets the port"),
    ],
)
def test_a_bad_grid_is_refused_with_what_to_write(specs: list[str], error: str) -> None:
    with pytest.raises(InputError, match=error):
        parse_grid(specs)


def test_a_trial_serves_its_settings_under_its_own_id_and_claims_nothing(bundle: Any) -> None:
    base = recipe(bundle, TINY)
    r = trial_recipe(base, (("max_num_seqs", 32), ("env.VLLM_CPU_NUM_OF_RESERVED_CPU", 1)))
    assert r.recipe_id.startswith(TINY + "-t") and r.args["max_num_seqs"] == 32 and r.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    assert r.performance is None and r.origin == "custom" and r.args["enforce_eager"] is True
    bundle.validator.validate(r.to_seed())
    # Parallel sizes decide the GPUs and their resources.
    gpu = recipe(bundle, "qwen3-32b-mi300x-1gpu-fp8")
    tp2 = trial_recipe(gpu, (("tensor_parallel_size", 2),))
    assert tp2.gpu_count == 2 and tp2.limits["amd.com/gpu"] == 2 and tp2.requests["amd.com/gpu"] == 2


def test_the_state_round_trips_and_names_what_differs(tmp_path: Path) -> None:
    grid = parse_grid(["max_num_seqs=16,32"])
    state = TuneState(model_id="m/x", base_recipe_id="r", grid=grid, release="t", namespace="ns")
    assert [trial_id(p) for p in state.pending()] == [trial_id(()), *(trial_id(p) for p in trial_params(grid))]
    state.record(Trial(trial_id=trial_id(()), params=(), outcome="failed", seconds=3.0, reason="install: boom"))
    again = TuneState.from_json(state.to_json(), where="state.json")
    assert again.trials == state.trials and again.same_tune(state) is None
    assert len(again.pending()) == 2
    other = TuneState(model_id="m/x", base_recipe_id="r", grid=parse_grid(["max_num_seqs=64"]), release="t", namespace="ns")
    assert "grid differs" in (again.same_tune(other) or "")
    with pytest.raises(InputError, match="not a tune state file"):
        TuneState.from_json("[]", where="state.json")
    with pytest.raises(InputError, match="version"):
        TuneState.from_json(json.dumps({"version": 99}), where="state.json")


def measured(recipe_id: str, *, tps: float, itl_p95: float, release: str = "t", time: str = "2026-11-28T10:00:00Z") -> Any:
    raw = json.loads(RESULT.read_text()) | {"output_throughput": tps, "p95_itl_ms": itl_p95}
    return from_client(
        raw,
        conditions=Conditions(input_tokens=128, output_tokens=128, concurrency=16, request_rate=None, num_prompts=160),
        provenance=Provenance(
            release=release,
            namespace="ns",
            recipe_id=recipe_id,
            hardware="CPU-x86",
            node="n",
            image="vllm-cpu",
            engine_version="vllm 0.32.0",
            client="vllm bench serve",
            time=time,
        ),
        max_error_ratio=0.01,
    )


def test_the_best_trial_meets_the_slo_and_becomes_a_measured_custom_recipe(bundle: Any) -> None:
    base = recipe(bundle, TINY)
    grid = parse_grid(["max_num_seqs=8,32"])
    state = TuneState(model_id=base.huggingface_id, base_recipe_id=TINY, grid=grid, release="t", namespace="ns")
    (p8,), (p32,) = trial_params(grid)
    for params, tps, itl in (((), 2000.0, 9.0), ((p8,), 1500.0, 5.0), ((p32,), 2600.0, 14.0)):
        rid = trial_recipe(base, params).recipe_id
        state.record(
            Trial(
                trial_id=trial_id(params),
                params=params,
                outcome="measured",
                seconds=90,
                result=measured(rid, tps=tps, itl_p95=itl),
            )
        )
    state.record(Trial(trial_id="deadbeef", params=(("max_num_seqs", 0),), outcome="failed", seconds=1, reason="not deployed"))
    # Without an SLO the fastest wins; with ITL p95 at most 10 ms it misses, and the baseline wins.
    assert best(judge(base, state, Slo())).trial.params == (p32,)
    judged = judge(base, state, Slo(itl_p95_ms=Decimal(10)))
    assert [j.trial.trial_id for j in judged] == [trial_id(()), trial_id((p8,)), trial_id((p32,)), "deadbeef"]
    assert [m.code for m in judged[2].missed] == ["SLO_LATENCY"]
    chosen = best(judged)
    assert chosen is not None and chosen.trial.params == ()
    tuned = tuned_recipe(base, chosen)
    assert tuned.recipe_id == TINY + "-tuned" and tuned.type == "optimized"
    assert tuned.performance.tokens_per_second == 2000 and tuned.performance.itl_p95_ms == 9
    assert tuned.performance.provenance["expected_tokens_per_second"]["kind"] == "measured"
    bundle.validator.validate(tuned.to_seed())


# ---- The command, against stand-ins for the cluster and Helm ----


class FakeKube:
    """One CPU node; ConfigMaps in memory."""

    def __init__(self) -> None:
        n = node("worker", labels={"kubernetes.io/arch": "amd64", "feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true"})
        n["status"]["allocatable"].update(cpu="16", memory="64Gi")
        self.node, self.cms = n, {}

    crash: int | None = None  # max_num_seqs whose engine crash-loops
    serving: dict[str, Any] | None = None

    def nodes(self) -> list[dict[str, Any]]:
        return [self.node]

    def namespaced_pods(self, namespace: str, *, label_selector: str) -> list[dict[str, Any]]:
        if self.serving is None or self.serving["config"]["args"].get("max_num_seqs") != self.crash:
            return []
        waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
        return [{"metadata": {"name": "t-1"}, "status": {"containerStatuses": [{"restartCount": 3, "state": waiting}]}}]

    def pod_log(self, namespace: str, name: str, *, previous: bool = False, tail: int = 50) -> str:
        return "INFO starting\nRuntimeError: Engine core initialization failed\n"

    def pods(self) -> list[dict[str, Any]]:
        return []

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cms.get((namespace, name))

    def write_configmap(self, namespace: str, name: str, *, data: Any, labels: Any, annotations: Any, update: Any = None) -> None:
        self.cms[(namespace, name)] = {"metadata": {"name": name, "namespace": namespace}, "data": dict(data)}

    def delete_configmap(self, namespace: str, name: str) -> None:
        self.cms.pop((namespace, name), None)


class FakeHelm:
    """Installs by reading the trial's ConfigMap; its test records a benchmark whose throughput is
    a function of max_num_seqs (and fails the install when told to)."""

    def __init__(self, kube: FakeKube, *, interrupt_after: int | None = None, fail_install: int | None = None) -> None:
        self.kube, self.recipe, self.calls = kube, None, []
        self.interrupt_after, self.fail_install = interrupt_after, fail_install
        self.tests = 0
        self.noise: list[float] = []  # added to each run's throughput in turn

    def upgrade_install(
        self, *, release: str, chart: Path, namespace: str, values: Any, sets: Any, timeout_s: int, abort: Any = None
    ) -> HelmResult:
        self.calls.append(("install", list(sets)))
        cm = next(s.removeprefix("aim_engine.custom_recipe=") for s in sets if s.startswith("aim_engine.custom_recipe="))
        self.recipe = yaml.safe_load(self.kube.configmap(namespace, cm)["data"]["recipe.yaml"])
        self.kube.serving = self.recipe
        reason = abort() if abort is not None else None  # helm --wait polls it while the pods come up
        if reason:
            return HelmResult(ok=False, output=f"Error: {reason}")
        if self.recipe["config"]["args"].get("max_num_seqs") == self.fail_install:
            return HelmResult(ok=False, output="Error: UPGRADE FAILED: context deadline exceeded")
        return HelmResult(ok=True, output="deployed")

    def test(self, *, release: str, namespace: str, timeout_s: int) -> HelmResult:
        self.tests += 1
        if self.interrupt_after is not None and self.tests > self.interrupt_after:
            raise KeyboardInterrupt
        seqs = self.recipe["config"]["args"]["max_num_seqs"]
        rid = self.recipe["recipe_id"]
        name = f"{release}-recipe-benchmarks"
        cm = self.kube.configmap(namespace, name)
        history = parse_history((cm or {"data": {}})["data"].get("benchmarks.json"))
        noise = self.noise[(self.tests - 1) % len(self.noise)] if self.noise else 0.0
        record = measured(
            rid, tps=1000.0 + 50 * seqs + noise, itl_p95=seqs / 4, release=release, time=f"2026-11-28T10:{len(history):02d}:00Z"
        )
        self.kube.write_configmap(
            namespace, name, data={"benchmarks.json": with_result(history, record)}, labels={}, annotations={}
        )
        return HelmResult(ok=True, output="Phase: Succeeded")

    def uninstall(self, *, release: str, namespace: str, timeout_s: int = 300) -> HelmResult:
        self.calls.append(("uninstall", []))
        return HelmResult(ok=True, output="uninstalled")


@pytest.fixture
def edges(monkeypatch: pytest.MonkeyPatch) -> Any:
    kube = FakeKube()
    holder: dict[str, Any] = {"kube": kube, "helm": FakeHelm(kube)}
    from aim_engine.adapters import kube as kube_adapter

    monkeypatch.setattr(kube_adapter.Kube, "connect", classmethod(lambda cls, **_: holder["kube"]))

    def helm(**_: Any) -> FakeHelm:
        return holder["helm"]

    helm.find = lambda _binary: SimpleNamespace(binary="helm")  # type: ignore[attr-defined]
    monkeypatch.setattr(tune_cli, "Helm", helm)
    return holder


def tune(tmp_path: Path, *extra: str) -> int:
    argv = ["tune", "--recipe", TINY, "--namespace", "ns", "--release", "t", "--chart", str(ROOT / "chart")]
    return main([*argv, "--out", str(tmp_path / "out"), "--no-progress", *extra])


def test_a_tune_deploys_each_trial_keeps_the_best_and_reports(edges: Any, tmp_path: Path, capsys: Any) -> None:
    rc = tune(tmp_path, "--grid", "max_num_seqs=8,32,64", "--slo", "itl_p95_ms=10")
    out = capsys.readouterr().out
    assert rc == 0, out
    installs = [sets for what, sets in edges["helm"].calls if what == "install"]
    assert len(installs) == 4  # the baseline and three trials, one at a time
    assert "benchmark.concurrency=16" in installs[0] and "benchmark.request_rate=null" in installs[0]
    # Each trial its own custom recipe ConfigMap: a new value rolls the pods.
    cms = [s for sets in installs for s in sets if s.startswith("aim_engine.custom_recipe=")]
    assert len(set(cms)) == 4 and cms[0] == f"aim_engine.custom_recipe=t-trial-{trial_id(())}"
    # max_num_seqs 64 is fastest but its p95 ITL (16 ms) misses the SLO; 32 (8 ms) is the best that meets it.
    assert ", max_num_seqs=32: 2600 output tok/s (+44.4% on the baseline's 1800)" in out
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert len(state["trials"]) == 4
    tuned = yaml.safe_load((tmp_path / "out" / f"{TINY}-tuned.yaml").read_text())
    recipe_doc = yaml.safe_load(tuned["data"]["recipe.yaml"])
    assert recipe_doc["config"]["args"]["max_num_seqs"] == 32 and recipe_doc["performance"]["expected_tokens_per_second"] == 2600
    for name in ("report.md", "trials.csv", "tune.png", "tune.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert (tmp_path / "out" / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "out" / "tune.html").read_text()
    assert ("uninstall", []) in edges["helm"].calls
    assert not [name for _, name in edges["kube"].cms if "-trial-" in name]  # the trials' ConfigMaps are gone


def test_failed_trials_are_recorded_and_the_tune_goes_on(edges: Any, tmp_path: Path, capsys: Any) -> None:
    edges["helm"].fail_install = 8
    rc = tune(tmp_path, "--grid", "max_num_seqs=0,8,32")
    out = capsys.readouterr().out
    assert rc == 0
    trials = {tuple(map(tuple, t["params"])): t for t in json.loads((tmp_path / "out" / "state.json").read_text())["trials"]}
    # max_num_seqs=0 never reaches the cluster: the selector's own rules refuse it first.
    assert trials[(("max_num_seqs", 0),)]["outcome"] == "failed"
    assert trials[(("max_num_seqs", 0),)]["reason"].startswith("not deployed:")
    assert trials[(("max_num_seqs", 8),)]["reason"] == "install: Error: UPGRADE FAILED: context deadline exceeded"
    assert trials[(("max_num_seqs", 32),)]["outcome"] == "measured"
    assert "not deployed" in out
    # Resumed with --retry-failed, the failed trials run again (the install now succeeds).
    edges["helm"] = FakeHelm(edges["kube"])
    assert tune(tmp_path, "--grid", "max_num_seqs=0,8,32", "--retry-failed") == 0
    assert "2 to run now" in capsys.readouterr().out
    trials = {tuple(map(tuple, t["params"])): t for t in json.loads((tmp_path / "out" / "state.json").read_text())["trials"]}
    assert trials[(("max_num_seqs", 8),)]["outcome"] == "measured" and len(trials) == 4


def test_an_interrupted_tune_resumes_where_it_stopped(edges: Any, tmp_path: Path, capsys: Any) -> None:
    edges["helm"].interrupt_after = 2
    assert tune(tmp_path, "--grid", "max_num_seqs=8,32,64") == 130
    assert "run the same command again" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "out" / "state.json").read_text())["trials"]) == 2
    edges["helm"] = FakeHelm(edges["kube"])
    assert tune(tmp_path, "--grid", "max_num_seqs=8,32,64") == 0
    out = capsys.readouterr().out
    assert "resuming: 2 trial(s) done" in out and "2 to run now" in out
    assert len([c for c in edges["helm"].calls if c[0] == "install"]) == 2
    assert len(json.loads((tmp_path / "out" / "state.json").read_text())["trials"]) == 4
    # Nothing left: nothing deployed, nothing to uninstall; --retry-failed runs failed ones again.
    edges["helm"] = FakeHelm(edges["kube"])
    assert tune(tmp_path, "--grid", "max_num_seqs=8,32,64") == 0
    assert "0 to run now" in capsys.readouterr().out and edges["helm"].calls == []
    # Another grid against the same state file is refused, not mixed in.
    assert tune(tmp_path, "--grid", "max_num_seqs=128") == 2
    assert "holds another tune: grid differs" in capsys.readouterr().err


def test_the_trial_budget_counts_every_trial_recorded(edges: Any, tmp_path: Path, capsys: Any) -> None:
    assert tune(tmp_path, "--grid", "max_num_seqs=8,32,64", "--max-trials", "2") == 0
    assert len(json.loads((tmp_path / "out" / "state.json").read_text())["trials"]) == 2
    assert tune(tmp_path, "--grid", "max_num_seqs=8,32,64", "--max-trials", "3") == 0
    assert len(json.loads((tmp_path / "out" / "state.json").read_text())["trials"]) == 3
    assert "1 to run now" in capsys.readouterr().out


def test_a_grid_file_gives_the_grid_slo_and_budget(edges: Any, tmp_path: Path, capsys: Any) -> None:
    spec = tmp_path / "grid.yaml"
    spec.write_text("grid:\n  max_num_seqs: [8, 32]\nslo:\n  itl_p95_ms: 10\nbudget:\n  trials: 2\n")
    assert tune(tmp_path, "--grid-file", str(spec)) == 0
    assert len(json.loads((tmp_path / "out" / "state.json").read_text())["trials"]) == 2
    spec.write_text("grids: {}\n")
    assert tune(tmp_path, "--grid-file", str(spec)) == 2
    assert "expected one YAML mapping with a non-empty grid" in capsys.readouterr().err


def test_nothing_to_tune_and_a_bad_budget_are_errors(edges: Any, tmp_path: Path, capsys: Any) -> None:
    assert tune(tmp_path) == 2
    assert "nothing to tune" in capsys.readouterr().err
    assert tune(tmp_path, "--grid", "max_num_seqs=8", "--max-time", "soon") == 2
    assert "expected a duration" in capsys.readouterr().err


def test_a_crash_looping_engine_ends_its_trial_with_the_reason(edges: Any, tmp_path: Path, capsys: Any) -> None:
    edges["kube"].crash = 8
    assert tune(tmp_path, "--grid", "max_num_seqs=8,32") == 0
    trials = {tuple(map(tuple, t["params"])): t for t in json.loads((tmp_path / "out" / "state.json").read_text())["trials"]}
    assert trials[(("max_num_seqs", 8),)]["reason"] == (
        "install: Error: the engine crash-loops (3 restarts of pod t-1): RuntimeError: Engine core initialization failed"
    )
    assert trials[(("max_num_seqs", 32),)]["outcome"] == "measured"


def test_helm_is_ended_when_abort_says_why(tmp_path: Path) -> None:
    """The real subprocess: a long-running command ended at once by the abort callback."""
    from aim_engine.adapters.helm import Helm

    started = time.monotonic()
    out = Helm(binary="/bin/sleep")._run(["60"], timeout=120, abort=lambda: "the engine crash-loops")
    assert not out.ok and out.output.startswith("Error: the engine crash-loops") and time.monotonic() - started < 30
    assert Helm(binary="/bin/true")._run(["x"], timeout=10).ok


@pytest.mark.parametrize(
    ("noise", "verdict"),
    [
        # baseline (16 seqs) 1800 and 32 seqs 2600 before noise: runs 1800±100 and 2600±100 do not overlap.
        ([-100.0, 0.0, 100.0], "better beyond the run-to-run spread (runs 2500–2700 against the baseline's 1700–1900)"),
        # with ±900 they do: the median says +44 %, the runs do not back it.
        ([-900.0, 0.0, 900.0], "NOT measurably better: the runs overlap (runs 1700–3500 against the baseline's 900–2700)"),
    ],
)
def test_repeated_runs_tell_a_better_trial_from_noise(edges: Any, tmp_path: Path, capsys: Any, noise: Any, verdict: str) -> None:
    edges["helm"].noise = noise
    assert tune(tmp_path, "--grid", "max_num_seqs=32", "--repeats", "3") == 0
    out = capsys.readouterr().out
    assert verdict in out, out
    trial = json.loads((tmp_path / "out" / "state.json").read_text())["trials"][-1]
    assert len(trial["runs"]) == 3 and trial["result"]["figures"]["output_throughput"] == 2600.0  # the median run
    resumed = TuneState.from_json((tmp_path / "out" / "state.json").read_text(), where="state.json")
    assert resumed.trials[-1].throughputs == tuple(2600.0 + n for n in noise)  # every run kept


def test_one_run_each_says_to_repeat(edges: Any, tmp_path: Path, capsys: Any) -> None:
    assert tune(tmp_path, "--grid", "max_num_seqs=32") == 0
    assert "one run each: repeat (--repeats 3) to tell it from noise" in capsys.readouterr().out
