"""Shared helpers for webhook tests: fixtures, a JSON Patch applier (RFC 6902 add/replace)."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

ADMISSION = Path(__file__).resolve().parent.parent / "fixtures" / "admission"


def review(name: str) -> dict[str, Any]:
    return json.loads((ADMISSION / name).read_text())


def all_reviews() -> list[str]:
    return sorted(p.name for p in ADMISSION.glob("*.json"))


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(doc: Any, patch: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in patch:
        assert op["op"] in ("add", "replace"), op
        parts = [_unescape(p) for p in op["path"].split("/")[1:]]
        target = doc
        for p in parts[:-1]:
            target = target[int(p)] if isinstance(target, list) else target[p]
        last = parts[-1]
        if isinstance(target, list):
            if last == "-":
                target.append(copy.deepcopy(op["value"]))
            elif op["op"] == "replace":
                target[int(last)] = copy.deepcopy(op["value"])
            else:
                target.insert(int(last), copy.deepcopy(op["value"]))
        else:
            target[last] = copy.deepcopy(op["value"])  # add and replace of a member
    return doc


def decode_patch(resp: dict[str, Any]) -> list[dict[str, Any]]:
    r = resp["response"]
    if "patch" not in r:
        return []
    assert r["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(r["patch"]))
