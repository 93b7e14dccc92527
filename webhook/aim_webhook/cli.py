"""aim-webhook serve: the admission webhook under gunicorn with TLS.

    aim-webhook serve --host 0.0.0.0 --port 8443 --tls-cert /tls/tls.crt --tls-key /tls/tls.key

Workers are gunicorn's gthread model with the request read in the event loop under deadlines
(aim_webhook.worker: a slow client never holds a thread), answered there unless it must wait for the
API server (then on a thread: aim_webhook.offload), and connections balanced across workers;
connections are kept alive (the API server reuses them); the TLS context follows the certificate
files (rotation without restart); SIGTERM drains (--shutdown-delay: readiness false, connections
closed after their response) and then finishes in-flight requests (--graceful-timeout)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_ERROR = 2


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _typed(convert: Any, env: str) -> Any:
    """`convert` as an argparse type whose error names the environment variable when the value
    came from it (argparse converts a string default with the type, at parse time: a bad value is
    one line and exit 2, never a traceback)."""

    def parse(raw: str) -> Any:
        try:
            return convert(raw)
        except (TypeError, ValueError) as e:
            source = f" (from ${env})" if os.environ.get(env) == raw else ""
            raise argparse.ArgumentTypeError(f"{raw!r}{source} is not a valid {getattr(convert, '__name__', 'value')}") from e

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _boolean(raw: str) -> bool:
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise ValueError(raw)


_boolean.__name__ = "boolean (true or false)"


def _one_of(*values: str, fold: Any = str) -> Any:
    """A type accepting one of `values` (after `fold`): argparse checks `choices` only on values
    given on the command line, not on a default from the environment."""

    def convert(raw: str) -> str:
        if (value := fold(raw)) not in values:
            raise ValueError(raw)
        return str(value)

    convert.__name__ = f"value (one of {', '.join(values)})"
    return convert


def _env(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    env: str,
    default: str | None,
    convert: Any = str,
    help_text: str = "",
    **kwargs: Any,
) -> None:
    """A flag whose default is the environment variable `env` (else `default`), both converted and
    checked by the same type."""
    raw = os.environ.get(env, default)
    parser.add_argument(
        flag,
        type=_typed(convert, env),
        default=raw,
        help=f"{help_text + ' ' if help_text else ''}(env {env}; default {default if default is not None else 'none'})",
        **kwargs,
    )


def _switch(parser: argparse.ArgumentParser, name: str, *, env: str, help_text: str) -> None:
    """--NAME / --no-NAME, its default from `env` (true/false, 1/0, yes/no, on/off; default on); any
    other value is refused when the arguments are parsed."""
    parser.add_argument(
        f"--{name}",
        dest=name.replace("-", "_"),
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"{help_text} (env {env}; default on)",
    )
    parser.set_defaults(**{f"_env_{name.replace('-', '_')}": env})


def _resolve_switches(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The switches not given on the command line take their environment variable's value."""
    for key in [k for k in vars(args) if k.startswith("_env_")]:
        dest, env = key.removeprefix("_env_"), getattr(args, key)
        delattr(args, key)
        if getattr(args, dest) is not None:
            continue
        raw = os.environ.get(env, "true")
        try:
            setattr(args, dest, _boolean(raw))
        except ValueError:
            parser.error(f"${env}={raw!r}: use true or false (or 1/0, yes/no, on/off)")


def build_parser() -> argparse.ArgumentParser:
    """Each subcommand declares its own arguments beside its code (add_serve, add_certs, add_reconcile)."""
    p = argparse.ArgumentParser(prog="aim-webhook", description="aim-engine admission webhook")
    sub = p.add_subparsers(dest="command", required=True)
    add_serve(sub)
    add_certs(sub)
    add_reconcile(sub)
    return p


def add_certs(sub: Any) -> None:
    c = sub.add_parser("certs", help="create or renew the serving certificate and patch caBundle (no manual step)")
    c.set_defaults(run=certs)
    c.add_argument("--namespace", required=True)
    c.add_argument("--service", required=True, help="the webhook Service name (certificate DNS names derive from it)")
    c.add_argument("--secret", required=True, help="Secret holding tls.crt, tls.key, ca.crt, ca.key")
    c.add_argument("--validating-webhook", action="append", default=[], help="ValidatingWebhookConfiguration to patch")
    c.add_argument("--mutating-webhook", action="append", default=[], help="MutatingWebhookConfiguration to patch")
    c.add_argument("--days", type=int, default=365)
    c.add_argument("--renew-before-days", type=int, default=30)
    c.add_argument("--kubeconfig")


def certs(args: argparse.Namespace) -> int:
    from kubernetes import client

    from aim_engine.adapters.kube import load_credentials
    from aim_engine.domain.errors import AimError

    from .bootstrap import run
    from .observability import setup_logging

    setup_logging("INFO", "json")
    try:
        load_credentials(kubeconfig=args.kubeconfig)
        outcome = run(
            kube_core=client.CoreV1Api(),
            kube_admission=client.AdmissionregistrationV1Api(),
            namespace=args.namespace,
            service=args.service,
            secret=args.secret,
            validating=args.validating_webhook,
            mutating=args.mutating_webhook,
            days=args.days,
            renew_before_days=args.renew_before_days,
        )
    except (AimError, OSError) as e:
        sys.stderr.write(f"aim-webhook: error: {e}\n")
        return EXIT_ERROR
    sys.stdout.write(f"certificate: {outcome}\n")
    return 0


def _kube_credentials(args: argparse.Namespace) -> str:
    """Load the cluster credentials the way the Kubernetes client would; '' or a one-line problem."""
    from aim_engine.adapters.kube import NoCredentials, load_credentials

    try:
        load_credentials(kubeconfig=getattr(args, "kubeconfig", None))
    except NoCredentials as e:
        needs = [
            what
            for what, on in (
                ("reading recipe ConfigMaps (--kube, the default)", args.kube),
                ("--ca-bundle-for", bool(args.ca_bundle_for)),
            )
            if on
        ]
        return (
            f"no cluster credentials found ({e.detail}), and {' and '.join(needs)} {'needs' if len(needs) == 1 else 'need'} "
            "them: run in a pod with a service account, or set KUBECONFIG (default ~/.kube/config)"
            + ("; or pass --no-kube to serve from the catalog alone" if args.kube else "")
        )
    return ""


def _make_app(args: argparse.Namespace, board: Any) -> Any:
    from prometheus_client import CollectorRegistry

    from aim_engine.adapters.catalog import load_bundle
    from aim_engine.contract import RECIPE_CONFIG_SELECTOR
    from aim_engine.rules.workload import Toggles

    from .app import Settings, create_app
    from .recipes import RecipeResolver
    from .worker import BoardCollector

    bundle = load_bundle(args.catalog)
    reader = None
    extra = CollectorRegistry()
    extra.register(BoardCollector(board))
    if args.kube:
        from aim_engine.adapters.kube import Kube, own_namespace
        from aim_engine.adapters.metrics import BenchmarkCollector, SelectionCollector
        from aim_engine.contract import BENCHMARKS_SELECTOR

        kube = Kube.connect()
        reader = kube.configmap
        # The webhook's RBAC is a Role: it reads ConfigMaps in its own namespace only. Its own pods are
        # never policed because they carry no aim-engine.io/recipe-id label (the configurations'
        # objectSelector), so the release namespace — where the chart's vLLM pods live — is not exempt.
        own = own_namespace()

        def fetch() -> list[dict[str, Any]]:
            try:
                return kube.configmaps(namespace=own, label_selector=RECIPE_CONFIG_SELECTOR)
            except Exception:  # a scrape must not fail because the API is slow
                return []

        def fetch_benchmarks() -> list[dict[str, Any]]:
            try:
                return kube.configmaps(namespace=own, label_selector=BENCHMARKS_SELECTOR)
            except Exception:  # as above
                return []

        extra.register(SelectionCollector(fetch))
        extra.register(BenchmarkCollector(fetch_benchmarks))
    settings = Settings(
        toggles=Toggles(args.check_resource_limits, args.check_recipe_compatibility, args.check_performance_constraints),
        mutate=args.mutate,
        exempt_namespaces=frozenset({"kube-system", *args.exempt_namespace}),
    )
    return create_app(
        bundle=bundle,
        resolver=RecipeResolver(bundle, read_configmap=reader),
        settings=settings,
        ready=board.ready,
        extra_metrics=extra,
    )


def _patch_ca_bundle(args: argparse.Namespace, *, attempts: int = 30) -> str:
    """Make the API server trust this server before it serves: write the CA into its own webhook
    configurations (named; RBAC names them too). Retried briefly: on a first install the
    configurations are created by Helm moments after the webhook pods start."""
    import time

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from aim_engine.adapters.kube import load_credentials

    from .bootstrap import patch_ca_bundle

    if not args.tls_ca or not Path(args.tls_ca).is_file():
        return f"--ca-bundle-for needs --tls-ca (the CA certificate file), got {args.tls_ca!r}"
    ca_pem = Path(args.tls_ca).read_bytes()
    load_credentials(kubeconfig=getattr(args, "kubeconfig", None))
    api = client.AdmissionregistrationV1Api()
    last = ""
    for _ in range(attempts):
        try:
            patch_ca_bundle(api, validating=args.ca_bundle_for, mutating=args.ca_bundle_for, ca_pem=ca_pem)
            return ""
        except ApiException as e:
            last = f"patching caBundle: API server answered {e.status} {e.reason}"
            if e.status not in (404, 409):
                return last
            time.sleep(2)
    return last + " (configurations still missing after 60 s)"


def _discard(_: object) -> None:
    return None


def add_reconcile(sub: Any) -> None:
    r = sub.add_parser(
        "reconcile",
        help="once the webhook serves, replace the Pods created before it was registered (a Job per chart revision)",
    )
    r.set_defaults(run=reconcile)
    r.add_argument("--namespace", required=True, help="the release namespace")
    r.add_argument("--deployment", help="the webhook Deployment to wait for (without it: replace at once)")
    r.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for an available webhook replica")
    r.add_argument("--release", help="the release whose Pods serving an outdated recipe are replaced (with --recipe-config)")
    r.add_argument("--recipe-config", help="the release's selection ConfigMap (<release>-recipe-config)")
    r.add_argument(
        "--engine-deployment",
        help="the release's engine Deployment: its outdated Pods are replaced by a rollout (its strategy), not deleted",
    )
    _env(r, "--catalog", env="AIM_RECIPES_DIR", default=None, convert=Path, help_text="recipes directory")
    r.add_argument("--kubeconfig")


def reconcile(args: argparse.Namespace) -> int:
    from kubernetes import client

    from aim_engine.adapters.kube import load_credentials
    from aim_engine.domain.errors import AimError

    from . import reconcile as rec
    from .observability import setup_logging

    setup_logging("INFO", "json")
    try:
        load_credentials(kubeconfig=args.kubeconfig)
    except AimError as e:
        sys.stderr.write(f"aim-webhook: error: {e}\n")
        return EXIT_ERROR
    core, apps = client.CoreV1Api(), client.AppsV1Api()

    def read_deployment() -> dict[str, Any] | None:
        try:
            found = apps.read_namespaced_deployment(args.deployment, args.namespace)
        except client.exceptions.ApiException as e:
            if e.status == 404:
                return None
            raise
        return dict(apps.api_client.sanitize_for_serialization(found))

    def list_pods() -> list[dict[str, Any]]:
        found = core.list_namespaced_pod(args.namespace, label_selector=rec.SELECTOR)
        return list(core.api_client.sanitize_for_serialization(found).get("items") or [])

    from aim_engine.contract import INSTANCE_LABEL, RECIPE_CONFIG_ANNOTATION

    def release_pods() -> list[dict[str, Any]]:
        found = core.list_namespaced_pod(args.namespace, label_selector=f"{INSTANCE_LABEL}={args.release}")
        pods = core.api_client.sanitize_for_serialization(found).get("items") or []
        return [p for p in pods if (p["metadata"].get("annotations") or {}).get(RECIPE_CONFIG_ANNOTATION) == args.recipe_config]

    try:
        current = None
        if args.release and args.recipe_config:
            # What the selection holds now; a selection that cannot be read leaves the Pods as they
            # are (said, not fatal: the step above, Pods without a recipe, matters more).
            from aim_engine.adapters.catalog import load_bundle
            from aim_engine.adapters.kube import Kube
            from aim_engine.domain.recipe import serving_fingerprint

            from .recipes import RecipeResolver

            try:
                resolver = RecipeResolver(load_bundle(args.catalog), read_configmap=Kube(core).configmap)
                selection = resolver.selection(args.namespace, args.recipe_config)
            except AimError as e:
                sys.stdout.write(f"pods with an outdated recipe not checked: {e}\n")
            else:
                if selection.recipe is None:
                    sys.stdout.write(f"pods with an outdated recipe not checked: {selection.problem}\n")
                else:
                    current = rec.Current(
                        recipe_id=selection.recipe.recipe_id,
                        fingerprint=serving_fingerprint(selection.recipe),
                        list_pods=release_pods,
                        engine=_engine(apps, args.namespace, args.engine_deployment) if args.engine_deployment else None,
                    )
        outcome = rec.run(
            namespace=args.namespace,
            deployment=args.deployment,
            read_deployment=read_deployment if args.deployment else None,
            list_pods=list_pods,
            delete_pod=lambda name: _discard(core.delete_namespaced_pod(name, args.namespace)),
            timeout_seconds=args.timeout,
            current=current,
        )
    except (client.exceptions.ApiException, OSError) as e:
        sys.stderr.write(f"aim-webhook: error: reconcile: {e}\n")
        return EXIT_ERROR
    (sys.stdout if outcome.ok else sys.stderr).write(f"{'' if outcome.ok else 'aim-webhook: error: '}{outcome.message}\n")
    return 0 if outcome.ok else EXIT_ERROR


def _engine(apps: Any, namespace: str, name: str) -> Any:
    """The engine Deployment for reconcile: read it, and roll it by an annotation on its pod template
    (as `kubectl rollout restart` does), naming the recipe the new pods get."""
    import datetime

    from kubernetes import client

    from aim_engine.contract import RECIPE_ROLLOUT_ANNOTATION

    from . import reconcile as rec

    def read() -> dict[str, Any] | None:
        try:
            found = apps.read_namespaced_deployment(name, namespace)
        except client.exceptions.ApiException as e:
            if e.status == 404:
                return None
            raise
        return dict(apps.api_client.sanitize_for_serialization(found))

    def roll(fingerprint: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RECIPE_ROLLOUT_ANNOTATION: f"{fingerprint} {stamp}"}}}}}
        apps.patch_namespaced_deployment(name, namespace, patch)

    return rec.Engine(name=name, read=read, roll=roll)


def add_serve(sub: Any) -> None:
    s = sub.add_parser("serve", help="serve /validate, /mutate, /healthz, /readyz, /metrics over TLS")
    s.set_defaults(run=serve)
    _env(s, "--host", env="AIM_WEBHOOK_HOST", default="0.0.0.0")
    _env(s, "--port", env="AIM_WEBHOOK_PORT", default="8443", convert=int)
    for flag, env in (("--tls-cert", "AIM_WEBHOOK_TLS_CERT"), ("--tls-key", "AIM_WEBHOOK_TLS_KEY")):
        _env(s, flag, env=env, default=None, required=env not in os.environ)
    _env(s, "--catalog", env="AIM_RECIPES_DIR", default=None, convert=Path, help_text="recipes directory")
    _env(s, "--workers", env="AIM_WEBHOOK_WORKERS", default="2", convert=int)
    _env(s, "--threads", env="AIM_WEBHOOK_THREADS", default="4", convert=int)
    _env(
        s,
        "--worker-connections",
        env="AIM_WEBHOOK_WORKER_CONNECTIONS",
        default="1000",
        convert=int,
        help_text="connections one worker holds at most (idle and slow ones included; they cost no thread)",
    )
    s.add_argument(
        "--inline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="answer a complete request in the worker's event loop; one that must read the API server moves to a "
        "thread (--threads), as does /metrics (--no-inline: every request on a thread)",
    )
    s.add_argument("--graceful-timeout", type=int, default=25, help="seconds SIGTERM waits for in-flight requests")
    _env(
        s,
        "--shutdown-delay",
        env="AIM_WEBHOOK_SHUTDOWN_DELAY",
        default="0",
        convert=float,
        help_text="seconds SIGTERM drains before stopping: still serving, /readyz 503, every response with "
        "Connection: close — long enough for the endpoint removal to reach the API server (the chart sets 5)",
    )
    s.add_argument("--handshake-timeout", type=float, default=5.0, help="seconds a TLS handshake may take")
    s.add_argument("--header-timeout", type=float, default=5.0, help="seconds from a request's first byte to the end of its head")
    s.add_argument("--body-timeout", type=float, default=10.0, help="seconds from the end of a request's head to its last byte")
    s.add_argument(
        "--keepalive",
        type=float,
        default=120.0,
        help="seconds an idle connection is kept; above the API server's 90 s, so the client closes first "
        "(a server-side close can race a request the API server is sending, which it does not retry)",
    )
    _env(
        s,
        "--worker-tmp-dir",
        env="AIM_WEBHOOK_TMP",
        default=tempfile.gettempdir(),
        help_text="writable dir (a tmpfs with a read-only root filesystem)",
    )
    s.add_argument("--exempt-namespace", action="append", default=[], help="never police this namespace (kube-system always)")
    _switch(s, "kube", env="AIM_WEBHOOK_KUBE", help_text="read recipe ConfigMaps and selection counters from the API server")
    _env(
        s,
        "--tls-ca",
        env="AIM_WEBHOOK_TLS_CA",
        default=None,
        help_text="CA certificate to write into the caBundle of --ca-bundle-for configurations at start-up",
    )
    s.add_argument(
        "--ca-bundle-for",
        action="append",
        default=[],
        metavar="NAME",
        help="a Validating and Mutating WebhookConfiguration (same name) whose caBundle this server keeps current",
    )
    _env(
        s,
        "--log-level",
        env="AIM_LOG_LEVEL",
        default="INFO",
        convert=_one_of("DEBUG", "INFO", "WARNING", "ERROR", fold=str.upper),
    )
    _env(s, "--log-format", env="AIM_LOG_FORMAT", default="json", convert=_one_of("json", "text"))
    _switch(s, "mutate", env="AIM_WEBHOOK_MUTATE", help_text="inject recipes on /mutate")
    for name, env in (
        ("check-resource-limits", "AIM_CHECK_RESOURCE_LIMITS"),
        ("check-recipe-compatibility", "AIM_CHECK_RECIPE_COMPATIBILITY"),
        ("check-performance-constraints", "AIM_CHECK_PERFORMANCE_CONSTRAINTS"),
    ):
        _switch(s, name, env=env, help_text=f"admission_controller.validation.{name.replace('-', '_')}")


def serve(args: argparse.Namespace) -> int:
    # Multiprocess metrics must be configured before prometheus_client is imported anywhere. A
    # directory created here is removed when the server exits (by this process only: the workers,
    # forked from it, leave through the same code).
    created = ""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        created = tempfile.mkdtemp(prefix="aim-webhook-metrics-", dir=args.worker_tmp_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = created
    owner = os.getpid()
    try:
        return _serve(args)
    finally:
        if created and os.getpid() == owner:
            shutil.rmtree(created, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication
    from prometheus_client import multiprocess

    from .observability import CERT_EXPIRY, setup_logging
    from .tls import ReloadingContext
    from .worker import Board, Limits, arbiter_class, hooks, worker_class

    setup_logging(args.log_level, args.log_format)
    for path in (args.tls_cert, args.tls_key):
        if not Path(path).is_file():
            sys.stderr.write(f"aim-webhook: error: {path}: no such file (pass --tls-cert and --tls-key)\n")
            return EXIT_ERROR
    try:
        reloading = ReloadingContext(args.tls_cert, args.tls_key, on_load=CERT_EXPIRY.set)
    except Exception as e:
        sys.stderr.write(f"aim-webhook: error: cannot load the TLS certificate: {e}\n")
        return EXIT_ERROR
    if args.kube or args.ca_bundle_for:
        problem = _kube_credentials(args)
        if problem:
            sys.stderr.write(f"aim-webhook: error: {problem}\n")
            return EXIT_ERROR
    if args.ca_bundle_for:
        problem = _patch_ca_bundle(args)
        if problem:
            sys.stderr.write(f"aim-webhook: error: {problem}\n")
            return EXIT_ERROR
    board = Board(args.workers)
    limits = Limits(
        handshake_timeout=args.handshake_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keepalive=args.keepalive,
        inline=args.inline,
    )
    from aim_engine.domain.errors import AimError

    try:
        app = _make_app(args, board)
    except AimError as e:
        sys.stderr.write(f"aim-webhook: error: {e}\n")
        return EXIT_ERROR
    limits = dataclasses.replace(limits, max_body_bytes=app.config["MAX_CONTENT_LENGTH"])

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            cfg = {
                "bind": [f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"],
                "worker_class": worker_class(board, limits),
                "workers": args.workers,
                "threads": args.threads,
                "worker_connections": args.worker_connections,
                "keepalive": int(args.keepalive),
                "timeout": 30,
                "graceful_timeout": args.graceful_timeout,
                "worker_tmp_dir": args.worker_tmp_dir,
                "certfile": args.tls_cert,
                "keyfile": args.tls_key,
                "ssl_context": lambda conf, factory: reloading.current(),
                **hooks(board, on_exit=multiprocess.mark_process_dead),
                "accesslog": None,
                "loglevel": args.log_level.lower(),
                "proc_name": "aim-webhook",
            }
            for key, value in cfg.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

        def run(self) -> None:
            # gunicorn's master with a drain on SIGTERM before the graceful stop.
            arbiter_class(board, args.shutdown_delay)(self).run()

    Server().run()
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line with the environment's defaults; a bad flag or variable exits 2 with one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_switches(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
