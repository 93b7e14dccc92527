"""The Flask application: /validate, /mutate, /healthz, /readyz, /metrics.

Hostile input: 415 for a content type other than JSON, 413 above the body cap, 400 for an empty,
undecodable, invalid-UTF-8, absurdly nested or non-AdmissionReview body, 405 for other methods.
A malformed object inside a valid review is denied with the reason (or allowed, for kinds we do not
police); an internal error is answered with a denial (code 500), never a crash, never an allow."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from aim_engine.adapters.catalog import Bundle
from aim_engine.adapters.metrics import BaselineCollector
from aim_engine.domain.errors import InputError
from aim_engine.rules.compat import Finding
from aim_engine.rules.pod import POLICED_KINDS, MalformedObject, as_map, container_index, delegated, parse_workload
from aim_engine.rules.workload import Toggles, check_workload

from .memo import Memo, fingerprint
from .mutate import apply, mutate
from .observability import DURATION, HTTP_ERRORS, REQUESTS, now, render_metrics
from .offload import MustWait
from .recipes import RecipeResolver
from .review import BadReview, ReviewRequest, encode_patch, parse_review, response, template_unchanged

log = logging.getLogger("aim_webhook")

# The API server's request-body limit is 3 MiB; a review carries object and oldObject, so two such
# objects plus the envelope fit under 7 MiB. Anything larger is not from an API server.
DEFAULT_MAX_BODY = 7 * 1024 * 1024
DEFAULT_MAX_DEPTH = 100


@dataclass(frozen=True)
class Settings:
    toggles: Toggles = field(default_factory=Toggles)
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_depth: int = DEFAULT_MAX_DEPTH
    mutate: bool = True
    exempt_namespaces: frozenset[str] = frozenset({"kube-system"})


def _depth_ok(value: Any, limit: int) -> bool:
    """Breadth-first, one level at a time: cheap for the wide, shallow objects reviews carry."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return False
        nxt: list[Any] = []
        for node in level:
            children = node.values() if type(node) is dict else node
            nxt.extend(c for c in children if type(c) in (dict, list))
        level = nxt
    return True


def _error(status: int, message: str) -> Response:
    HTTP_ERRORS.labels(status=str(status)).inc()
    return Response(json.dumps({"error": message, "code": status}) + "\n", status=status, mimetype="application/json")


@dataclass(frozen=True, slots=True)
class Injection:
    """A mutation as the answer carries it: the patch encoded once, for every review it answers."""

    encoded_patch: str
    warnings: tuple[str, ...]


def _summarise(kind: str, name: str, recipe_id: str, findings: list[Finding]) -> str:
    parts = [f"[{f.code}] {f.message}" + (f" (fix: {f.fix})" if f.fix else "") for f in findings]
    return f"aim-engine: {kind} {name} contradicts recipe {recipe_id}: " + "; ".join(parts)


class Reviewer:
    """The admission logic behind the HTTP routes: parse a review, judge or mutate it, answer."""

    def __init__(self, *, bundle: Bundle, resolver: RecipeResolver, settings: Settings) -> None:
        self.bundle = bundle
        self.resolver = resolver
        self.settings = settings
        self.models = bundle.model_map()
        # The Pods of one controller are identical to the rules: judged once (see memo.py).
        self.verdicts: Memo[tuple[Finding, ...]] = Memo()
        self.patches: Memo[Injection] = Memo()

    def read_review(self) -> ReviewRequest | Response:
        ctype = (request.mimetype or "").lower()
        if ctype != "application/json":
            return _error(415, f"content type must be application/json, got {ctype or 'none'}")
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            return _error(413, f"body of {length} bytes exceeds the {self.settings.max_body_bytes} byte limit")
        raw = request.get_data(cache=False)
        if not raw:
            return _error(400, "empty body")
        # orjson: a review is parsed in a third of the standard library's time (the body is most of
        # what every review costs; tools/bench_webhook.py). Stricter, not looser: no NaN, no
        # integers beyond 64 bits, neither of which a Kubernetes object holds.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "body is not valid UTF-8")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            if "depth limit" in str(e):
                return _error(400, f"body is nested deeper than {self.settings.max_depth} levels")
            return _error(400, f"body is not valid JSON ({e})")
        if not _depth_ok(doc, self.settings.max_depth):
            return _error(400, f"body is nested deeper than {self.settings.max_depth} levels")
        try:
            return parse_review(doc)
        except BadReview as e:
            return _error(400, str(e))

    def answer(self, endpoint: str, handler: Callable[[ReviewRequest], tuple[dict[str, Any], str, str]]) -> Response:
        started = now()
        parsed = self.read_review()
        if isinstance(parsed, Response):
            return parsed
        req = parsed
        try:
            body, outcome, reason = handler(req)
        except MustWait:  # answered again on a thread (offload.py): nothing counted or logged here
            raise
        except Exception:  # never crash a worker, never silently allow
            log.exception("internal error answering review", extra={"uid": req.uid, "kind": req.kind, "endpoint": endpoint})
            body = response(
                req, allowed=False, code=500, message=f"aim-engine webhook internal error (uid {req.uid}); see the webhook's logs"
            )
            outcome, reason = "error", "INTERNAL"
        elapsed = now() - started
        DURATION.labels(endpoint=endpoint).observe(elapsed)
        REQUESTS.labels(
            endpoint=endpoint, kind=req.kind or "-", operation=req.operation or "-", outcome=outcome, reason=reason
        ).inc()
        if outcome != "skipped":
            log.info(
                "%s %s %s/%s: %s%s",
                endpoint,
                req.kind,
                req.namespace,
                req.name,
                outcome,
                f" ({reason})" if reason else "",
                extra={
                    "uid": req.uid,
                    "kind": req.kind,
                    "namespace": req.namespace,
                    "object_name": req.name,
                    "user": req.user,
                    "operation": req.operation,
                    "endpoint": endpoint,
                    "outcome": outcome,
                    "reason": reason,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        return Response(orjson.dumps(body), status=200, mimetype="application/json")

    def prepare(self, req: ReviewRequest) -> tuple[Any, str] | None:
        """(workload, '') for a policed object naming a recipe; None to pass it untouched."""
        if req.namespace in self.settings.exempt_namespaces or req.operation not in ("CREATE", "UPDATE"):
            return None
        if req.kind not in POLICED_KINDS:
            return None
        workload = parse_workload(req.object, kind=req.kind, namespace=req.namespace)
        if workload is None:
            return None
        return workload, ""

    def validate(self, req: ReviewRequest) -> tuple[dict[str, Any], str, str]:
        try:
            prepared = self.prepare(req)
        except MalformedObject as e:
            return response(req, allowed=False, code=400, message=f"aim-engine: malformed {req.kind}: {e}"), "denied", "MALFORMED"
        except InputError as e:
            return response(req, allowed=False, code=400, message=f"aim-engine: malformed {req.kind}: {e}"), "denied", "MALFORMED"
        if prepared is None:
            return response(req, allowed=True), "skipped", ""
        workload = prepared[0]
        if template_unchanged(req):
            try:  # its shape is still checked: a malformed object is a 400 whatever changed
                for t in workload.templates:
                    container_index(t, as_map(t.metadata.get("annotations"), "metadata.annotations"), frozenset())
            except MalformedObject as e:
                return (
                    response(req, allowed=False, code=400, message=f"aim-engine: malformed {req.kind}: {e}"),
                    "denied",
                    "MALFORMED",
                )
            return response(req, allowed=True), "skipped", "TEMPLATE_UNCHANGED"
        resolution = self.resolver.resolve(workload)
        if resolution.recipe is None and resolution.not_ours:
            return response(req, allowed=True, warnings=[resolution.problem]), "allowed", "NOT_OURS"
        if resolution.recipe is None:
            return (
                response(req, allowed=False, message=f"aim-engine: {req.kind} {workload.name}: {resolution.problem}"),
                "denied",
                "RECIPE_NOT_FOUND",
            )
        recipe = resolution.recipe
        model = self.models.get(recipe.model_key)

        def judge() -> tuple[Finding, ...]:
            judged = workload
            if delegated(judged):
                # Its Pods get the recipe at creation: judge what they will be, i.e. the controller as
                # mutated (explicit values stay, so every contradiction the user wrote still shows).
                injected = apply(req.object, mutate(judged, recipe, catalog=self.bundle.hardware).patch)
                judged = parse_workload(injected, kind=req.kind, namespace=req.namespace) or judged
            return tuple(
                check_workload(
                    judged,
                    recipe,
                    model=model,
                    catalog=self.bundle.hardware,
                    registry=self.bundle.registry,
                    toggles=self.settings.toggles,
                )
            )

        try:
            findings = list(self.verdicts.get(fingerprint(workload), recipe, judge))
        except (MalformedObject, InputError) as e:
            return response(req, allowed=False, code=400, message=f"aim-engine: malformed {req.kind}: {e}"), "denied", "MALFORMED"
        warnings = [] if model is not None else [f"model {recipe.huggingface_id} not analysed: memory fit not checked"]
        if findings:
            return (
                response(
                    req, allowed=False, message=_summarise(req.kind, workload.name, recipe.recipe_id, findings), warnings=warnings
                ),
                "denied",
                findings[0].code,
            )
        return response(req, allowed=True, warnings=warnings), "allowed", ""

    def mutate_review(self, req: ReviewRequest) -> tuple[dict[str, Any], str, str]:
        if not self.settings.mutate:
            return response(req, allowed=True), "skipped", ""
        try:
            prepared = self.prepare(req)
        except (MalformedObject, InputError) as e:
            return response(req, allowed=True, warnings=[f"not mutated: {e}"]), "allowed", "MALFORMED"
        if prepared is None:
            return response(req, allowed=True), "skipped", ""
        workload = prepared[0]
        resolution = self.resolver.resolve(workload)
        if resolution.recipe is None:
            return response(req, allowed=True, warnings=[f"not mutated: {resolution.problem}"]), "allowed", "RECIPE_NOT_FOUND"
        if delegated(workload):
            # The recipe goes into each Pod at creation, from the ConfigMap as it is then: freezing
            # it into the template would turn today's recipe into "explicit user values" tomorrow.
            return response(req, allowed=True), "skipped", ""
        try:
            recipe, affinity = resolution.recipe, resolution.node_affinity

            def inject() -> Injection:
                m = mutate(workload, recipe, catalog=self.bundle.hardware, node_affinity=affinity)
                return Injection(encoded_patch=encode_patch(m.patch), warnings=tuple(m.warnings))

            result = self.patches.get((fingerprint(workload), affinity), recipe, inject)
        except (MalformedObject, InputError) as e:
            return response(req, allowed=True, warnings=[f"not mutated: {e}"]), "allowed", "MALFORMED"
        outcome = "patched" if result.encoded_patch else "allowed"
        return response(req, allowed=True, encoded_patch=result.encoded_patch, warnings=result.warnings), outcome, ""


def create_app(
    *,
    bundle: Bundle,
    resolver: RecipeResolver,
    settings: Settings,
    ready: Callable[[], bool] = lambda: True,
    extra_metrics: CollectorRegistry | None = None,
) -> Flask:
    app = Flask("aim_webhook")
    baselines = CollectorRegistry()
    baselines.register(BaselineCollector(bundle.recipes))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    reviewer = Reviewer(bundle=bundle, resolver=resolver, settings=settings)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        return _error(e.code or 500, e.description or e.name)

    @app.errorhandler(MustWait)
    def must_wait(e: MustWait) -> Response:
        # Never sent: the worker discards this answer and answers the request on a thread.
        return Response(f"moved to a thread: {e.what}\n", status=503, mimetype="text/plain")

    @app.post("/validate")
    def validate_endpoint() -> Response:
        return reviewer.answer("validate", reviewer.validate)

    @app.post("/mutate")
    def mutate_endpoint() -> Response:
        return reviewer.answer("mutate", reviewer.mutate_review)

    @app.post("/noop")
    def noop_endpoint() -> Response:
        """The floor for benchmarks: same parsing and envelope, no policy."""
        return reviewer.answer("noop", lambda req: (response(req, allowed=True), "allowed", ""))

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        if ready():
            return Response("ready\n", mimetype="text/plain")
        return Response("not ready\n", status=503, mimetype="text/plain")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(render_metrics(extra_metrics, baselines), mimetype="text/plain; version=0.0.4")

    return app
