"""aim-recipes: list, show, validate, detect, select, place, estimate, metrics, bench, tune.

Exit codes: 0 success; 1 no recipe fits, or validation failed; 2 usage or system error.
No traceback is shown for a user error; set AIM_DEBUG=1 to see one for a system error."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aim_engine import __version__
from aim_engine.adapters.benchmarks import describe, read_benchmark_configmaps, read_benchmark_files
from aim_engine.adapters.catalog import (
    Bundle,
    load_bundle,
    load_recipe_file,
    parse_yaml_documents,
    read_model_config,
    recipe_documents,
    typed_recipe,
)
from aim_engine.adapters.metrics import SelectionCollector, updated_counts
from aim_engine.adapters.render import (
    explanation,
    helm_values,
    inventory_dict,
    inventory_table,
    lint_table,
    recipes_table,
    selection_dict,
    to_json,
    to_yaml,
    vllm_command,
)
from aim_engine.cli.bench import add_parser as add_bench_parser
from aim_engine.cli.bench import cmd_bench
from aim_engine.cli.collector import collector_paused
from aim_engine.cli.tune import add_parser as add_tune_parser
from aim_engine.cli.tune import cmd_tune
from aim_engine.cluster.inventory import DEFAULT_TOLERATED_TAINTS, Inventory, build_inventory, product_node_affinity, split_list
from aim_engine.contract import (
    EXPLANATION_KEY,
    LAST_ATTEMPT_JSON_KEY,
    LAST_ATTEMPT_TEXT_KEY,
    MODE_KEY,
    NODE_AFFINITY_KEY,
    PLACEMENT_KEY,
    RECIPE_CONFIG_SELECTOR,
    RECIPE_KEY,
    RECIPE_LABEL,
    SELECTION_KEY,
    SELECTION_LEVEL_ANNOTATION,
    SELECTION_METRICS_KEY,
    SELECTION_RESULT_ANNOTATION,
    UPGRADE_KEY,
    recipe_config_labels,
    release_of,
)
from aim_engine.domain.errors import AimError, InputError
from aim_engine.domain.hardware import PRECISIONS, HardwareCatalog
from aim_engine.domain.models import ModelProfile
from aim_engine.domain.quantity import parse_quantity
from aim_engine.domain.recipe import Recipe
from aim_engine.rules.evidence import FIGURES, Measurements, apply_measurements, figure_provenance, match_findings
from aim_engine.rules.lint import lint_recipes
from aim_engine.rules.memory import cache_shortfall
from aim_engine.rules.perf import METHOD, estimate_recipe, recipe_conditions
from aim_engine.rules.slo import CLI_NAMES, SLO_KEYS, VALUES_NAMES, parse_slo, slo_bounds_text
from aim_engine.selection.selector import Request, Selection, select
from aim_engine.selection.upgrade import UpgradePlan, plan_upgrade

log = logging.getLogger("aim_engine")
EXIT_OK, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_ERROR)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("recipe_id", "result", "level_name", "model", "namespace", "configmap"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        return json.dumps(out)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return n


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r}: expected KEY=VALUE")
    return key, val


def _directory(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is no directory")
    return path


def _env_directory(name: str) -> Path | None:
    """An environment default checked as the flag is: a bad value is one line and exit 2."""
    value = os.environ.get(name)
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        sys.stderr.write(f"aim-recipes: error: ${name}={value!r} is no directory (unset it or point it at a recipes directory)\n")
        raise SystemExit(EXIT_ERROR)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The global options, then each subcommand's own (add_<command>, beside its cmd_<command>)."""
    p = _Parser(prog="aim-recipes", description="Recipe catalog and selector for vLLM on AMD Instinct and NVIDIA GPUs.")
    p.add_argument("--version", action="version", version=f"aim-recipes {__version__}")
    p.add_argument(
        "--catalog",
        type=_directory,
        default=_env_directory("AIM_RECIPES_DIR"),
        help="recipes directory (default: $AIM_RECIPES_DIR or the bundled catalog)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_list(sub)
    add_show(sub)
    add_validate(sub)
    add_detect(sub)
    add_select(sub)
    add_place(sub)
    add_estimate(sub)
    add_bench_parser(sub, positive=_positive)
    add_tune_parser(sub, positive=_positive)
    add_metrics(sub)
    return p


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--benchmarks",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="measurements that replace comparable recipes' figures: benchmarks.json, `aim-recipes bench show -o json`, "
        "or a <release>-recipe-benchmarks ConfigMap (repeatable)",
    )


def _measurements(args: argparse.Namespace, kube: Any | None = None) -> Measurements:
    found = read_benchmark_files(args.benchmarks)
    names = getattr(args, "benchmarks_configmap", [])
    if names:
        if kube is None:
            raise InputError(
                "--benchmarks-configmap reads the live cluster; with --cluster pass the ConfigMap as --benchmarks FILE"
            )
        found += read_benchmark_configmaps(kube, _namespace(args), names)
    if found:
        log.info("benchmark records read: %s", describe(found))
    return Measurements(found)


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster", type=Path, help="snapshot: output of `kubectl get nodes,pods -A -o json`; default: the live cluster"
    )
    p.add_argument("--kubeconfig", help="kubeconfig for the live cluster (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--namespace", help="namespace for ConfigMaps (default: the pod's own namespace)")
    p.add_argument(
        "--reclaim-label",
        action="append",
        type=_label,
        default=[],
        metavar="KEY=VALUE",
        help="pods with these labels do not count as using GPUs (the release's own workload, replaced by an upgrade)",
    )
    p.add_argument("--ignore-usage", action="store_true", help="count allocatable GPUs, not free ones")
    p.add_argument(
        "--tolerate-taint",
        action="append",
        default=[],
        metavar="KEY",
        help="a taint key the workload tolerates (* for every taint); the chart passes workload.tolerations' keys",
    )


def _hook_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pod-name",
        help="hook mode: this pod's name; a failure is then recorded as an Event on the Job that owns it (kubectl describe job)",
    )
    p.add_argument(
        "--termination-log",
        type=Path,
        help="hook mode: write a failure's reason here (the container's terminationMessagePath, shown by kubectl describe pod)",
    )


def _bundle(args: argparse.Namespace) -> Bundle:
    return load_bundle(args.catalog)


def _kube(args: argparse.Namespace) -> Any:
    from aim_engine.adapters.kube import Kube

    return Kube.connect(kubeconfig=args.kubeconfig, context=args.context)


def _inventory(args: argparse.Namespace, bundle: Bundle, kube: Any | None, *, reclaim: bool = True) -> Inventory:
    from aim_engine.adapters.catalog import load_json

    if args.cluster is not None:
        nodes, pods = split_list(load_json(args.cluster))
    else:
        assert kube is not None
        nodes, pods = kube.nodes(), kube.pods()
    # The cluster's objects (acyclic JSON, freed by reference counting once the inventory exists)
    # would otherwise be scanned by every full collection the inventory's allocations trigger.
    gc.freeze()
    with collector_paused():
        return build_inventory(
            bundle.hardware,
            nodes,
            pods,
            reclaim_selector=(dict(args.reclaim_label) or None) if reclaim else None,
            tolerated_taints=DEFAULT_TOLERATED_TAINTS | frozenset(args.tolerate_taint),
            node_selector=dict(getattr(args, "node_selector", None) or []) or None,
            ignore_usage=args.ignore_usage,
        )


def _namespace(args: argparse.Namespace) -> str:
    from aim_engine.adapters.kube import own_namespace

    ns = args.namespace or own_namespace()
    if not ns:
        raise InputError("--namespace is required outside a pod")
    return str(ns)


def add_list(sub: Any) -> None:
    """`aim-recipes list`: its arguments, beside cmd_list."""
    ls = sub.add_parser("list", help="list catalog recipes")
    ls.add_argument("--model", help="only recipes for this model")
    ls.add_argument("--hardware", help="only recipes for this GPU product")
    ls.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    _benchmark_args(ls)


def cmd_list(args: argparse.Namespace) -> int:
    bundle = _bundle(args)
    recipes = [
        r
        for r in bundle.recipes
        if (not args.model or r.model_key == args.model.lower())
        and (not args.hardware or r.hardware.upper() == args.hardware.upper())
    ]
    recipes = list(apply_measurements(recipes, _measurements(args)).recipes)
    if args.output == "json":
        sys.stdout.write(to_json([r.to_seed() for r in recipes]))
    elif args.output == "yaml":
        sys.stdout.write(to_yaml([r.to_seed() for r in recipes]))
    else:
        sys.stdout.write(recipes_table(recipes))
    return EXIT_OK


def _find(bundle: Bundle, recipe_id: str) -> Recipe:
    for r in bundle.recipes:
        if r.recipe_id == recipe_id:
            return r
    close = sorted(r.recipe_id for r in bundle.recipes if recipe_id.split("-", maxsplit=1)[0] in r.recipe_id)[:5]
    raise InputError(
        f"no recipe {recipe_id!r} in the catalog"
        + (f"; similar: {', '.join(close)}" if close else "")
        + " (aim-recipes list shows all)"
    )


def add_show(sub: Any) -> None:
    """`aim-recipes show`: its arguments, beside cmd_show."""
    show = sub.add_parser("show", help="show one recipe, its vLLM command line and memory plan")
    show.add_argument("recipe_id")
    show.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    _benchmark_args(show)


def cmd_show(args: argparse.Namespace) -> int:
    from aim_engine.rules.compat import static_findings

    bundle = _bundle(args)
    recipe = _find(bundle, args.recipe_id)
    applied = apply_measurements([recipe], _measurements(args))
    recipe = applied.recipes[0]
    model = bundle.models.get(recipe.huggingface_id)
    findings, plan = static_findings(recipe, model=model, catalog=bundle.hardware, registry=bundle.registry)
    doc: dict[str, Any] = {"recipe": recipe.to_seed(), "vllm_command": vllm_command(recipe)}
    if recipe.performance is not None:
        perf = recipe.performance
        doc["figures"] = {
            figure: {
                "value": float(perf.tokens_per_second if figure == FIGURES[0] else perf.latency_ms),
                "conditions": dict(perf.conditions),
                "source": figure_provenance(recipe, figure),
            }
            for figure in FIGURES
        }
    match = applied.matches.get(recipe.recipe_id)
    if match is not None:
        doc["measurements"] = [f.as_dict() for f in match_findings(match, recipe)]
    if plan is not None:
        doc["memory_per_gpu_gib"] = {
            "budget": round(float(plan.budget) / 2**30, 1),
            "weights": round(float(plan.weights) / 2**30, 1),
            "activations": round(float(plan.activations) / 2**30, 2),
            "runtime": round(float(plan.overhead) / 2**30, 1),
            "kv_cache": round(float(plan.kv_budget) / 2**30, 1),
            "full_length_sequences": plan.concurrent_sequences,
        }
    doc["findings"] = [f.as_dict() for f in findings]
    sys.stdout.write(to_json(doc) if args.output == "json" else to_yaml(doc))
    return EXIT_OK


def add_validate(sub: Any) -> None:
    """`aim-recipes validate`: its arguments, beside cmd_validate."""
    val = sub.add_parser("validate", help="schema and semantic lint of the catalog or of recipe files/ConfigMaps")
    val.add_argument(
        "paths", nargs="*", type=Path, help="recipe files (YAML/JSON, recipes, lists or ConfigMaps); none: the bundled catalog"
    )
    val.add_argument(
        "--model-config",
        action="append",
        default=[],
        metavar="MODEL=PATH",
        type=_label,
        help="config.json for a model not in the bundled table",
    )
    val.add_argument(
        "--engine",
        action="store_true",
        help="also have vLLM judge each command line: its own parser (exact flags) and engine-config builder on the "
        "model's real config.json (recipes/models/configs); needs the vLLM venv of `make setup`, an error without it",
    )
    val.add_argument(
        "--vllm-python", type=Path, help="the vLLM venv's python (default: $AIM_VLLM_PYTHON, else .tools/vllm-venv/bin/python)"
    )
    val.add_argument("-o", "--output", choices=["table", "json"], default="table")


def cmd_validate(args: argparse.Namespace) -> int:
    bundle = _bundle(args)
    models = bundle.model_map()
    for model_id, path in args.model_config:
        profile = read_model_config(model_id, Path(path))
        models[profile.id.lower()] = profile
    if args.paths:
        recipes: list[Recipe] = []
        errors: list[str] = []
        for path in args.paths:
            try:
                recipes.extend(load_recipe_file(bundle, path))
            except InputError as err:
                errors.append(str(err))
        strict = False
    else:
        recipes, errors, strict = list(bundle.recipes), [], True
    issues = lint_recipes(recipes, models=models, catalog=bundle.hardware, registry=bundle.registry, strict=strict)
    engine: dict[str, Any] | None = None
    if args.engine:  # vLLM's own verdict (a subprocess in the vLLM venv; see aim_engine.adapters.engine_check)
        from aim_engine.adapters.engine_check import EngineSettings, checks_for, engine_issues, run_checker

        settings = EngineSettings.resolve(recipes_root=bundle.root, python=args.vllm_python, env=os.environ)
        configs = {model_id: Path(path) for model_id, path in args.model_config}
        checks, unchecked = checks_for(recipes, recipes_root=bundle.root, catalog=bundle.hardware, model_configs=configs)
        issues += unchecked
        if checks:
            report = run_checker(checks, settings)
            issues += engine_issues(report, checks)
            refused = sum(1 for v in report.verdicts if not v.ok)
            engine = {"vllm": report.vllm_version, "checked": len(checks), "refused": refused}
            engine["seconds"] = round(report.seconds, 1)
    n_err = len(errors) + sum(1 for i in issues if i.severity == "error")
    if args.output == "json":
        doc = {"recipes": len(recipes), "valid": n_err == 0, "schema_errors": errors, "issues": [i.as_dict() for i in issues]}
        sys.stdout.write(to_json(doc | ({"engine": engine} if engine is not None else {})))
    else:
        for e in errors:
            sys.stdout.write(f"error: {e}\n")
        if issues:
            sys.stdout.write(lint_table(issues))
        what = "bundled catalog" if strict else ", ".join(map(str, args.paths))
        if engine is not None:
            sys.stdout.write(
                f"vLLM {engine['vllm']} judged {engine['checked']} command line(s) in {engine['seconds']} s: "
                f"{engine['refused']} refused\n"
            )
        sys.stdout.write(
            f"{len(recipes)} recipe(s) checked in {what}: {n_err} error(s), "
            f"{sum(1 for i in issues if i.severity == 'warning')} warning(s)\n"
        )
    return EXIT_OK if n_err == 0 else EXIT_NOT_FOUND


def add_detect(sub: Any) -> None:
    """`aim-recipes detect`: its arguments, beside cmd_detect."""
    det = sub.add_parser("detect", help="GPU inventory of the live cluster or a snapshot")
    _cluster_args(det)
    det.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")


def cmd_detect(args: argparse.Namespace) -> int:
    bundle = _bundle(args)
    kube = None if args.cluster else _kube(args)
    inv = _inventory(args, bundle, kube)
    if args.output == "json":
        sys.stdout.write(to_json(inventory_dict(inv)))
    elif args.output == "yaml":
        sys.stdout.write(to_yaml(inventory_dict(inv)))
    else:
        sys.stdout.write(inventory_table(inv))
    return EXIT_OK


def _pinned(args: argparse.Namespace, bundle: Bundle, kube: Any | None) -> Recipe | None:
    recipes: list[Recipe] = []
    if args.catalog_recipe:
        return _find(bundle, args.catalog_recipe)
    if args.recipe_file is not None:
        recipes = load_recipe_file(bundle, args.recipe_file)
        source = str(args.recipe_file)
    elif args.recipe_configmap:
        if kube is None:
            raise InputError("--recipe-configmap reads the live cluster; with --cluster use --recipe-file")
        ns = _namespace(args)
        cm = kube.configmap(ns, args.recipe_configmap)
        if cm is None:
            raise InputError(
                f"custom recipe ConfigMap {ns}/{args.recipe_configmap} not found; create it with a "
                "recipe.yaml key (kubectl apply -f custom-recipe.yaml -n " + ns + ")"
            )
        cm.setdefault("kind", "ConfigMap")
        source = f"ConfigMap {ns}/{args.recipe_configmap}"
        recipes = [
            typed_recipe(bundle.validator, raw, where=where, origin="custom") for where, raw in recipe_documents(cm, where=source)
        ]
    else:
        return None
    if args.recipe_id:
        chosen = [r for r in recipes if r.recipe_id == args.recipe_id]
        if not chosen:
            raise InputError(f"{source} has no recipe {args.recipe_id!r} (it has {', '.join(r.recipe_id for r in recipes)})")
        return chosen[0]
    if len(recipes) > 1:
        raise InputError(f"{source} holds {len(recipes)} recipes; choose one with --recipe-id")
    return recipes[0]


def add_select(sub: Any) -> None:
    """`aim-recipes select`: its arguments, beside cmd_select."""
    s = sub.add_parser("select", help="select a recipe for a model on a cluster")
    s.add_argument("--model", help="Hugging Face model id, e.g. Qwen/Qwen3-32B (default: the pinned recipe's model)")
    _cluster_args(s)
    s.add_argument("--gpu-count", type=_positive, help="explicit GPU count (never changed by the selector)")
    s.add_argument("--precision", help="explicit precision: fp16, bf16, fp8, int8, int4, mxfp4")
    s.add_argument("--backend", help="explicit backend (vllm)")
    s.add_argument("--gpu-type", help="explicit GPU product, e.g. MI300X or H100")
    s.add_argument("--max-model-len", type=_positive, help="explicit context length the recipe must serve")
    s.add_argument(
        "--min-context", type=_positive, default=4096, help="shortest context the tertiary level may reduce to (default 4096)"
    )
    s.add_argument("--recipe-file", type=Path, help="pin a custom recipe from a file (recipe, list or ConfigMap)")
    s.add_argument("--recipe-id", help="which recipe of --recipe-file to pin, when it holds several")
    s.add_argument("--recipe-configmap", help="pin the custom recipe in this ConfigMap (key recipe.yaml), read in --namespace")
    s.add_argument("--catalog-recipe", metavar="RECIPE_ID", help="pin a catalog recipe by id (checked like any pinned recipe)")
    s.add_argument(
        "--single-node",
        action="store_true",
        help="leave out multi-node recipes (the workload cannot span nodes, e.g. no LeaderWorkerSet)",
    )
    s.add_argument(
        "--nodes",
        type=_positive,
        help="the workload's shape: only recipes spanning exactly N nodes fit (N > 1: a LeaderWorkerSet group of N pods)",
    )
    s.add_argument(
        "--node-selector",
        action="append",
        type=_label,
        default=[],
        metavar="KEY=VALUE",
        help="the workload's nodeSelector: only the nodes it selects count (the chart passes workload.node_selector)",
    )
    s.add_argument(
        "--keep-existing",
        action="store_true",
        help="hook mode: when --write-configmap already holds a recipe (restored from a backup), keep it",
    )
    s.add_argument("--model-config", type=Path, help="the model's config.json, for models not in the bundled table")
    s.add_argument("--no-default", action="store_true", help="never fall back to a generic (default-level) recipe")
    s.add_argument("--explain", action="store_true", help="say why this recipe, why not each other, and what would make it fit")
    s.add_argument("-o", "--output", choices=["table", "json", "yaml", "values"], default="table")
    s.add_argument("--write-configmap", metavar="NAME", help="hook mode: write the selection to this ConfigMap in --namespace")
    s.add_argument("--release", help="Helm release name, for labels (hook mode)")
    s.add_argument(
        "--upgrade-deployment",
        metavar="NAME",
        help="hook mode: decide how this engine Deployment replaces its pods (surge where one more pod fits beside the "
        "release's, else rolling or Recreate), record it in --write-configmap and set the Deployment's strategy",
    )
    s.add_argument(
        "--cache-size",
        metavar="QUANTITY",
        help="the model cache's size (e.g. 200Gi): a cache smaller than the selected model's checkpoint is refused (exit 1)",
    )
    s.add_argument(
        "--cache-claim",
        metavar="NAME",
        help="hook mode: the model cache is this existing PersistentVolumeClaim in --namespace: its capacity is checked",
    )
    s.add_argument(
        "--replicas",
        type=_positive,
        default=1,
        help="with --upgrade-deployment: the replicas when the Deployment does not exist yet",
    )
    _benchmark_args(s)
    s.add_argument(
        "--slo",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"service-level targets the recipe's figures must meet: {', '.join(SLO_KEYS)} "
        f"(e.g. --slo ttft_p95_ms=500 itl_p95_ms=30); each within: {slo_bounds_text()}",
    )
    s.add_argument(
        "--benchmarks-configmap",
        action="append",
        default=[],
        metavar="NAME",
        help="rank by the measurements in this <release>-recipe-benchmarks ConfigMap, read in --namespace (repeatable)",
    )
    _hook_args(s)


def cmd_select(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    bundle = _bundle(args)
    live = args.cluster is None
    kube = _kube(args) if live or args.write_configmap or args.recipe_configmap or args.benchmarks_configmap else None
    if args.keep_existing and args.write_configmap:
        kept = _kept(args, bundle, kube)
        if kept is not None:
            return kept
    pinned = _pinned(args, bundle, kube)
    model_id = args.model or (pinned.huggingface_id if pinned else None)
    if not model_id:
        raise InputError("--model is required (or pin a recipe with --recipe-file / --recipe-configmap)")
    extra: ModelProfile | None = read_model_config(model_id, args.model_config) if args.model_config else None
    inv = _inventory(args, bundle, kube)
    # The catalog and inventory live until exit: move them out of the cyclic collector's way so a
    # large cluster or catalog does not pay for repeated full collections during selection.
    gc.freeze()
    request = Request(
        model_id=model_id,
        gpu_count=args.gpu_count,
        precision=args.precision.lower() if args.precision else None,
        backend=args.backend.lower() if args.backend else None,
        gpu_type=args.gpu_type,
        max_model_len=args.max_model_len,
        min_context=args.min_context,
        custom_recipe=pinned,
        allow_default=not args.no_default,
        nodes=args.nodes,
        slo=parse_slo(args.slo),
        # In hook mode the targets come from the chart's values: name them so.
        slo_names=VALUES_NAMES if args.write_configmap else CLI_NAMES,
    )
    recipes = [r for r in bundle.recipes if not (args.single_node and r.multi_node)]
    measurements = _measurements(args, kube)
    with collector_paused():
        sel = select(
            request=request,
            recipes=recipes,
            models=bundle.model_map(extra),
            catalog=bundle.hardware,
            registry=bundle.registry,
            inventory=inv,
            measurements=measurements,
        )
    duration = time.perf_counter() - started
    short = _cache_shortfall(args, bundle, kube, sel, extra)
    if short is not None:
        sys.stdout.write(f"no recipe selected (model cache too small): {short}\n")
        args.failure = short
        return EXIT_NOT_FOUND
    upgrade = _upgrade_plan(args, bundle, kube, sel) if args.upgrade_deployment else None
    if args.write_configmap:
        _write_selection(args, kube, sel, inv, duration, catalog=bundle.hardware, upgrade=upgrade)
    if upgrade is not None:
        # A strategy-only patch: the webhook does not judge a controller update that leaves its pod
        # template unchanged (the old template against the new model's recipe would be refused).
        _apply_upgrade(args, kube, upgrade)
    _print_selection(args, sel, inv)
    if upgrade is not None and args.output not in ("json", "yaml", "values"):
        sys.stdout.write(upgrade.line() + "\n")
    if not sel.ok:
        args.failure = f"no recipe selected ({sel.result}): {sel.message}"
    return EXIT_OK if sel.ok else EXIT_NOT_FOUND


def _cache_shortfall(
    args: argparse.Namespace, bundle: Bundle, kube: Any | None, sel: Selection, extra: ModelProfile | None
) -> str | None:
    """The model cache (its size in values, or an existing claim's capacity) against the selected
    model's checkpoint; a model without a profile is not checked."""
    if sel.recipe is None or not (args.cache_size or args.cache_claim):
        return None
    model = bundle.model_map(extra).get(sel.recipe.huggingface_id.lower())
    if model is None:
        return None
    if args.cache_claim:
        if kube is None:
            raise InputError("--cache-claim reads the live cluster; pass --cache-size with --cluster")
        ns = _namespace(args)
        claim = kube.pvc(ns, args.cache_claim)
        if claim is None:
            return f"model_cache.existing_claim {args.cache_claim!r} does not exist in namespace {ns}: create it, or unset it"
        status, spec = claim.get("status") or {}, claim.get("spec") or {}
        size = (status.get("capacity") or {}).get("storage") or ((spec.get("resources") or {}).get("requests") or {}).get(
            "storage"
        )
        if size is None:
            return None
        where = f"model_cache.existing_claim {args.cache_claim}"
    else:
        size, where = args.cache_size, "model_cache.size"
    return cache_shortfall(model, cache_bytes=parse_quantity(size, field=where), where=f"{where} ({size})")


def _upgrade_plan(args: argparse.Namespace, bundle: Bundle, kube: Any | None, sel: Selection) -> UpgradePlan | None:
    """How the engine Deployment replaces its pods: judged on the cluster with the release's own
    pods holding what they hold (the selection counted them as free)."""
    if sel.recipe is None:
        return None
    product = bundle.hardware.get(sel.recipe.hardware)
    if product is None:
        return None
    replicas = args.replicas
    if kube is not None:
        live = kube.deployment(_namespace(args), args.upgrade_deployment)
        if live is not None:
            replicas = int((live.get("spec") or {}).get("replicas") or 0) or replicas
    occupied = _inventory(args, bundle, kube, reclaim=False)
    return plan_upgrade(recipe=sel.recipe, product=product, occupied=occupied, replicas=replicas)


def _apply_upgrade(args: argparse.Namespace, kube: Any | None, plan: UpgradePlan) -> None:
    """Set the engine Deployment's strategy before Helm applies the new pod template (a pre-upgrade
    hook); on a first install there is none yet, and nothing rolls."""
    if kube is None:
        return
    ns = _namespace(args)
    live = kube.deployment(ns, args.upgrade_deployment)
    if live is None:
        return
    want = plan.deployment_strategy()
    have = (live.get("spec") or {}).get("strategy") or {}
    if have.get("type") == want["type"] and (have.get("rollingUpdate") or None) == want["rollingUpdate"]:
        return
    kube.patch_deployment(ns, args.upgrade_deployment, {"spec": {"strategy": want}})
    log.info("deployment %s/%s: strategy %s (%s)", ns, args.upgrade_deployment, plan.kind.value, plan.reason)


def _kept(args: argparse.Namespace, bundle: Bundle, kube: Any) -> int | None:
    """restore_from_backup: the ConfigMap already holds a recipe; keep it, say so, select nothing."""
    ns = _namespace(args)
    cm = kube.configmap(ns, args.write_configmap)
    data = (cm or {}).get("data") or {}
    if RECIPE_KEY not in data:
        log.warning("keep-existing: configmap %s/%s holds no recipe; selecting", ns, args.write_configmap)
        return None
    cm.setdefault("kind", "ConfigMap")
    found = [
        typed_recipe(bundle.validator, raw, where=where, origin="custom")
        for where, raw in recipe_documents(cm, where=f"ConfigMap {ns}/{args.write_configmap}")
    ]
    sys.stdout.write(
        f"Kept the recipe restored in ConfigMap {ns}/{args.write_configmap}: {found[0].recipe_id} "
        "(restore_from_backup; no selection ran)\n"
    )
    return EXIT_OK


def _print_selection(args: argparse.Namespace, sel: Selection, inv: Inventory) -> None:
    if args.output == "json":
        sys.stdout.write(to_json(selection_dict(sel)))
    elif args.output == "yaml":
        sys.stdout.write(to_yaml(selection_dict(sel)))
    elif args.output == "values":
        if sel.recipe is None:
            sys.stderr.write(f"aim-recipes: {sel.message}\n")
        else:
            sys.stdout.write(helm_values(sel))
    elif args.explain or args.write_configmap:
        sys.stdout.write(explanation(sel, inv))
    elif sel.recipe is not None:
        sys.stdout.write(f"{sel.recipe.recipe_id} ({sel.level})\n{sel.message}\n")
    else:
        sys.stdout.write(f"no recipe selected ({sel.result}): {sel.message}\n")
    if args.explain and args.output in ("json", "yaml", "values"):
        sys.stderr.write(explanation(sel, inv))


def _write_selection(
    args: argparse.Namespace,
    kube: Any,
    sel: Selection,
    inv: Inventory,
    duration: float,
    *,
    catalog: HardwareCatalog,
    upgrade: UpgradePlan | None = None,
) -> None:
    ns = _namespace(args)
    name = args.write_configmap
    release = args.release or release_of(name)
    recipe_id = sel.recipe.recipe_id if sel.recipe else None
    now = time.time()
    explain_text = explanation(sel, inv) + (upgrade.line() + "\n" if upgrade is not None else "")
    selection_json = to_json(selection_dict(sel))
    product = catalog.get(sel.recipe.hardware) if sel.recipe is not None else None
    affinity = None
    if product is not None and sel.recipe is not None:
        pack = sel.packing
        affinity = product_node_affinity(
            inv,
            product.name,
            resource=product.device_resource(sel.recipe.limits, sel.recipe.requests) if product.is_partition else None,
            preferred_hostname=pack.preferred_hostname if pack is not None else None,
        )

    def update(current: dict[str, Any] | None) -> dict[str, str]:
        data = dict((current or {}).get("data") or {})
        if sel.recipe is not None:
            data[RECIPE_KEY] = to_yaml(sel.recipe.to_seed())
            data[SELECTION_KEY] = selection_json
            data[EXPLANATION_KEY] = explain_text
            if upgrade is not None:
                data[UPGRADE_KEY] = to_json(upgrade.as_dict())
            else:
                data.pop(UPGRADE_KEY, None)
            if affinity is not None and affinity.terms:
                data[NODE_AFFINITY_KEY] = affinity.to_json()
            else:
                data.pop(NODE_AFFINITY_KEY, None)
        data[LAST_ATTEMPT_JSON_KEY] = selection_json
        data[LAST_ATTEMPT_TEXT_KEY] = explain_text
        data[MODE_KEY] = "pinned" if sel.request.custom_recipe is not None else "auto"
        data.pop(PLACEMENT_KEY, None)
        data[SELECTION_METRICS_KEY] = updated_counts(
            data, result=sel.result, level=sel.level, duration_seconds=duration, timestamp=now, recipe_id=recipe_id
        )
        return data

    labels = recipe_config_labels(release=release, recipe_id=recipe_id, managed_by="aim-recipe-selector")
    annotations: dict[str, str] = {SELECTION_RESULT_ANNOTATION: sel.result, SELECTION_LEVEL_ANNOTATION: sel.level or "none"}
    if recipe_id:
        annotations[RECIPE_LABEL] = recipe_id
    kube.write_configmap(ns, name, data={}, labels=labels, annotations=annotations, update=update)
    kube.event(
        ns, configmap=name, reason="RecipeSelected" if sel.ok else "RecipeNotFound", message=sel.message, warning=not sel.ok
    )
    log.info(
        "wrote selection to configmap %s/%s: %s",
        ns,
        name,
        recipe_id or sel.result,
        extra={"recipe_id": recipe_id, "result": sel.result, "namespace": ns, "configmap": name},
    )


def add_place(sub: Any) -> None:
    """`aim-recipes place`: its arguments, beside cmd_place."""
    pl = sub.add_parser(
        "place",
        help="check that the cluster places a hand-set (manual mode) workload on the product meant (the chart's manual hook)",
    )
    _cluster_args(pl)
    pl.add_argument("--gpu-count", type=_positive, required=True, help="GPUs of the workload (all pods together)")
    pl.add_argument("--gpu-type", help="the GPU product the workload is meant for, e.g. MI300X or H100")
    pl.add_argument(
        "--vendor", choices=["amd", "nvidia"], default="amd", help="the vendor whose GPUs the pods request without --gpu-type"
    )
    pl.add_argument("--pods", type=_positive, default=1, help="pods sharing the GPUs, one per node (a LeaderWorkerSet group)")
    pl.add_argument(
        "--node-selector", action="append", type=_label, default=[], metavar="KEY=VALUE", help="the workload's nodeSelector"
    )
    pl.add_argument("--precision", choices=list(PRECISIONS), help="the hand-set precision, recorded with the placement")
    pl.add_argument("--backend", help="the hand-set backend, recorded with the placement")
    pl.add_argument(
        "--write-configmap",
        metavar="NAME",
        help="hook mode: record the placement (mode manual, GPUs, precision, where it fits) in this ConfigMap in --namespace",
    )
    pl.add_argument("--release", help="Helm release name, for labels (hook mode)")
    _hook_args(pl)


def cmd_place(args: argparse.Namespace) -> int:
    from aim_engine.cluster.placement import check_placement, placement_request

    bundle = _bundle(args)
    kube = _kube(args) if args.cluster is None else None
    if args.gpu_count % args.pods != 0:
        raise InputError(f"--gpu-count {args.gpu_count} does not split evenly over {args.pods} pods")
    request = placement_request(
        bundle.hardware,
        gpus_per_pod=args.gpu_count // args.pods,
        pods=args.pods,
        gpu_type=args.gpu_type,
        default_vendor=args.vendor,
        node_selector=dict(args.node_selector),
    )
    placement = check_placement(_inventory(args, bundle, kube), request)
    sys.stdout.write(placement.text())
    if args.write_configmap:
        _write_placement(args, kube if kube is not None else _kube(args), placement, request)
    if not placement.ok:
        args.failure = f"{placement.message}; to fix: {placement.fix}"
        return EXIT_NOT_FOUND
    return EXIT_OK


def _write_placement(args: argparse.Namespace, kube: Any, placement: Any, request: Any) -> None:
    """Manual mode's record in the release's recipe ConfigMap, so the seed's verification
    (`kubectl get configmap <release>-recipe-config`) works in every mode. A recipe an earlier
    automatic selection left there is removed: this release serves no recipe now."""
    ns = _namespace(args)
    name = args.write_configmap
    release = args.release or release_of(name)
    record = placement.record(request=request, precision=args.precision, backend=args.backend)
    text = placement.text()

    def update(current: dict[str, Any] | None) -> dict[str, str]:
        data = dict((current or {}).get("data") or {})
        for key in (RECIPE_KEY, SELECTION_KEY, NODE_AFFINITY_KEY):
            data.pop(key, None)
        data[MODE_KEY] = "manual"
        data[PLACEMENT_KEY] = to_json(record)
        data[EXPLANATION_KEY] = text
        data[LAST_ATTEMPT_JSON_KEY] = data[PLACEMENT_KEY]
        data[LAST_ATTEMPT_TEXT_KEY] = text
        return data

    labels = recipe_config_labels(release=release, recipe_id=None, managed_by="aim-recipe-selector")
    annotations = {SELECTION_RESULT_ANNOTATION: "placed" if placement.ok else "not_placed", SELECTION_LEVEL_ANNOTATION: "manual"}
    kube.write_configmap(ns, name, data={}, labels=labels, annotations=annotations, update=update, remove=(RECIPE_LABEL,))
    log.info("wrote the manual placement to configmap %s/%s: %s", ns, name, "fits" if placement.ok else "does not fit")


def _report_failure(args: argparse.Namespace, message: str) -> None:
    """Hook mode: leave a failure's reason where `kubectl describe job` and `describe pod` show it."""
    path = getattr(args, "termination_log", None)
    if path is not None:
        try:
            path.write_text(message[:4000] + "\n")
        except OSError as e:
            log.warning("could not write the termination message to %s: %s", path, e)
    pod = getattr(args, "pod_name", None)
    if not pod:
        return
    try:
        kube = _kube(args)
        ns = _namespace(args)
        owner = kube.owner_job(ns, pod)
        if owner is not None:
            kube.event_on(
                ns,
                kind="Job",
                api_version="batch/v1",
                name=owner[0],
                uid=owner[1],
                reason="RecipeNotFound" if args.command == "select" else "PlacementFailed",
                message=message,
                warning=True,
            )
    except Exception as e:  # reporting must never hide the failure itself
        log.warning("could not record the failure on the hook Job: %s", e)


def add_estimate(sub: Any) -> None:
    """`aim-recipes estimate`: its arguments, beside cmd_estimate."""
    est = sub.add_parser("estimate", help="recompute a recipe's estimated figures (method aim-engine-roofline-v1)")
    est.add_argument("recipe_id")


def cmd_estimate(args: argparse.Namespace) -> int:
    bundle = _bundle(args)
    recipe = _find(bundle, args.recipe_id)
    model = bundle.models.get(recipe.huggingface_id)
    product = bundle.hardware.require(recipe.hardware)
    if model is None:
        raise InputError(f"{recipe.huggingface_id} is not in the bundled model table")
    est = estimate_recipe(recipe, model, product)
    conditions = recipe_conditions(recipe)
    sys.stdout.write(
        to_json(
            {
                "recipe_id": recipe.recipe_id,
                "conditions": conditions,
                "method": METHOD,
                "expected_tokens_per_second": est.tokens_per_second,
                "expected_latency_ms": est.latency_ms,
            }
        )
    )
    return EXIT_OK


def add_metrics(sub: Any) -> None:
    """`aim-recipes metrics`: its arguments, beside cmd_metrics."""
    met = sub.add_parser("metrics", help="print aim_recipe_selection_total from selection ConfigMaps (Prometheus text)")
    met.add_argument("files", nargs="*", type=Path, help="ConfigMap JSON/YAML files; none: read the live cluster")
    met.add_argument("--namespace", help="namespace to read (live); default all")
    met.add_argument("--kubeconfig")
    met.add_argument("--context")


def cmd_metrics(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, generate_latest

    if args.files:
        cms: list[dict[str, Any]] = []
        for path in args.files:
            from aim_engine.adapters.catalog import read_document_text

            for doc in parse_yaml_documents(read_document_text(path), where=str(path)):
                cms.extend(doc.get("items", []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc])
    else:
        kube = _kube(args)
        cms = kube.configmaps(namespace=args.namespace or None, label_selector=RECIPE_CONFIG_SELECTOR)
    registry = CollectorRegistry()
    registry.register(SelectionCollector(lambda: cms))
    sys.stdout.write(generate_latest(registry).decode())
    return EXIT_OK


COMMANDS = {
    "list": cmd_list,
    "show": cmd_show,
    "validate": cmd_validate,
    "detect": cmd_detect,
    "select": cmd_select,
    "place": cmd_place,
    "estimate": cmd_estimate,
    "metrics": cmd_metrics,
    "bench": cmd_bench,
    "tune": cmd_tune,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level, args.log_format)
    try:
        code = COMMANDS[args.command](args)
        if code != EXIT_OK and getattr(args, "failure", None):
            _report_failure(args, args.failure)
        return code
    except AimError as e:
        sys.stderr.write(f"aim-recipes: error: {e}\n")
        _report_failure(args, f"error: {e}")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # a system error: say it plainly, keep the traceback for AIM_DEBUG
        if os.environ.get("AIM_DEBUG"):
            raise
        sys.stderr.write(f"aim-recipes: internal error: {type(e).__name__}: {e} (set AIM_DEBUG=1 for a traceback)\n")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
