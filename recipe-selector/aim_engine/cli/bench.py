"""`aim-recipes bench`: record and show a release's benchmark results.

`bench record` runs in the chart's `helm test` pod after vLLM's own client (`vllm bench serve`) has
run against the release's Service: it turns the client's result file (or its absence, or its
errors) into a record with its provenance and conditions (aim_engine.domain.benchmark), appends it
to the release's history ConfigMap `<release>-recipe-benchmarks` (key benchmarks.json, the newest
20 kept), and exits 1 when the run measured nothing, so `helm test` fails with the reason. The
webhook exports the history as aim_recipe_measured_* series. `bench show` prints a history."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aim_engine.contract import (
    APP_NAME,
    BENCHMARKS_COMPONENT,
    BENCHMARKS_KEY,
    COMPONENT_LABEL,
    GPU_MODEL_LABEL,
    INSTANCE_LABEL,
    NAME_LABEL,
    RECIPE_LABEL,
    SELECTED,
    SIMULATOR_PROGRAM,
    benchmarks_name,
)
from aim_engine.domain.benchmark import BenchmarkResult, Conditions, Provenance, from_client, parse_history, with_result
from aim_engine.domain.errors import InputError

EXIT_OK, EXIT_FAILED = 0, 1


def add_parser(sub: Any, *, positive: Any) -> None:
    bench = sub.add_parser("bench", help="record or show a release's benchmark results (helm test)")
    bsub = bench.add_subparsers(dest="bench_command", required=True, parser_class=type(bench))

    rec = bsub.add_parser("record", help="record a vllm bench serve result in <release>-recipe-benchmarks")
    rec.add_argument("--release", required=True)
    rec.add_argument("--namespace", required=True)
    rec.add_argument("--result", type=Path, required=True, help="vllm bench serve's --save-result file (may be missing)")
    rec.add_argument("--client-exit", type=int, default=0, help="the client's exit status")
    rec.add_argument("--client-exit-file", type=Path, help="a file holding the client's exit status (missing: it never finished)")
    rec.add_argument("--client-log", type=Path, help="the client's output: its last lines explain a failure")
    rec.add_argument("--engine-version-file", type=Path, help="output of `vllm --version` in the serving image")
    rec.add_argument("--input-tokens", type=positive, required=True)
    rec.add_argument("--output-tokens", type=positive, required=True)
    rec.add_argument("--concurrency", type=positive, required=True)
    rec.add_argument("--num-prompts", type=positive, required=True)
    rec.add_argument("--request-rate", default="inf", help="requests/s, or inf")
    rec.add_argument("--max-error-ratio", type=float, default=0.0, help="failed/total above this records a failure")
    rec.add_argument("--image", default="", help="the serving image")
    rec.add_argument("--node", default=os.environ.get("NODE_NAME", ""), help="the node (default $NODE_NAME)")
    rec.add_argument("--recipe-id", help="default: the aim-engine.io/recipe-id label of the release's serving pods")
    rec.add_argument("--hardware", help="default: the aim-engine.io/gpu-model label of the release's serving pods")
    rec.add_argument("--dry-run", action="store_true", help="print the record, write nothing")
    rec.add_argument("--kubeconfig")
    rec.add_argument("--context")

    show = bsub.add_parser("show", help="a release's benchmark history")
    show.add_argument("--release", required=True)
    show.add_argument("--namespace", required=True)
    show.add_argument("-o", "--output", choices=["table", "json"], default="table")
    show.add_argument("--kubeconfig")
    show.add_argument("--context")


def cmd_bench(args: argparse.Namespace) -> int:
    return _record(args) if args.bench_command == "record" else _show(args)


def _rate(text: str) -> float | None:
    if text.strip().lower() in ("inf", ""):
        return None
    try:
        rate = float(text)
    except ValueError:
        raise InputError(f"--request-rate {text!r}: give a number of requests per second, or inf") from None
    if not math.isfinite(rate) or rate <= 0:
        raise InputError(f"--request-rate {text!r} must be above 0 (or inf)")
    return rate


def _serving_labels(kube: Any, namespace: str, release: str) -> dict[str, str]:
    selector = f"{NAME_LABEL}={APP_NAME},{INSTANCE_LABEL}={release},{COMPONENT_LABEL}=inference"
    for pod in kube.namespaced_pods(namespace, label_selector=selector):
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(RECIPE_LABEL) and labels[RECIPE_LABEL] != SELECTED:
            return dict(labels)
    return {}


def _tail(path: Path | None, lines: int = 3) -> str:
    """What the client's output says went wrong: its last error line (a traceback ends with the
    exception), else its last lines."""
    if path is None or not path.exists():
        return ""
    text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in text if "Error" in ln or "error:" in ln or "Exception" in ln]
    return (errors[-1] if errors else " | ".join(text[-lines:]))[-600:]


def _record(args: argparse.Namespace) -> int:
    if not 0 <= args.max_error_ratio < 1:
        raise InputError(f"--max-error-ratio {args.max_error_ratio} must be in [0, 1)")
    kube = None if args.dry_run and args.recipe_id and args.hardware else _kube(args)
    labels = (
        _serving_labels(kube, args.namespace, args.release) if kube is not None and not (args.recipe_id and args.hardware) else {}
    )
    version = (
        args.engine_version_file.read_text().strip().splitlines()[-1]
        if args.engine_version_file and args.engine_version_file.exists()
        else ""
    )
    provenance = Provenance(
        release=args.release,
        namespace=args.namespace,
        recipe_id=args.recipe_id or labels.get(RECIPE_LABEL, "unknown"),
        hardware=args.hardware or labels.get(GPU_MODEL_LABEL, "unknown"),
        node=args.node,
        image=args.image,
        engine_version=f"vllm {version}" if version and not version.startswith(("vllm", SIMULATOR_PROGRAM)) else version,
        client="vllm bench serve",
        time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    conditions = Conditions(
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        concurrency=args.concurrency,
        request_rate=_rate(args.request_rate),
        num_prompts=args.num_prompts,
    )
    raw: dict[str, Any] | None = None
    client_error = ""
    exit_code = args.client_exit
    if args.client_exit_file is not None:
        try:
            exit_code = int(args.client_exit_file.read_text().strip())
        except (OSError, ValueError):
            exit_code = -1  # it never finished, or wrote nothing readable
    if exit_code != 0:
        client_error = f"the benchmark client exited {exit_code}: {_tail(args.client_log) or 'no output'}"
    if args.result.exists():
        try:
            raw = json.loads(args.result.read_text())
        except ValueError as e:
            client_error = client_error or f"unreadable result file {args.result} ({e})"
    result = from_client(
        raw, conditions=conditions, provenance=provenance, max_error_ratio=args.max_error_ratio, client_error=client_error
    )
    if exit_code != 0 and result.outcome == "measured":
        result = from_client(None, conditions=conditions, provenance=provenance, max_error_ratio=0, client_error=client_error)
    print("aim-benchmark-record: " + json.dumps(result.to_json(), sort_keys=True), flush=True)
    if not args.dry_run and kube is not None:
        name = benchmarks_name(args.release)

        def update(current: dict[str, Any] | None) -> dict[str, str]:
            data = dict((current or {}).get("data") or {})
            try:
                history = parse_history(data.get(BENCHMARKS_KEY))
            except InputError:
                history = []  # an unreadable history is replaced, not appended to
            data[BENCHMARKS_KEY] = with_result(history, result)
            return data

        kube.write_configmap(
            args.namespace,
            name,
            data={},
            labels={NAME_LABEL: APP_NAME, INSTANCE_LABEL: args.release, COMPONENT_LABEL: BENCHMARKS_COMPONENT},
            annotations={},
            update=update,
        )
        print(f"recorded in configmap/{name} (namespace {args.namespace})", flush=True)
    if result.outcome == "failed":
        sys.stderr.write(f"aim-recipes: benchmark failed: {result.reason}\n")
        return EXIT_FAILED
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    kube = _kube(args)
    cm = kube.configmap(args.namespace, benchmarks_name(args.release))
    history = parse_history(((cm or {}).get("data") or {}).get(BENCHMARKS_KEY))
    if args.output == "json":
        print(json.dumps([r.to_json() for r in history], indent=2, sort_keys=True))
        return EXIT_OK
    if not history:
        hint = f"helm test {args.release} -n {args.namespace}"
        print(f"no benchmark recorded for release {args.release} in {args.namespace}: run `{hint}`")
        return EXIT_OK
    print(_table(history))
    return EXIT_OK


def _table(history: list[BenchmarkResult]) -> str:
    rows = [("time", "recipe", "hardware", "in/out", "conc", "rate", "outcome", "out tok/s", "TTFT p50/p99 ms", "ITL p50/p99 ms")]
    for r in history:
        c, f = r.conditions, r.figures
        rows.append(
            (
                r.provenance.time,
                r.provenance.recipe_id,
                r.provenance.hardware,
                f"{c.input_tokens}/{c.output_tokens}",
                str(c.concurrency),
                "inf" if c.request_rate is None else f"{c.request_rate:g}",
                r.outcome if r.outcome == "measured" else f"failed: {r.reason}",
                f"{f['output_throughput']:.0f}" if "output_throughput" in f else "-",
                f"{f.get('p50_ttft_ms', 0):.0f}/{f.get('p99_ttft_ms', 0):.0f}" if f else "-",
                f"{f.get('p50_itl_ms', 0):.1f}/{f.get('p99_itl_ms', 0):.1f}" if f else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _kube(args: argparse.Namespace) -> Any:
    from aim_engine.adapters.kube import Kube

    return Kube.connect(kubeconfig=args.kubeconfig, context=args.context)
