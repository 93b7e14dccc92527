"""Properties: mutation is idempotent, and no input yields a 5xx."""

from __future__ import annotations

import copy
import json

from helpers import apply_patch, decode_patch, review
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_engine.adapters.catalog import load_bundle
from aim_webhook.app import Settings, create_app
from aim_webhook.recipes import RecipeResolver

BUNDLE = load_bundle()
CLIENT = create_app(bundle=BUNDLE, resolver=RecipeResolver(BUNDLE, read_configmap=None), settings=Settings()).test_client()
RECIPES = sorted(r.recipe_id for r in BUNDLE.recipes)
BASES = [
    "deployment-bare.json",
    "deployment-good.json",
    "pod-from-replicaset.json",
    "statefulset-good.json",
    "leaderworkerset-multinode.json",
]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)
)
json_value = st.recursive(
    json_leaf, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=20
)


@st.composite
def workloads(draw):
    req = review(draw(st.sampled_from(BASES)))
    obj = req["request"]["object"]
    rid = draw(st.sampled_from(RECIPES))
    obj["metadata"].setdefault("labels", {})["aim-engine.io/recipe-id"] = rid
    spec = obj["spec"]
    pod_spec = (
        spec["template"]["spec"]
        if "template" in spec
        else (spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"] if "leaderWorkerTemplate" in spec else spec)
    )
    c = pod_spec["containers"][0]
    if draw(st.booleans()):
        c["args"] = draw(
            st.lists(
                st.sampled_from(
                    [
                        "--tensor-parallel-size",
                        "2",
                        "--max-model-len",
                        "4096",
                        "--enforce-eager",
                        "--no-enable-prefix-caching",
                        "--quantization",
                        "fp8",
                        "-tp",
                        "8",
                        "x",
                    ]
                ),
                max_size=8,
            )
        )
    if draw(st.booleans()):
        c["env"] = [{"name": "HIP_FORCE_DEV_KERNARG", "value": draw(st.sampled_from(["0", "1"]))}]
    if draw(st.booleans()):
        c["resources"] = {
            "limits": {
                draw(st.sampled_from(["nvidia.com/gpu", "amd.com/gpu", "memory"])): draw(st.sampled_from(["1", "8", "64Gi"]))
            }
        }
    if draw(st.booleans()):
        pod_spec["volumes"] = [{"name": "cache", "emptyDir": {}}]
    return req


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=workloads())
def test_mutation_is_idempotent(req):
    out = CLIENT.post("/mutate", json=req).get_json()
    patched = apply_patch(req["request"]["object"], decode_patch(out))
    req2 = copy.deepcopy(req)
    req2["request"]["object"] = patched
    again = CLIENT.post("/mutate", json=req2).get_json()
    assert "patch" not in again["response"], decode_patch(again)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    req=workloads(),
    path=st.lists(
        st.sampled_from(
            [
                "spec",
                "template",
                "containers",
                "metadata",
                "labels",
                "resources",
                "request",
                "object",
                "0",
                "limits",
                "args",
                "nodeSelector",
            ]
        ),
        max_size=5,
    ),
    value=json_value,
    endpoint=st.sampled_from(["/validate", "/mutate"]),
)
def test_no_input_yields_a_5xx(req, path, value, endpoint):
    """Graft arbitrary JSON anywhere along a path in a real review: the answer is never a 5xx and
    never a denial with code 500."""
    doc = req
    target = doc
    for key in path:
        if isinstance(target, dict):
            if key not in target or not isinstance(target[key], dict | list):
                target[key] = value
                break
            target = target[key]
        elif isinstance(target, list) and target:
            target = target[0]
    resp = CLIENT.post(endpoint, data=json.dumps(doc), content_type="application/json")
    assert resp.status_code in (200, 400), resp.data
    if resp.status_code == 200:
        body = resp.get_json()
        status = body["response"].get("status") or {}
        assert status.get("code") != 500, status
