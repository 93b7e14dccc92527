"""Reviews answered in the worker's event loop, and the one kind that leaves it: a review that must
read a recipe ConfigMap from the API server moves to a thread before anything is answered, and
gets the same answer it would have had there (offload.py). A real gunicorn server over TLS, its API
reads against a stand-in API server over real HTTP."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from helpers import review
from server import start

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "edge"))
from fake_apiserver import FakeApiServer

pytestmark = pytest.mark.integration

RECIPE_ID = "qwen3-32b-mi300x-4gpu-bf16"


def _post(server, path, body):
    conn = server.connection()
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())["response"]
    finally:
        conn.close()


def _offloaded(server) -> float:
    conn = server.connection()
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    m = re.search(r"^aim_webhook_offloaded_requests_total (\S+)$", text, re.M)
    return float(m[1]) if m else 0.0


@pytest.fixture
def kube_server(tmp_path, wbundle):
    recipe = next(r for r in wbundle.recipes if r.recipe_id == RECIPE_ID)
    with FakeApiServer(nodes=[], pods=[]) as api:
        api.configmaps[("inference", "aim-engine-recipe-config")] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "aim-engine-recipe-config", "namespace": "inference"},
            "data": {"recipe.yaml": yaml.safe_dump(recipe.to_seed())},
        }
        kubeconfig = tmp_path / "kubeconfig"
        api.kubeconfig(kubeconfig)
        server = start(tmp_path, workers=1, threads=2, kubeconfig=kubeconfig)
        try:
            yield server, api
        finally:
            server.stop()


def test_a_review_that_reads_the_api_moves_to_a_thread_and_gets_its_answer(kube_server):
    server, api = kube_server
    catalog = review("deployment-good.json")  # a catalog recipe: nothing to read, answered in the loop
    assert _post(server, "/validate", catalog)["allowed"] is True
    assert _offloaded(server) == 0

    req = review("pod-from-replicaset.json")  # a Pod of the chart's Deployment: its selection is read fresh
    pod = req["request"]["object"]
    pod["metadata"]["labels"]["aim-engine.io/recipe-id"] = "selected"
    pod["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "aim-engine-recipe-config"}
    before = sum(1 for r in api.requests if "configmaps/aim-engine-recipe-config" in r)
    out = _post(server, "/mutate", req)
    assert out["allowed"] is True
    patch = json.loads(base64.b64decode(out["patch"]))
    assert any(op["value"] == RECIPE_ID for op in patch if op["path"].endswith("recipe-id")), patch
    # Read once, on the thread (the event loop stopped before the read), and counted once.
    assert sum(1 for r in api.requests if "configmaps/aim-engine-recipe-config" in r) == before + 1
    assert _offloaded(server) == 1
    assert "moved to a thread" not in server.logs()

    # The connection the offloaded review came on carries on: keep-alive, in the loop again.
    conn = server.connection()
    for body, path in ((req, "/validate"), (catalog, "/validate"), (req, "/mutate")):
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["response"]["uid"] == body["request"]["uid"]
    conn.close()
    assert _offloaded(server) == 3
