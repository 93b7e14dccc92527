"""Dashboards: generated from tools/gen_dashboards.py (no drift), current schema, datasource as a
variable, templated by namespace, model and recipe."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
BOARDS = sorted((ROOT / "dashboards").glob("*.json"))


def _generator():
    spec = importlib.util.spec_from_file_location("gen_dashboards", ROOT / "tools" / "gen_dashboards.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dashboards_match_their_generator():
    rendered = _generator().render()
    assert sorted(rendered) == [p.name for p in BOARDS]
    for path in BOARDS:
        assert path.read_text() == rendered[path.name], f"{path.name} drifted: run tools/gen_dashboards.py"


def test_the_six_dashboards_the_issue_names():
    titles = {json.loads(p.read_text())["title"] for p in BOARDS}
    assert titles == {
        "AIM Engine Recipe Selection",
        "AIM Engine Recipe Performance",
        "AIM Engine Recipe Latency",
        "AIM Engine Resource Utilisation",
        "AIM Engine Admission Webhook",
        "AIM Engine Optimisation Recommendations",
    }


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_dashboard_shape(path):
    board = json.loads(path.read_text())
    assert board["schemaVersion"] >= 39 and board["uid"].startswith("aim-engine-")
    names = [v["name"] for v in board["templating"]["list"]]
    assert names[0] == "datasource" and "namespace" in names and "recipe" in names
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
