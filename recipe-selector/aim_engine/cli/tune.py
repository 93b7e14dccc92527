"""`aim-recipes tune`: seed 000's autotuner on the user's own cluster, through the chart and webhook.

For each combination of the grid (and first the recipe as written, the baseline), one at a time:
the trial's recipe is checked by the selector's own rules against the live cluster's free
capacity (a trial that cannot fit is recorded as failed, not deployed); it is written to a custom
recipe ConfigMap of its own and deployed with `helm upgrade --install ... --set
aim_engine.custom_recipe=...`, so the pods roll to it
(the selector hook, the webhook and the real pods); `helm test` measures it at the recipe's
stated conditions (vLLM's own client, recorded in <release>-recipe-benchmarks). A trial that fails
to install, to serve or to measure is recorded with the reason and the tune goes on. The state
file is rewritten after every trial, so an interrupted tune (Ctrl-C, a lost connection, the
budget) resumes where it stopped when run again with the same arguments.

The result: the best trial that meets the SLO (rules.tune) as a custom recipe ConfigMap in the
seed's format with its measured performance (`<out>/<recipe>-tuned.yaml`, ready for
aim_engine.custom_recipe), and a report of every trial (table, CSV, PNG and HTML plots)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from aim_engine.adapters.catalog import Bundle, load_bundle, load_recipe_file, parse_yaml_documents, read_document_text
from aim_engine.adapters.helm import Helm
from aim_engine.adapters.render import to_yaml
from aim_engine.adapters.tune_report import rows, table, write_report
from aim_engine.cluster.inventory import DEFAULT_TOLERATED_TAINTS, build_inventory
from aim_engine.contract import APP_NAME, BENCHMARKS_KEY, COMPONENT_LABEL, INSTANCE_LABEL, NAME_LABEL, benchmarks_name
from aim_engine.domain.benchmark import parse_history
from aim_engine.domain.errors import InputError
from aim_engine.domain.recipe import Recipe
from aim_engine.domain.tuning import Params, Trial, TuneState, median_run, params_text, parse_grid, trial_id, trial_recipe
from aim_engine.rules.perf import recipe_conditions
from aim_engine.rules.slo import SLO_KEYS, Slo, parse_slo, slo_bounds_text
from aim_engine.rules.tune import best, beyond_noise, judge, tuned_recipe
from aim_engine.selection.selector import Request, Selection, select

log = logging.getLogger("aim_engine.tune")
EXIT_OK, EXIT_NONE_MEETS, EXIT_INTERRUPTED = 0, 1, 130
CRASHES = 2  # restarts of the serving container that end a trial without waiting out its timeout


def add_parser(sub: Any, *, positive: Any) -> None:
    t = sub.add_parser("tune", help="search vLLM settings on the live cluster: deploy, benchmark, keep the best (seed 000)")
    t.add_argument("--model", help="the model to tune (default: the model of --recipe / --recipe-file)")
    t.add_argument("--recipe", metavar="RECIPE_ID", help="the catalog recipe to start from (default: what select picks here)")
    t.add_argument("--recipe-file", type=Path, help="start from a custom recipe (file or ConfigMap)")
    t.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2", help="an axis: a vLLM argument or env.NAME")
    t.add_argument("--grid-file", type=Path, help="YAML: grid: {max_num_seqs: [16, 32]}, slo: {...}, budget: {trials, time}")
    t.add_argument(
        "--slo",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"{', '.join(SLO_KEYS)}; each within: {slo_bounds_text()}",
    )
    t.add_argument("--max-trials", type=positive, help="budget: trials in all (the baseline counts), resumed ones included")
    t.add_argument("--max-time", help="budget: wall-clock for this run (90s, 30m, 2h); no trial starts after it")
    t.add_argument("--release", default="aim-tune", help="the release the trials are deployed as (default aim-tune)")
    t.add_argument("--namespace", required=True)
    t.add_argument("--chart", type=Path, default=Path("chart"), help="the aim-engine chart (default ./chart)")
    t.add_argument("-f", "--values", action="append", type=Path, default=[], help="values for every trial (helm -f)")
    t.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE", help="helm --set for every trial")
    t.add_argument("--num-prompts", type=positive, help="requests per benchmark (default: the chart's)")
    t.add_argument(
        "--repeats",
        type=positive,
        default=1,
        help="benchmarks per trial (default 1); with 2 or more a trial is its median run, and the best is called "
        "better than the baseline only when its slowest run beats the baseline's fastest",
    )
    t.add_argument("--trial-timeout", type=positive, default=900, help="seconds for each install and each benchmark")
    t.add_argument("--out", type=Path, default=Path("tune-out"), help="report and tuned recipe (default ./tune-out)")
    t.add_argument("--state", type=Path, help="the resumable state (default <out>/state.json)")
    t.add_argument("--retry-failed", action="store_true", help="when resuming, run the failed trials again")
    t.add_argument("--keep-release", action="store_true", help="leave the last trial's release installed")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--helm", help="helm binary (default: helm on PATH)")
    t.add_argument("--kubeconfig")
    t.add_argument("--context")


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise InputError(f"--max-time {text!r}: expected a duration such as 90s, 30m or 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _grid_file(path: Path) -> dict[str, Any]:
    docs = parse_yaml_documents(read_document_text(path), where=str(path))
    doc = docs[0] if len(docs) == 1 and isinstance(docs[0], dict) else None
    if doc is None or not isinstance(doc.get("grid"), dict) or not doc["grid"]:
        raise InputError(f"{path}: expected one YAML mapping with a non-empty grid: {{NAME: [values]}}")
    unknown = set(doc) - {"grid", "slo", "budget"}
    if unknown:
        raise InputError(f"{path}: unknown keys {', '.join(sorted(unknown))} (grid, slo, budget)")
    return doc


def _base_recipe(args: argparse.Namespace, bundle: Bundle, kube: Any) -> Recipe:
    if args.recipe_file is not None:
        found: list[Recipe] = load_recipe_file(bundle, args.recipe_file)
        if len(found) != 1:
            raise InputError(f"{args.recipe_file}: holds {len(found)} recipes; tune one at a time")
        return found[0]
    if args.recipe:
        for r in bundle.recipes:
            if r.recipe_id == args.recipe:
                return r
        raise InputError(f"no recipe {args.recipe!r} in the catalog (aim-recipes list --model {args.model or '...'})")
    if not args.model:
        raise InputError("--model is required (or --recipe / --recipe-file)")
    sel = _select(bundle, kube, args, model_id=args.model, pinned=None)
    if sel.recipe is None:
        raise InputError(f"nothing to tune from: {sel.message}")
    log.info("tuning from %s, what select picks here", sel.recipe.recipe_id)
    return sel.recipe


def _select(bundle: Bundle, kube: Any, args: argparse.Namespace, *, model_id: str, pinned: Recipe | None) -> Selection:
    """The selector's own verdict on the live cluster; the release's own pods count as free."""
    inv = build_inventory(
        bundle.hardware,
        kube.nodes(),
        kube.pods(),
        reclaim_selector={INSTANCE_LABEL: args.release},
        tolerated_taints=DEFAULT_TOLERATED_TAINTS,
    )
    return select(
        # A trial targets its recipe's hardware (a CPU recipe on a cluster with GPUs too).
        request=Request(model_id=model_id, custom_recipe=pinned, gpu_type=pinned.hardware if pinned else None),
        recipes=bundle.recipes,
        models=bundle.model_map(),
        catalog=bundle.hardware,
        registry=bundle.registry,
        inventory=inv,
    )


class Runner:
    """Runs one trial at a time on the live cluster (the edges: Kubernetes, Helm)."""

    def __init__(self, args: argparse.Namespace, bundle: Bundle, kube: Any, helm: Any, base: Recipe) -> None:
        self.args, self.bundle, self.kube, self.helm, self.base = args, bundle, kube, helm, base
        self.trial_cms: list[str] = []
        self.deployed = False  # whether this run installed anything (to uninstall)
        conditions = recipe_conditions(base)
        self.bench_sets = [
            f"benchmark.input_tokens={conditions['input_tokens']}",
            f"benchmark.output_tokens={conditions['output_tokens']}",
            f"benchmark.concurrency={conditions['concurrency']}",
            "benchmark.request_rate=null",
            f"benchmark.timeout_seconds={args.trial_timeout}",
            *([f"benchmark.num_prompts={args.num_prompts}"] if args.num_prompts else []),
        ]

    def run(self, params: Params) -> Trial:
        started = time.monotonic()
        tid = trial_id(params)

        def failed(reason: str) -> Trial:
            log.warning("trial %s (%s) failed: %s", tid, params_text(params), reason)
            return Trial(trial_id=tid, params=params, outcome="failed", seconds=time.monotonic() - started, reason=reason)

        recipe = trial_recipe(self.base, params)
        sel = _select(self.bundle, self.kube, self.args, model_id=recipe.huggingface_id, pinned=recipe)
        if sel.recipe is None:
            return failed(f"not deployed: {sel.message}")
        # One ConfigMap per trial: a new aim_engine.custom_recipe value rolls the pods (the chart's
        # selection-inputs checksum), so each trial is served by pods created with its recipe.
        cm_name = f"{self.args.release}-trial-{tid}"
        previous, self.trial_cms = self.trial_cms, [cm_name]
        self.kube.write_configmap(
            self.args.namespace,
            cm_name,
            data={"recipe.yaml": to_yaml(recipe.to_seed())},
            labels={NAME_LABEL: APP_NAME, INSTANCE_LABEL: self.args.release, COMPONENT_LABEL: "tune-trial"},
            annotations={},
        )
        before = {r.provenance.time for r in self._history()}
        self.deployed = True
        install = self.helm.upgrade_install(
            release=self.args.release,
            chart=self.args.chart,
            namespace=self.args.namespace,
            values=self.args.values,
            sets=[
                *self.args.sets,
                f"aim_engine.model_id={recipe.huggingface_id}",
                f"aim_engine.custom_recipe={cm_name}",
                f"aim_engine.hardware.gpu_type={recipe.hardware}",
                *self.bench_sets,
            ],
            timeout_s=self.args.trial_timeout,
            abort=self._crash_looping,
        )
        for name in previous:  # the last trial's recipe, no longer named by the release
            self.kube.delete_configmap(self.args.namespace, name)
        if not install.ok:
            return failed(f"install: {install.error()}")
        runs = []
        for _ in range(self.args.repeats):
            test = self.helm.test(
                release=self.args.release, namespace=self.args.namespace, timeout_s=self.args.trial_timeout + 120
            )
            fresh = [r for r in self._history() if r.provenance.time not in before]
            before |= {r.provenance.time for r in fresh}
            new = [r for r in fresh if r.provenance.recipe_id == recipe.recipe_id]
            if not new:
                if fresh:
                    other = fresh[-1].provenance.recipe_id
                    return failed(f"benchmark: it measured recipe {other}, not this trial's (pods not rolled?)")
                return failed(f"benchmark: no record ({test.error()})")
            if new[-1].outcome != "measured":
                return failed(f"benchmark: {new[-1].reason}")
            runs.append(new[-1])
        return Trial(
            trial_id=tid,
            params=params,
            outcome="measured",
            seconds=time.monotonic() - started,
            result=median_run(runs),
            runs=tuple(runs),
        )

    def _crash_looping(self) -> str | None:
        """Why the trial's engine will not come up, when its pod crash-loops: the reason and the
        last error line of its previous run (what a failed trial then reports)."""
        selector = f"{INSTANCE_LABEL}={self.args.release},{COMPONENT_LABEL}=inference"
        for pod in self.kube.namespaced_pods(self.args.namespace, label_selector=selector):
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") == "CrashLoopBackOff" or int(status.get("restartCount") or 0) >= CRASHES:
                    name = pod["metadata"]["name"]
                    lines = [ln for ln in self.kube.pod_log(self.args.namespace, name, previous=True).splitlines() if ln.strip()]
                    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
                    last = (errors or lines or ["no log"])[-1].strip()[-300:]
                    return f"the engine crash-loops ({status.get('restartCount', 0)} restarts of pod {name}): {last}"
        return None

    def _history(self) -> list[Any]:
        cm = self.kube.configmap(self.args.namespace, benchmarks_name(self.args.release))
        return parse_history(((cm or {}).get("data") or {}).get(BENCHMARKS_KEY))

    def clean_up(self) -> None:
        if self.deployed and not self.args.keep_release:
            out = self.helm.uninstall(release=self.args.release, namespace=self.args.namespace)
            if not out.ok:
                log.warning("helm uninstall %s: %s", self.args.release, out.error())
        for name in self.trial_cms:
            self.kube.delete_configmap(self.args.namespace, name)


def _save(state: TuneState, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def cmd_tune(args: argparse.Namespace) -> int:
    from aim_engine.adapters.kube import Kube

    grid_specs, slo_pairs = list(args.grid), list(args.slo)
    budget: dict[str, Any] = {}
    if args.grid_file is not None:
        doc = _grid_file(args.grid_file)
        grid_specs += [
            f"{k}={','.join(str(v).lower() if isinstance(v, bool) else str(v) for v in vs)}" for k, vs in doc["grid"].items()
        ]
        slo_pairs += [f"{k}={v}" for k, v in (doc.get("slo") or {}).items() if v is not None]
        budget = doc.get("budget") or {}
    grid = parse_grid(grid_specs)
    if not grid:
        raise InputError("nothing to tune: give --grid NAME=V1,V2 (e.g. --grid max_num_seqs=16,32,64) or --grid-file")
    slo: Slo = parse_slo(slo_pairs)
    max_trials = args.max_trials or budget.get("trials")
    max_time = parse_duration(args.max_time or str(budget.get("time", "0"))) or None
    if not (args.chart / "Chart.yaml").exists():
        raise InputError(f"{args.chart}: not a chart (no Chart.yaml); pass --chart PATH to aim-engine's chart")
    try:
        import matplotlib  # noqa: F401  (the report's plots)
    except ImportError as e:
        raise InputError("aim-recipes tune draws its report with matplotlib: pip install 'aim-engine[tune]'") from e
    helm = Helm(binary=Helm.find(args.helm).binary, kubeconfig=args.kubeconfig, context=args.context)
    catalog = args.catalog  # the global option (default $AIM_RECIPES_DIR, checked by the parser)
    bundle = load_bundle(catalog)
    kube = Kube.connect(kubeconfig=args.kubeconfig, context=args.context)
    base = _base_recipe(args, bundle, kube)
    state_path = args.state or args.out / "state.json"
    fresh = TuneState(
        model_id=base.huggingface_id, base_recipe_id=base.recipe_id, grid=grid, release=args.release, namespace=args.namespace
    )
    state = fresh
    if state_path.exists():
        state = TuneState.from_json(state_path.read_text(), where=str(state_path))
        differs = state.same_tune(fresh)
        if differs:
            raise InputError(f"{state_path} holds another tune: {differs}; remove it or pass --state for a new one")
        print(f"resuming: {len(state.trials)} trial(s) done in {state_path}", flush=True)
    pending = state.pending(retry_failed=args.retry_failed)
    if max_trials is not None:
        recorded = len(state.done() - {trial_id(p) for p in pending})
        pending = pending[: max(0, int(max_trials) - recorded)]
    print(
        f"tuning {base.recipe_id} ({base.huggingface_id}) as release {args.namespace}/{args.release}: "
        f"{len(state.done() | {trial_id(p) for p in state.pending()})} trial(s) in the grid with the baseline, "
        f"{len(pending)} to run now" + (f"; SLO {slo.text()}" if slo else ""),
        flush=True,
    )
    runner = Runner(args, bundle, kube, helm, base)
    started = time.monotonic()
    interrupted = stopped = False
    bar = _progress(len(pending), disable=args.no_progress)
    try:
        for params in pending:
            if max_time is not None and time.monotonic() - started > max_time:
                stopped = True
                break
            bar.set_description(params_text(params)[:40])
            trial = runner.run(params)
            state.record(trial)
            _save(state, state_path)
            tps = trial.result.figures.get("output_throughput") if trial.result else None
            runs = f" (runs {_range(trial.throughputs)})" if len(trial.throughputs) > 1 else ""
            bar.write(f"trial {trial.trial_id} {params_text(params)}: " + (f"{tps:.0f} tok/s{runs}" if tps else trial.reason))
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        _save(state, state_path)
        if not interrupted:
            runner.clean_up()
    judged = judge(base, state, slo)
    baseline_id = trial_id(())
    chosen = best(judged)
    title = f"aim-recipes tune: {base.recipe_id}"
    print(table(rows(judged, baseline_id=baseline_id, best_id=chosen.trial.trial_id if chosen else None)))
    paths = write_report(
        args.out, judged, slo, baseline_id=baseline_id, best_id=chosen.trial.trial_id if chosen else None, title=title
    )
    print("report: " + ", ".join(str(p) for p in paths))
    if interrupted or stopped:
        why = "interrupted" if interrupted else f"wall-clock budget of {args.max_time or budget.get('time')} spent"
        print(f"{why}: {len(state.trials)} trial(s) recorded in {state_path}; run the same command again to go on", flush=True)
    if chosen is None:
        print("no trial meets the SLO" if slo else "no trial measured anything", flush=True)
        return EXIT_INTERRUPTED if interrupted else EXIT_NONE_MEETS
    tuned = tuned_recipe(base, chosen)
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": tuned.recipe_id, "labels": {NAME_LABEL: APP_NAME, COMPONENT_LABEL: "custom-recipe"}},
        "data": {"recipe.yaml": to_yaml(tuned.to_seed())},
    }
    out_cm = args.out / f"{tuned.recipe_id}.yaml"
    out_cm.write_text(yaml.safe_dump(cm, sort_keys=False))
    base_trial = next((j for j in judged if j.trial.trial_id == baseline_id and j.tokens_per_second), None)
    gain = ""
    if base_trial is not None:
        ratio = chosen.tokens_per_second / base_trial.tokens_per_second - 1
        gain = f" ({ratio:+.1%} on the baseline's {base_trial.tokens_per_second:.0f})"
        if chosen is not base_trial:
            spread = f"runs {_range(chosen.trial.throughputs)} against the baseline's {_range(base_trial.trial.throughputs)}"
            if beyond_noise(chosen, base_trial):
                gain += f"; better beyond the run-to-run spread ({spread})"
            elif args.repeats > 1:
                gain += f"; NOT measurably better: the runs overlap ({spread})"
            else:
                gain += "; one run each: repeat (--repeats 3) to tell it from noise"
    print(
        f"best: trial {chosen.trial.trial_id}, {params_text(chosen.trial.params)}: "
        f"{chosen.tokens_per_second:.0f} output tok/s{gain}\n"
        f"custom recipe: {out_cm} — kubectl apply -n NAMESPACE -f {out_cm}; "
        f"helm upgrade RELEASE chart --set aim_engine.custom_recipe={tuned.recipe_id}",
        flush=True,
    )
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _range(values: tuple[float, ...]) -> str:
    return f"{min(values):.0f}–{max(values):.0f}" if values else "-"


class _NoBar:
    def set_description(self, _: str) -> None: ...
    def update(self, _: int) -> None: ...
    def close(self) -> None: ...

    @staticmethod
    def write(text: str) -> None:
        print(text, flush=True)


def _progress(total: int, *, disable: bool) -> Any:
    if disable:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # the [tune] extra is not installed: plain lines instead
        return _NoBar()
    return tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True)
