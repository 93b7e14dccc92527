"""The admission.k8s.io/v1 AdmissionReview contract: parse a request, build a response.

Responses echo apiVersion, kind and uid; carry a base64 JSONPatch only when it is non-empty;
warnings are at most 120 characters; a denial has status.code and status.message."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

MAX_WARNING = 120


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    api_version: str
    uid: str
    kind: str
    group: str
    namespace: str
    name: str
    operation: str
    user: str
    object: Any
    old_object: Any
    dry_run: bool


def parse_review(doc: Any) -> ReviewRequest:
    if not isinstance(doc, Mapping):
        raise BadReview("body is not a JSON object")
    api_version = doc.get("apiVersion")
    if api_version not in ("admission.k8s.io/v1", "admission.k8s.io/v1beta1") or doc.get("kind") != "AdmissionReview":
        raise BadReview("body is not an admission.k8s.io/v1 AdmissionReview")
    req = doc.get("request")
    if not isinstance(req, Mapping):
        raise BadReview("AdmissionReview has no request")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("AdmissionReview request has no uid")
    kind = req.get("kind")
    kind_name = kind.get("kind") if isinstance(kind, Mapping) else None
    group = kind.get("group", "") if isinstance(kind, Mapping) else ""
    user_info = req.get("userInfo")
    user = user_info.get("username", "") if isinstance(user_info, Mapping) else ""
    return ReviewRequest(
        api_version=str(api_version),
        uid=uid,
        kind=str(kind_name or ""),
        group=str(group or ""),
        namespace=str(req.get("namespace") or ""),
        name=str(req.get("name") or ""),
        operation=str(req.get("operation") or ""),
        user=str(user or ""),
        object=req.get("object"),
        old_object=req.get("oldObject"),
        dry_run=bool(req.get("dryRun")),
    )


# Where a controller keeps the pods it makes (the Pods themselves are judged at creation).
POD_TEMPLATE_FIELD = {"Deployment": "template", "StatefulSet": "template", "LeaderWorkerSet": "leaderWorkerTemplate"}


def template_unchanged(req: ReviewRequest) -> bool:
    """An UPDATE of a controller that leaves its pod template as it was (a strategy, replicas or
    label change): it makes no pod its template was not judged for, and every Pod is judged at
    creation, so there is nothing new to judge — nor a selection to read, which may meanwhile name
    the recipe of the template Helm is about to apply."""
    field = POD_TEMPLATE_FIELD.get(req.kind)
    if field is None or req.operation != "UPDATE":
        return False
    new, old = req.object, req.old_object
    if not isinstance(new, Mapping) or not isinstance(old, Mapping):
        return False
    new_spec, old_spec = new.get("spec"), old.get("spec")
    if not isinstance(new_spec, Mapping) or not isinstance(old_spec, Mapping) or field not in new_spec:
        return False
    return bool(new_spec.get(field) == old_spec.get(field))


def encode_patch(patch: Sequence[Mapping[str, Any]]) -> str:
    """A JSON Patch as the response carries it (base64 of its JSON); empty for no operations."""
    return base64.b64encode(orjson.dumps(list(patch))).decode() if patch else ""


def trim_warning(text: str) -> str:
    return text if len(text) <= MAX_WARNING else text[: MAX_WARNING - 1] + "…"


def response(
    req: ReviewRequest,
    *,
    allowed: bool,
    message: str = "",
    code: int = 403,
    patch: Sequence[Mapping[str, Any]] = (),
    encoded_patch: str = "",
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The AdmissionReview answering `req`. The patch as operations, or already encoded
    (`encode_patch`: a memoised mutation is encoded once, not at every review)."""
    body: dict[str, Any] = {"uid": req.uid, "allowed": allowed}
    if not allowed:
        body["status"] = {"code": code, "message": message, "reason": "Forbidden" if code == 403 else "InternalError"}
    encoded_patch = encoded_patch or encode_patch(patch)
    if encoded_patch:
        body["patchType"] = "JSONPatch"
        body["patch"] = encoded_patch
    if warnings:
        body["warnings"] = [trim_warning(w) for w in warnings]
    return {"apiVersion": req.api_version, "kind": "AdmissionReview", "response": body}
