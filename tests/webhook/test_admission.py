"""Admission reviews on real AdmissionReview fixtures: the contract, each validation family,
mutation, idempotency, and the ConfigMap path."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import all_reviews, apply_patch, decode_patch, review

from aim_engine.rules.workload import Toggles
from aim_webhook.app import Settings, create_app
from aim_webhook.recipes import RecipeResolver


def post(client, path, body):
    resp = client.post(path, json=body)
    assert resp.status_code == 200, resp.data
    return resp.get_json()


def check_contract(req, out):
    assert out["apiVersion"] == req["apiVersion"] and out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == req["request"]["uid"]
    for w in out["response"].get("warnings", []):
        assert len(w) <= 120
    if "patch" in out["response"]:
        assert out["response"]["patchType"] == "JSONPatch" and decode_patch(out)
    if not out["response"]["allowed"]:
        assert out["response"]["status"]["code"] in (400, 403, 500) and out["response"]["status"]["message"]


@pytest.mark.parametrize("name", all_reviews())
@pytest.mark.parametrize("path", ["/validate", "/mutate"])
def test_every_fixture_gets_a_well_formed_answer(client, name, path):
    req = review(name)
    check_contract(req, post(client, path, req))


def test_good_deployment_is_allowed(client):
    out = post(client, "/validate", review("deployment-good.json"))
    assert out["response"]["allowed"] is True and "status" not in out["response"]


@pytest.mark.parametrize(
    ("name", "code", "fragments"),
    [
        (
            "deployment-gpu-count-mismatch.json",
            "GPU_COUNT_MISMATCH",
            ["resources.limits[amd.com/gpu] is 2", "needs 1", 'set it to "1"'],
        ),
        ("deployment-tp-mismatch.json", "PARALLELISM_MISMATCH", ["--tensor-parallel-size 2", "needs 1"]),
        ("deployment-fp8-on-a100.json", "PRECISION_UNSUPPORTED", ["A100 cannot run fp8", "remove --quantization fp8"]),
        ("deployment-memory-too-small.json", "RESOURCES_BELOW_RECIPE", ["requests.memory is 8Gi", "at least 32Gi"]),
        ("deployment-kv-cache-too-small.json", "KV_CACHE_TOO_SMALL", ["KV cache holds 32752 tokens", "max_model_len <= 32752"]),
        ("deployment-wrong-hardware.json", "HARDWARE_MISMATCH", ["nodeSelector selects H100 nodes", "is for MI300X"]),
        ("deployment-unknown-recipe.json", None, ["recipe no-such-recipe is not in the catalog"]),
        ("deployment-slo-unmet.json", "SLO_THROUGHPUT", ["10000 tok/s", "expects 3140"]),
        ("deployment-malformed-containers.json", None, ["malformed Deployment", "containers must be a list"]),
        ("deployment-bad-quantity.json", None, ["malformed Deployment", "'lots' is not a Kubernetes quantity"]),
        ("deployment-null-object.json", None, ["object is empty or null"]),
        ("deployment-bare.json", "GPU_LIMIT_MISSING", ["has no amd.com/gpu"]),
        (
            "deployment-wrong-model-positional.json",
            "MODEL_MISMATCH",
            ["serves meta-llama/Llama-3.1-8B-Instruct (positional argument to `vllm serve`)", "is for Qwen/Qwen3-32B"],
        ),
        (
            "deployment-wrong-model-equals.json",
            "MODEL_MISMATCH",
            ["serves meta-llama/Llama-3.1-8B-Instruct (--model= to the image's entrypoint)", "fix: serve Qwen/Qwen3-32B"],
        ),
        (
            "deployment-local-path-undeclared.json",
            "MODEL_MISMATCH",
            ["serves /models/qwen3-32b", "annotate the pod template with aim-engine.io/served-model: Qwen/Qwen3-32B"],
        ),
    ],
)
def test_bad_workloads_are_denied_with_field_value_and_fix(client, name, code, fragments):
    out = post(client, "/validate", review(name))
    r = out["response"]
    assert r["allowed"] is False, r
    for fragment in fragments + ([f"[{code}]"] if code else []):
        assert fragment in r["status"]["message"], r["status"]["message"]


@pytest.mark.parametrize("name", ["deployment-unmanaged.json", "deployment-kube-system.json"])
def test_objects_that_are_not_ours_pass_untouched(client, name):
    for path in ("/validate", "/mutate"):
        r = post(client, path, review(name))["response"]
        assert r["allowed"] is True and "patch" not in r and "warnings" not in r


@pytest.mark.parametrize(
    "name",
    [
        "deployment-bare.json",
        "pod-from-replicaset.json",
        "statefulset-good.json",
        "leaderworkerset-multinode.json",
        "pod-lws-leader.json",
        "pod-lws-worker.json",
        "deployment-good.json",
    ],
)
def test_mutation_makes_the_object_valid_and_is_idempotent(client, name):
    req = review(name)
    out = post(client, "/mutate", req)
    patched = apply_patch(req["request"]["object"], decode_patch(out))
    req2 = {**req, "request": {**req["request"], "object": patched}}
    again = post(client, "/mutate", req2)
    assert "patch" not in again["response"], decode_patch(again)
    assert post(client, "/validate", req2)["response"]["allowed"] is True, post(client, "/validate", req2)


def test_bare_deployment_gets_the_recipe(client):
    req = review("deployment-bare.json")
    patched = apply_patch(req["request"]["object"], decode_patch(post(client, "/mutate", req)))
    tpl = patched["spec"]["template"]
    c = tpl["spec"]["containers"][0]
    assert c["resources"]["limits"]["amd.com/gpu"] == "1" and c["resources"]["requests"]["memory"] == "32Gi"
    assert (
        "--tensor-parallel-size" in c["args"] and "--quantization" in c["args"] and c["args"][:2] == ["--model", "Qwen/Qwen3-32B"]
    )
    assert {e["name"] for e in c["env"]} >= {"HIP_FORCE_DEV_KERNARG", "VLLM_ROCM_USE_AITER"}
    labels = tpl["metadata"]["labels"]
    assert labels["aim-engine.io/gpu-model"] == "MI300X" and labels["aim-engine.io/tensor-parallel-size"] == "1"
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tpl["spec"]["tolerations"]
    assert "volumes" not in tpl["spec"]  # one GPU: no shared-memory volume


def test_multi_gpu_recipes_get_a_memory_backed_dev_shm(client, wbundle):
    req = review("deployment-bare.json")
    obj = req["request"]["object"]
    for labels in (obj["metadata"]["labels"], obj["spec"]["template"]["metadata"]["labels"]):
        labels["aim-engine.io/recipe-id"] = "qwen3-32b-mi300x-4gpu-bf16"
    patched = apply_patch(obj, decode_patch(post(client, "/mutate", req)))
    spec = patched["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "aim-dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
    assert {"name": "aim-dshm", "mountPath": "/dev/shm"} in spec["containers"][0]["volumeMounts"]
    assert "NCCL_MIN_NCHANNELS" in {e["name"] for e in spec["containers"][0]["env"]}


def test_user_values_are_never_overwritten_but_reported(client):
    req = review("deployment-good.json")
    c = req["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
    c["resources"]["limits"]["memory"] = "200Gi"
    c["args"] += ["--max-num-seqs", "64"]
    out = post(client, "/mutate", req)
    ops = decode_patch(out)
    assert not any(op["path"].endswith("/memory") for op in ops)
    assert any("limits.memory=200Gi kept" in w for w in out["response"]["warnings"])
    assert any("--max-num-seqs 64 kept" in w for w in out["response"]["warnings"])


def test_patch_paths_escape_slashes(client):
    out = post(client, "/mutate", review("pod-from-replicaset.json"))
    paths = [op["path"] for op in decode_patch(out)]
    assert "/metadata/labels/aim-engine.io~1gpu-model" in paths


def test_leaderworkerset_args_only_on_the_leader(client):
    req = review("leaderworkerset-multinode.json")
    out = post(client, "/mutate", req)
    patched = apply_patch(req["request"]["object"], decode_patch(out))
    lwt = patched["spec"]["leaderWorkerTemplate"]
    assert "--max-model-len" in lwt["leaderTemplate"]["spec"]["containers"][0]["args"]
    assert "args" not in lwt["workerTemplate"]["spec"]["containers"][0]
    assert lwt["workerTemplate"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_pods_of_a_leaderworkerset_group_are_judged_as_members(client):
    """The Pods a LeaderWorkerSet creates (worker index and group size from its controller): the
    worker runs `ray start`, not `vllm serve`, so it is neither refused for lacking the parallelism
    flags nor given them; both get the per-node GPUs, env and /dev/shm."""
    worker = review("pod-lws-worker.json")
    mutated = apply_patch(worker["request"]["object"], decode_patch(post(client, "/mutate", worker)))
    after = {**worker, "request": {**worker["request"], "object": mutated}}
    assert post(client, "/validate", after)["response"]["allowed"] is True  # as the API server calls them
    w = mutated["spec"]
    assert w["containers"][0]["command"][-1].startswith("ray start")
    assert "args" not in w["containers"][0]
    assert w["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in w["volumes"])
    leader = review("pod-lws-leader.json")
    out = post(client, "/mutate", leader)
    ld = apply_patch(leader["request"]["object"], decode_patch(out))["spec"]
    args = " ".join(ld["containers"][0]["args"])
    assert "--tensor-parallel-size 8" in args and "--pipeline-parallel-size 2" in args and "--max-model-len" in args
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in ld["volumes"])


@pytest.mark.parametrize("forwards", [True, False])
def test_a_shell_script_gets_the_recipe_args_only_when_it_forwards_them(client, forwards):
    """The chart's LeaderWorkerSet leader starts the Ray head, then `exec vllm serve MODEL "$@"`:
    arguments appended to the container reach vLLM, so the recipe's flags are injected; a script
    that does not forward them is left alone with a warning."""
    req = review("pod-lws-leader.json")
    c = req["request"]["object"]["spec"]["containers"][0]
    tail = ' "$@"' if forwards else ""
    c["command"] = ["sh", "-c", f"ray start --head --port=6379 && exec vllm serve deepseek-ai/DeepSeek-R1{tail}", "vllm"]
    c.pop("args", None)
    out = post(client, "/mutate", req)
    patched = apply_patch(req["request"]["object"], decode_patch(out))
    args = patched["spec"]["containers"][0].get("args", [])
    if forwards:
        assert "--tensor-parallel-size" in args and "--pipeline-parallel-size" in args
        after = {**req, "request": {**req["request"], "object": patched}}
        assert post(client, "/validate", after)["response"]["allowed"] is True
    else:
        assert args == []
        assert any("shell script" in w for w in out["response"].get("warnings", []))


def test_a_leaderworkerset_worker_with_the_wrong_gpu_count_is_refused(client):
    req = review("pod-lws-worker.json")
    req["request"]["object"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    out = post(client, "/validate", req)["response"]
    assert out["allowed"] is False and "[GPU_COUNT_MISMATCH]" in out["status"]["message"]
    assert "needs 8" in out["status"]["message"]


def test_a_malformed_group_size_is_a_bad_request(client):
    req = review("pod-lws-worker.json")
    req["request"]["object"]["metadata"]["annotations"]["leaderworkerset.sigs.k8s.io/size"] = "two"
    out = post(client, "/validate", req)["response"]
    assert out["allowed"] is False and out["status"]["code"] == 400
    assert "leaderworkerset.sigs.k8s.io/size" in out["status"]["message"]


def test_recipe_from_the_release_configmap(client, configmaps, wbundle):
    recipe = next(r for r in wbundle.recipes if r.recipe_id == "qwen3-32b-mi300x-1gpu-fp8")
    configmaps[("inference", "aim-engine-recipe-config")] = {"data": {"recipe.yaml": yaml.safe_dump(recipe.to_seed())}}
    req = review("deployment-good.json")
    tpl = req["request"]["object"]["spec"]["template"]
    tpl["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "aim-engine-recipe-config"}
    assert post(client, "/validate", req)["response"]["allowed"] is True
    tpl["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "missing"}
    r = post(client, "/validate", req)["response"]
    assert r["allowed"] is False and "recipe ConfigMap inference/missing not found" in r["status"]["message"]
    configmaps[("inference", "other")] = {"data": {"recipe.yaml": yaml.safe_dump({**recipe.to_seed(), "recipe_id": "other-id"})}}
    tpl["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "other"}
    r = post(client, "/validate", req)["response"]
    assert r["allowed"] is False and "holds recipe other-id" in r["status"]["message"]


@pytest.mark.parametrize(("error", "allowed"), [("forbidden", True), ("unreachable", False)])
def test_a_selection_this_webhook_may_not_read_is_left_to_its_own_release(wbundle, error, allowed):
    """Two releases in two namespaces: each webhook sees the other's objects (the configurations are
    cluster-wide) but may read ConfigMaps only in its own namespace. A 403 means "not mine": allowed
    with a warning, the other release's webhook judges it (found end to end). Any other failure to
    read still denies."""
    from aim_engine.adapters.kube import Forbidden, KubeError

    def read(ns, name):
        if error == "forbidden":
            raise Forbidden(f"read configmap {ns}/{name}: 403 Forbidden")
        raise KubeError(f"read configmap {ns}/{name}: cannot reach the API server")

    app = create_app(bundle=wbundle, resolver=RecipeResolver(wbundle, read_configmap=read, ttl_seconds=0), settings=Settings())
    req = review("deployment-good.json")
    req["request"]["object"]["spec"]["template"]["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "r-recipe-config"}
    out = post(app.test_client(), "/validate", req)["response"]
    assert out["allowed"] is allowed
    if allowed:
        assert "not judged here" in out["warnings"][0] and "the release in inference judges it" in out["warnings"][0]


def test_validation_families_can_be_switched_off(wbundle):
    resolver = RecipeResolver(wbundle, read_configmap=None)
    off = create_app(bundle=wbundle, resolver=resolver, settings=Settings(toggles=Toggles(False, False, False))).test_client()
    for name in ("deployment-gpu-count-mismatch.json", "deployment-tp-mismatch.json", "deployment-slo-unmet.json"):
        assert post(off, "/validate", review(name))["response"]["allowed"] is True


def test_delete_and_connect_are_not_policed(client):
    req = review("deployment-gpu-count-mismatch.json")
    req["request"]["operation"] = "DELETE"
    assert post(client, "/validate", req)["response"]["allowed"] is True


def test_internal_error_denies_and_the_worker_survives(client, monkeypatch):
    import aim_webhook.app as app_mod

    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(app_mod, "check_workload", boom)
    r = post(client, "/validate", review("deployment-good.json"))["response"]
    assert r["allowed"] is False and r["status"]["code"] == 500 and "internal error" in r["status"]["message"]
    assert client.get("/healthz").status_code == 200


def _delegated(configmaps, wbundle, recipe_id="qwen3-32b-mi300x-4gpu-bf16"):
    recipe = next(r for r in wbundle.recipes if r.recipe_id == recipe_id)
    configmaps[("inference", "aim-engine-recipe-config")] = {"data": {"recipe.yaml": yaml.safe_dump(recipe.to_seed())}}
    req = review("deployment-bare.json")
    obj = req["request"]["object"]
    for labels in (obj["metadata"]["labels"], obj["spec"]["template"]["metadata"]["labels"]):
        labels["aim-engine.io/recipe-id"] = "selected"
    obj["spec"]["template"]["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "aim-engine-recipe-config"}
    return req


def test_delegated_controller_is_judged_as_its_pods_will_be(client, configmaps, wbundle):
    """The chart's Deployment says `recipe-id: selected`: no mutation at Deployment level (the Pods get
    the current recipe at creation), and validation sees the Deployment as injected."""
    req = _delegated(configmaps, wbundle)
    assert post(client, "/validate", req)["response"]["allowed"] is True
    out = post(client, "/mutate", req)
    assert "patch" not in out["response"]
    c = req["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
    c["args"] += ["--tensor-parallel-size", "2"]  # an explicit contradiction still shows
    r = post(client, "/validate", req)["response"]
    assert r["allowed"] is False and "[PARALLELISM_MISMATCH]" in r["status"]["message"]


def test_pods_of_a_delegated_controller_get_the_recipe_and_its_id(client, configmaps, wbundle):
    _delegated(configmaps, wbundle)
    req = review("pod-from-replicaset.json")
    pod = req["request"]["object"]
    pod["metadata"]["labels"]["aim-engine.io/recipe-id"] = "selected"
    pod["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "aim-engine-recipe-config"}
    patched = apply_patch(pod, decode_patch(post(client, "/mutate", req)))
    assert patched["metadata"]["labels"]["aim-engine.io/recipe-id"] == "qwen3-32b-mi300x-4gpu-bf16"
    assert patched["spec"]["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "4"
    req["request"]["object"] = patched
    assert post(client, "/validate", req)["response"]["allowed"] is True


H100_TERMS = {
    "nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}]}
    ]
}


def _h100_pod(configmaps, wbundle, terms=H100_TERMS):
    recipe = next(r for r in wbundle.recipes if r.recipe_id == "qwen3-32b-h100-1gpu-fp8")
    data = {"recipe.yaml": yaml.safe_dump(recipe.to_seed())}
    if terms is not None:
        data["node-affinity.json"] = terms if isinstance(terms, str) else json.dumps(terms)
    configmaps[("inference", "aim-engine-recipe-config")] = {"data": data}
    req = review("pod-from-replicaset.json")
    pod = req["request"]["object"]
    pod["metadata"]["labels"]["aim-engine.io/recipe-id"] = "selected"
    pod["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "aim-engine-recipe-config"}
    return req


def test_pods_are_kept_on_the_selected_products_nodes(client, configmaps, wbundle):
    """nvidia.com/gpu alone would let an H100 recipe land on an A100 node (found end to end): the
    selection's node terms become a required node affinity; mutating again changes nothing."""
    req = _h100_pod(configmaps, wbundle)
    patched = apply_patch(req["request"]["object"], decode_patch(post(client, "/mutate", req)))
    node = patched["spec"]["affinity"]["nodeAffinity"]
    assert node["requiredDuringSchedulingIgnoredDuringExecution"] == H100_TERMS
    assert node["preferredDuringSchedulingIgnoredDuringExecution"]  # the vendor preference stays
    again = {**req, "request": {**req["request"], "object": patched}}
    assert "patch" not in post(client, "/mutate", again)["response"]
    assert post(client, "/validate", again)["response"]["allowed"] is True


def test_a_required_node_affinity_of_the_users_is_kept_with_a_warning(client, configmaps, wbundle):
    req = _h100_pod(configmaps, wbundle)
    own = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["inference"]}]}]}
    req["request"]["object"]["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": own}}
    out = post(client, "/mutate", req)
    patched = apply_patch(req["request"]["object"], decode_patch(out))
    assert patched["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == own
    assert any("required node affinity kept" in w for w in out["response"]["warnings"])


def test_without_node_terms_only_the_vendor_preference_is_added(client, configmaps, wbundle):
    req = _h100_pod(configmaps, wbundle, terms=None)
    patched = apply_patch(req["request"]["object"], decode_patch(post(client, "/mutate", req)))
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in patched["spec"]["affinity"]["nodeAffinity"]


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        json.dumps({"nodeSelectorTerms": []}),
        json.dumps({"nodeSelectorTerms": [{"matchExpressions": [{"key": "k"}]}]}),
    ],
)
def test_a_malformed_node_affinity_in_the_selection_is_refused(client, configmaps, wbundle, bad):
    req = _h100_pod(configmaps, wbundle, terms=bad)
    out = post(client, "/validate", req)["response"]
    assert out["allowed"] is False and "node-affinity.json" in out["status"]["message"]
    assert "run the selector again" in out["status"]["message"]


def test_selected_without_a_configmap_is_refused(client):
    req = review("deployment-bare.json")
    req["request"]["object"]["metadata"]["labels"]["aim-engine.io/recipe-id"] = "selected"
    r = post(client, "/validate", req)["response"]
    assert r["allowed"] is False and "needs the annotation" in r["status"]["message"]


def test_pods_read_the_selection_fresh_while_controllers_may_use_the_cache(wbundle):
    """A helm upgrade rewrites the selection just before the rollout creates Pods: a Pod must never
    get the previous recipe from a cache."""
    configmaps = {}
    resolver = RecipeResolver(wbundle, read_configmap=lambda ns, name: configmaps.get((ns, name)), ttl_seconds=600)
    app = create_app(bundle=wbundle, resolver=resolver, settings=Settings()).test_client()
    by_id = {r.recipe_id: r for r in wbundle.recipes}
    req = review("pod-from-replicaset.json")
    pod = req["request"]["object"]
    pod["metadata"]["labels"]["aim-engine.io/recipe-id"] = "selected"
    pod["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "aim-engine-recipe-config"}
    for rid, gpus in (("qwen3-32b-mi300x-1gpu-fp8", "1"), ("qwen3-32b-mi300x-4gpu-bf16", "4")):
        configmaps[("inference", "aim-engine-recipe-config")] = {"data": {"recipe.yaml": yaml.safe_dump(by_id[rid].to_seed())}}
        patched = apply_patch(pod, decode_patch(post(app, "/mutate", req)))
        assert patched["metadata"]["labels"]["aim-engine.io/recipe-id"] == rid
        assert patched["spec"]["containers"][0]["resources"]["limits"]["amd.com/gpu"] == gpus


# The served model ------------------------------------------------------------------------------


def _message(client, req):
    r = post(client, "/validate", req)["response"]
    return r["allowed"], r.get("status", {}).get("message", "")


def test_a_wrong_model_is_reported_first(client):
    """The model decides whether the rest means anything: its finding leads the message."""
    allowed, message = _message(client, review("deployment-wrong-model-positional.json"))
    assert not allowed and message.index("[MODEL_MISMATCH]") == message.index("[")


def test_a_local_path_declared_on_the_pod_template_is_admitted(client):
    req = review("deployment-local-path-declared.json")
    assert _message(client, req) == (True, "")
    # Declared as another model: refused, whatever the path.
    req["request"]["object"]["spec"]["template"]["metadata"]["annotations"]["aim-engine.io/served-model"] = (
        "meta-llama/Llama-3.1-8B-Instruct"
    )
    allowed, message = _message(client, req)
    assert not allowed and "[MODEL_MISMATCH]" in message
    assert "aim-engine.io/served-model declares meta-llama/Llama-3.1-8B-Instruct" in message


def test_the_declaration_must_be_on_the_pod_template(client):
    """Pods carry their template's annotations, not the Deployment's: declared on the Deployment
    alone, its Pods would be refused at creation — so the Deployment is refused now, saying where
    the annotation belongs."""
    req = review("deployment-local-path-declared.json")
    obj = req["request"]["object"]
    obj["metadata"]["annotations"]["aim-engine.io/served-model"] = obj["spec"]["template"]["metadata"].pop("annotations")[
        "aim-engine.io/served-model"
    ]
    allowed, message = _message(client, req)
    assert not allowed and "[MODEL_MISMATCH]" in message and "to the pod template's" in message


def test_served_model_name_alone_does_not_make_a_path_the_recipes_model(client):
    req = review("deployment-local-path-undeclared.json")
    assert "--served-model-name" in req["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert _message(client, req)[0] is False


@pytest.mark.parametrize("model", ["qwen/qwen3-32b", "QWEN/QWEN3-32B", "Qwen/Qwen3-32B"])
def test_hub_ids_match_case_insensitively(client, model):
    req = review("deployment-wrong-model-positional.json")
    req["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["command"][2] = model
    assert _message(client, req) == (True, "")


def test_no_model_at_all_serves_vllms_default_and_is_refused(client):
    req = review("deployment-good.json")
    c = req["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
    c["args"] = c["args"][2:]  # drop --model Qwen/Qwen3-32B
    allowed, message = _message(client, req)
    assert not allowed and "[MODEL_MISSING]" in message and "Qwen/Qwen3-0.6B" in message
    assert "add --model Qwen/Qwen3-32B to the args" in message
    c["command"] = ["vllm", "serve"]
    allowed, message = _message(client, req)
    assert not allowed and "[MODEL_MISSING]" in message and "`vllm serve Qwen/Qwen3-32B`" in message


def test_the_api_server_module_reads_only_dash_dash_model(client):
    req = review("deployment-good.json")
    c = req["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
    c["command"] = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert _message(client, req) == (True, "")
    c["args"] = ["Qwen/Qwen3-32B", *c["args"][2:]]
    allowed, message = _message(client, req)
    assert not allowed and "[MODEL_MISSING]" in message and "ignores the positional Qwen/Qwen3-32B" in message
    c["args"] = ["--model", "meta-llama/Llama-3.1-8B-Instruct", *c["args"][1:]]
    allowed, message = _message(client, req)
    assert not allowed and "(--model to `python -m vllm.entrypoints.openai.api_server`)" in message


def test_statefulsets_and_pods_are_checked_alike(client):
    sts = review("statefulset-good.json")
    sts["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["args"][1] = "meta-llama/Llama-3.1-8B-Instruct"
    assert "[MODEL_MISMATCH]" in _message(client, sts)[1]
    pod = review("pod-from-replicaset.json")
    pod["request"]["object"]["spec"]["containers"][0]["args"] = ["--model", "/models/x"]
    assert "[MODEL_MISMATCH]" in _message(client, pod)[1]
    pod["request"]["object"]["metadata"]["annotations"] = {"aim-engine.io/served-model": "Qwen/Qwen3-32B"}
    patched = apply_patch(pod["request"]["object"], decode_patch(post(client, "/mutate", pod)))
    assert _message(client, {**pod, "request": {**pod["request"], "object": patched}}) == (True, "")


def test_a_leaderworkerset_is_judged_by_its_leader(client):
    """The leader serves; the workers run `ray start` and name no model (never refused for it)."""
    req = review("leaderworkerset-multinode.json")
    lwt = req["request"]["object"]["spec"]["leaderWorkerTemplate"]
    patched = apply_patch(req["request"]["object"], decode_patch(post(client, "/mutate", req)))
    assert _message(client, {**req, "request": {**req["request"], "object": patched}}) == (True, "")
    lwt["leaderTemplate"]["spec"]["containers"][0]["args"][1] = "deepseek-ai/DeepSeek-V3"
    allowed, message = _message(client, req)
    assert not allowed and "leaderTemplate.spec.containers" in message and "serves deepseek-ai/DeepSeek-V3" in message
    worker = review("pod-lws-worker.json")
    mutated = apply_patch(worker["request"]["object"], decode_patch(post(client, "/mutate", worker)))
    assert _message(client, {**worker, "request": {**worker["request"], "object": mutated}}) == (True, "")


@pytest.mark.parametrize(
    ("script", "ok"),
    [
        ('ray start --head --port=6379 && exec vllm serve deepseek-ai/DeepSeek-R1 "$@"', True),
        ('ray start --head\nexec vllm serve "meta-llama/Llama-3.1-8B-Instruct" "$@"', False),
        ('exec vllm serve "$@"', True),  # the model comes from the forwarded args (--model below)
        ("exec python3 -m vllm.entrypoints.openai.api_server --model deepseek-ai/DeepSeek-R1", True),
    ],
)
def test_a_leader_script_is_read_as_the_shell_runs_it(client, script, ok):
    req = review("pod-lws-leader.json")
    c = req["request"]["object"]["spec"]["containers"][0]
    c["command"] = ["sh", "-c", script, "vllm"]
    mutated = apply_patch(req["request"]["object"], decode_patch(post(client, "/mutate", req)))
    allowed, message = _message(client, {**req, "request": {**req["request"], "object": mutated}})
    assert allowed is ok, message
    if not ok:
        assert "[MODEL_MISMATCH]" in message


def test_the_selected_mode_checks_the_model_of_the_selection(client, configmaps, wbundle):
    """`recipe-id: selected`: the model is judged against the recipe the selection holds."""
    req = _delegated(configmaps, wbundle)
    c = req["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
    c["command"], c["args"] = ["vllm", "serve", "Qwen/Qwen3-32B"], []
    assert _message(client, req) == (True, "")
    _delegated(configmaps, wbundle, recipe_id="llama-3.1-70b-instruct-mi300x-2gpu-bf16")
    allowed, message = _message(client, req)
    assert not allowed and "[MODEL_MISMATCH]" in message and "is for meta-llama/Llama-3.1-70B-Instruct" in message


def test_the_model_check_is_part_of_recipe_compatibility(wbundle):
    off = create_app(
        bundle=wbundle,
        resolver=RecipeResolver(wbundle, read_configmap=None),
        settings=Settings(toggles=Toggles(check_recipe_compatibility=False)),
    ).test_client()
    assert post(off, "/validate", review("deployment-wrong-model-positional.json"))["response"]["allowed"] is True


@pytest.mark.parametrize(
    ("annotations", "allowed", "fragments"),
    [
        # The recipe (qwen3-32b-mi300x-1gpu-fp8: 3140 tok/s, 17.2 ms mean ITL, estimated) against the
        # selector's own SLO check: a mean above the p95 target is a miss.
        ({"aim-engine.io/slo-max-latency-ms": "15"}, False, ["[SLO_LATENCY]", "aim-engine.io/slo-max-latency-ms is 15 ms"]),
        # A mean within the target and no p95, no TTFT figure: not verified, not refused.
        ({"aim-engine.io/slo-max-latency-ms": "20", "aim-engine.io/slo-ttft-p95-ms": "500"}, True, []),
        ({"aim-engine.io/slo-ttft-p95-ms": "fast"}, False, ["SLO annotations must be positive numbers"]),
        ({"aim-engine.io/slo-min-tokens-per-second": "-5"}, False, ["SLO annotations must be positive numbers"]),
        ({"aim-engine.io/slo-ttft-p95-ms": "1e400"}, False, ["within ttft_p95_ms 1 to 600000 ms", "outside 1 to 600000"]),
    ],
)
def test_slo_annotations_are_held_to_the_recipe_by_the_selectors_check(client, annotations, allowed, fragments):
    body = review("deployment-slo-unmet.json")
    body["request"]["object"]["spec"]["template"]["metadata"]["annotations"] = annotations
    r = post(client, "/validate", body)["response"]
    assert r["allowed"] is allowed, r
    for fragment in fragments:
        assert fragment in r["status"]["message"], r["status"]["message"]


def test_a_pod_is_given_its_recipes_fingerprint_and_a_controller_is_not(client, wbundle):
    """The reconcile Job replaces Pods whose fingerprint is not their selection's now."""
    from aim_engine.domain.recipe import serving_fingerprint

    req = review("pod-from-replicaset.json")
    pod = apply_patch(req["request"]["object"], decode_patch(post(client, "/mutate", req)))
    recipe = next(r for r in wbundle.recipes if r.recipe_id == pod["metadata"]["labels"]["aim-engine.io/recipe-id"])
    assert pod["metadata"]["annotations"]["aim-engine.io/recipe-fingerprint"] == serving_fingerprint(recipe)
    req = review("deployment-bare.json")
    deployment = apply_patch(req["request"]["object"], decode_patch(post(client, "/mutate", req)))
    assert "aim-engine.io/recipe-fingerprint" not in (deployment["spec"]["template"]["metadata"].get("annotations") or {})


def test_an_update_that_leaves_the_pod_template_unchanged_is_not_judged_again(client):
    """A strategy patch (the selector hook's, before Helm applies a new template) on a Deployment
    whose template contradicts the recipe now selected: nothing new to judge, allowed; the same
    update with the template changed is judged and denied; a malformed object is still a 400."""
    import copy

    bad = review("deployment-gpu-count-mismatch.json")
    assert post(client, "/validate", bad)["response"]["allowed"] is False
    update = copy.deepcopy(bad)
    update["request"]["operation"] = "UPDATE"
    update["request"]["oldObject"] = copy.deepcopy(update["request"]["object"])
    update["request"]["object"]["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    out = post(client, "/validate", update)
    check_contract(update, out)
    assert out["response"]["allowed"] is True, out["response"]
    changed = copy.deepcopy(update)
    changed["request"]["oldObject"]["spec"]["template"]["metadata"].setdefault("annotations", {})["x"] = "y"
    assert post(client, "/validate", changed)["response"]["allowed"] is False
    malformed = review("deployment-malformed-containers.json")
    malformed["request"]["operation"] = "UPDATE"
    malformed["request"]["oldObject"] = copy.deepcopy(malformed["request"]["object"])
    assert post(client, "/validate", malformed)["response"]["status"]["code"] == 400
