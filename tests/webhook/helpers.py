"""Shared helpers for webhook tests: fixtures, a JSON Patch applier (RFC 6902 add/replace)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonpatch

ADMISSION = Path(__file__).resolve().parent.parent / "fixtures" / "admission"


def review(name: str) -> dict[str, Any]:
    return json.loads((ADMISSION / name).read_text())


def all_reviews() -> list[str]:
    return sorted(p.name for p in ADMISSION.glob("*.json"))


def apply_patch(doc: Any, patch: list[dict[str, Any]]) -> Any:
    """The webhook's patch applied by a real JSON Patch library, as the API server applies it."""
    return jsonpatch.apply_patch(doc, patch, in_place=False)


def decode_patch(resp: dict[str, Any]) -> list[dict[str, Any]]:
    r = resp["response"]
    if "patch" not in r:
        return []
    assert r["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(r["patch"]))
