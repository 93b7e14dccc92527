"""tools/render_chart.py validates LeaderWorkerSets against the CRD's own structural schema,
strictly: it must accept the chart's render and refuse what the API server would refuse or prune."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import render_chart  # noqa: E402


@pytest.fixture(scope="module")
def lws() -> dict:
    if not render_chart.CRD_FILES["LeaderWorkerSet"].exists():
        pytest.fail("LeaderWorkerSet CRD missing: run make setup")
    docs = render_chart.render(render_chart.HELMS["helm3"], "aim-engine", ROOT / "chart/ci/leaderworkerset-values.yaml")
    return next(d for d in docs if d["kind"] == "LeaderWorkerSet")


def test_the_charts_leaderworkerset_is_valid(lws):
    assert render_chart.crd_errors(lws, "t") == []


def test_an_unknown_field_is_refused(lws):
    bad = copy.deepcopy(lws)
    bad["spec"]["leaderWorkerTemplate"]["groupSize"] = 2
    errors = render_chart.crd_errors(bad, "t")
    assert errors and "groupSize" in errors[0]


def test_a_wrong_type_is_refused(lws):
    bad = copy.deepcopy(lws)
    bad["spec"]["leaderWorkerTemplate"]["size"] = "two"
    assert any("'two' is not of type 'integer'" in e for e in render_chart.crd_errors(bad, "t"))


def test_int_or_string_fields_take_both(lws):
    ok = copy.deepcopy(lws)
    rolling = {"maxUnavailable": "50%", "maxSurge": 1}
    ok["spec"]["rolloutStrategy"] = {"type": "RollingUpdate", "rollingUpdateConfiguration": rolling}
    assert render_chart.crd_errors(ok, "t") == []


def test_helm_refuses_leaderworkerset_without_the_crd():
    out = subprocess.run(
        [
            str(render_chart.HELMS["helm3"]),
            "template",
            "x",
            str(ROOT / "chart"),
            "-f",
            str(ROOT / "chart/ci/leaderworkerset-values.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "needs the LeaderWorkerSet CRD and controller" in out.stderr
