"""End to end on a real cluster: Helm installs the chart with the seed's production command (in a
namespace of this module's, `aim-e2e-prod`: the demo installs the same command into `aim-engine`), the
pre-install hook Job runs the recipe selector in our image on a real kubelet, the webhook Deployment
serves the API server through its Service, and the vLLM Pods land on (kwok) GPU nodes with the
selected recipe injected. Bad Deployments are refused through `kubectl apply` with the webhook's
message; upgrade rolls the pods onto a new selection; uninstall leaves no webhook configuration.

The tests share one release and run in file order (each leaves the cluster as the next expects).
Some change the whole cluster for a while (the product's nodes tainted, the webhook scaled to zero
under `Fail`, every webhook configuration checked gone): tools/e2e.py runs this module in a phase
of its own, with nothing beside it."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

import realcluster
from localcluster import wait_for

from .conftest import IMAGE_VALUES, ROOT, E2ECluster, own_webhook

NS = "aim-e2e-prod"
# This module's GPU nodes: a pool of its own (labelled and tainted), which only its releases select
# and tolerate (workload.node_selector and workload.tolerations, which the selector hook honours), so
# that tainting a product's nodes here changes no other module's selection.
POOL_KEY = "aim-e2e/pool"
POOL = "prod"
POOL_NODES: list[tuple[str, dict[str, str], str]] = [
    ("prod-mi300x-0", realcluster.AMD_MI300X, "amd.com/gpu"),
    ("prod-mi300x-1", realcluster.AMD_MI300X, "amd.com/gpu"),
    ("prod-h100-0", realcluster.GFD_H100, "nvidia.com/gpu"),
    ("prod-h100-1", realcluster.GFD_H100, "nvidia.com/gpu"),
    ("prod-a100-0", realcluster.GFD_A100, "nvidia.com/gpu"),
]
POOL_TOLERATION = {"key": POOL_KEY, "operator": "Equal", "value": POOL, "effect": "NoSchedule"}
POOL_SETS = [
    "--set-string", f"workload.node_selector.{POOL_KEY}={POOL}",
    "--set-json", "workload.tolerations=" + json.dumps([POOL_TOLERATION]),
]  # fmt: skip
APPS = "aim-e2e"
FIXTURES = ROOT / "tests" / "fixtures" / "admission"
VALIDATOR = "aim-engine-recipe-validator"
INFERENCE = "app.kubernetes.io/instance=aim-engine,app.kubernetes.io/component=inference"


def image_sets() -> list[str]:
    return [x for k, v in IMAGE_VALUES.items() for x in ("--set", f"{k}={v}")]


def upgrade(e2e: E2ECluster, *sets: str, wait: bool = False) -> Any:
    """helm upgrade of the suite's release, keeping its values, with `--set` for each of `sets`."""
    waiting = ["--wait", "--timeout", "5m"] if wait else []
    args = [x for kv in sets for x in ("--set", kv)]
    return e2e.helm("upgrade", "aim-engine", str(ROOT / "chart"), "-n", NS, "--reuse-values", *args, *waiting)


def get(e2e: E2ECluster, *args: str) -> Any:
    return json.loads(e2e.kubectl("get", *args, "-o", "json", check=True).stdout)


def live_pods(e2e: E2ECluster, ns: str, selector: str) -> list[dict[str, Any]]:
    return [p for p in get(e2e, "pods", "-n", ns, "-l", selector)["items"] if "deletionTimestamp" not in p["metadata"]]


def fixture_object(name: str, *, namespace: str = APPS) -> dict[str, Any]:
    obj = json.loads((FIXTURES / name).read_text())["request"]["object"]
    obj["metadata"]["namespace"] = namespace
    obj["metadata"].pop("annotations", None)
    return obj


# The API server calls every release's webhook for a recipe Pod; one of another release's (a seed
# command's, verbatim, sees every namespace) that is starting or stopping beside this module answers
# nothing for a moment: "failed calling webhook ... <service>.<its namespace>.svc".
_OTHERS_WEBHOOK = re.compile(r'failed calling webhook "[^"]+": failed to call webhook: Post "https://[^.]+\.([^.]+)\.svc')


def apply(e2e: E2ECluster, obj: dict[str, Any], *extra: str, timeout: float = 90) -> Any:
    """kubectl apply, retried (as a controller retries) while another release's webhook does not
    answer; a refusal, or this release's webhook not answering, is returned at once."""
    deadline = time.monotonic() + timeout
    while True:
        out = e2e.kubectl("apply", *extra, "-f", "-", stdin=json.dumps(obj))
        other = _OTHERS_WEBHOOK.search(out.stderr) if out.returncode else None
        if other is None or other.group(1) == NS or time.monotonic() > deadline:
            return out
        time.sleep(1)


@pytest.fixture(scope="module")
def pool(e2e: E2ECluster) -> Iterator[E2ECluster]:
    from kubernetes import client, config

    config.load_kube_config(config_file=str(e2e.kubeconfig))
    core = client.CoreV1Api()
    taint = {"key": POOL_KEY, "value": POOL, "effect": "NoSchedule"}
    for name, labels, resource in POOL_NODES:
        realcluster.create_gpu_node(core, name=name, labels={**labels, POOL_KEY: POOL}, resource=resource, gpus=8, taints=[taint])

    def ready() -> bool:
        nodes = [core.read_node(name) for name, *_ in POOL_NODES]
        return all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in nodes)

    wait_for(ready, timeout=60, what="kwok to report the pool's nodes Ready")  # the hook counts only Ready nodes
    try:
        yield e2e
    finally:
        for name, *_ in POOL_NODES:
            e2e.kubectl("delete", "node", name, "--wait=false")


@pytest.fixture(scope="module")
def release(pool: E2ECluster) -> E2ECluster:
    """The seed's Production Deployment command (plus this cluster's image and this module's node
    pool), verbatim otherwise."""
    e2e = pool
    out = e2e.helm(
        "install",
        "aim-engine",
        str(ROOT / "chart"),
        "-n",
        NS,
        "--create-namespace",
        *realcluster.SEED_PRODUCTION_SETS,
        *image_sets(),
        *POOL_SETS,
        *own_webhook(NS, APPS),
        "--wait",
        "--timeout",
        "5m",
    )
    if out.returncode != 0:
        diag = e2e.kubectl("get", "pods,jobs,events", "-n", NS).stdout
        raise AssertionError(f"helm install failed:\n{out.stdout}\n{out.stderr}\n{diag}")
    e2e.kubectl("create", "namespace", APPS)
    return e2e


def test_install_runs_the_selector_hook_in_our_image_and_applies_its_recipe(release: E2ECluster) -> None:
    e2e = release
    # The hook Job ran in a container on the real node and explained its choice.
    logs = e2e.kubectl("logs", "job/aim-engine-recipe-selector", "-n", NS, check=True).stdout
    assert f"wrote selection to configmap {NS}/aim-engine-recipe-config: qwen3-32b-mi300x-1gpu-fp8" in logs
    assert "HARDWARE_ABSENT" in logs  # every candidate with its reason
    job_pods = get(e2e, "pods", "-n", NS, "-l", "app.kubernetes.io/component=recipe-selector")["items"]
    assert job_pods, "the selector Job's pod is gone"
    pod = job_pods[-1]
    if e2e.local:
        assert pod["spec"]["nodeName"] == "aim-engine-node"
    status = pod["status"]["containerStatuses"][0]
    assert status["state"]["terminated"]["exitCode"] == 0
    assert status["image"].endswith(f"{IMAGE_VALUES['image.aim_engine.repository']}:{IMAGE_VALUES['image.aim_engine.tag']}")

    cm = get(e2e, "configmap", "aim-engine-recipe-config", "-n", NS)
    assert cm["metadata"]["labels"]["aim-engine.io/recipe-id"] == "qwen3-32b-mi300x-1gpu-fp8"
    assert cm["data"]["mode"] == "auto"
    recipe = yaml.safe_load(cm["data"]["recipe.yaml"])

    # The webhook serves the API server from real pods.
    validators = live_pods(e2e, NS, "app.kubernetes.io/component=recipe-validator")
    assert len(validators) == 2
    assert all(p["status"]["phase"] == "Running" for p in validators)

    # The vLLM pod got the recipe at admission and runs on a node of the recipe's hardware.
    pods = live_pods(e2e, NS, INFERENCE)
    assert len(pods) == 1
    p = pods[0]
    assert p["metadata"]["labels"]["aim-engine.io/recipe-id"] == "qwen3-32b-mi300x-1gpu-fp8"
    assert p["metadata"]["labels"]["aim-engine.io/gpu-model"] == "MI300X"
    assert p["spec"]["nodeName"].startswith("prod-mi300x-")  # the module's pool
    assert p["status"]["phase"] == "Running"
    vllm = p["spec"]["containers"][0]
    assert vllm["resources"]["limits"]["amd.com/gpu"] == str(recipe["gpu_count"])
    args = " ".join(vllm.get("command", []) + vllm.get("args", []))
    assert "--quantization fp8" in args, args
    env = {e["name"]: e.get("value") for e in vllm.get("env", [])}
    assert recipe["config"]["env"]
    for k, v in recipe["config"]["env"].items():
        assert env.get(k) == str(v), (k, env)

    # Monitoring objects were accepted against the real prometheus-operator CRD schemas.
    assert get(e2e, "servicemonitor", "-n", NS)["items"]
    assert get(e2e, "prometheusrule", "-n", NS)["items"]


@pytest.mark.parametrize(
    ("fixture", "code", "fragment"),
    [
        ("deployment-gpu-count-mismatch.json", "GPU_COUNT_MISMATCH", "resources.limits[amd.com/gpu] is 2"),
        ("deployment-tp-mismatch.json", "PARALLELISM_MISMATCH", "--tensor-parallel-size 2"),
        ("deployment-fp8-on-a100.json", "PRECISION_UNSUPPORTED", "A100 cannot run fp8"),
        ("deployment-memory-too-small.json", "RESOURCES_BELOW_RECIPE", "requests.memory is 8Gi"),
    ],
)
def test_kubectl_apply_of_a_bad_deployment_is_refused_with_the_webhooks_message(
    release: E2ECluster, fixture: str, code: str, fragment: str
) -> None:
    out = apply(release, fixture_object(fixture))
    assert out.returncode != 0, out.stdout
    assert 'admission webhook "workloads.validate.aim-engine.io" denied the request' in out.stderr
    assert code in out.stderr and fragment in out.stderr, out.stderr
    name = fixture_object(fixture)["metadata"]["name"]
    assert release.kubectl("get", "deployment", name, "-n", APPS).returncode != 0


def test_a_good_deployment_is_admitted_and_stored_with_the_injection(release: E2ECluster) -> None:
    obj = fixture_object("deployment-good.json")
    out = apply(release, obj)
    assert out.returncode == 0, out.stderr
    stored = get(release, "deployment", obj["metadata"]["name"], "-n", APPS)
    tmpl = stored["spec"]["template"]
    assert tmpl["metadata"]["labels"]["aim-engine.io/gpu-model"] == "MI300X"
    assert any(t.get("key") == "amd.com/gpu" for t in tmpl["spec"].get("tolerations", []))
    # Its pod is admitted, mutated and scheduled on an MI300X node.
    pods = wait_for(
        lambda: [
            p
            for p in live_pods(release, APPS, f"app.kubernetes.io/name={obj['metadata']['labels']['app.kubernetes.io/name']}")
            if p.get("spec", {}).get("nodeName")
        ],
        what="the good deployment's pod scheduled",
    )
    assert pods[0]["spec"]["nodeName"].startswith("mi300x-")


def test_server_side_dry_run(release: E2ECluster) -> None:
    bad = apply(release, fixture_object("deployment-tp-mismatch.json"), "--dry-run=server")
    assert bad.returncode != 0 and "PARALLELISM_MISMATCH" in bad.stderr
    good = fixture_object("deployment-good.json")
    good["metadata"]["name"] = "dry-run-only"
    out = release.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(good))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spec"]["template"]["metadata"]["labels"]["aim-engine.io/gpu-model"] == "MI300X"
    assert release.kubectl("get", "deployment", "dry-run-only", "-n", APPS).returncode != 0


def test_kube_system_objects_never_reach_the_webhook(release: E2ECluster) -> None:
    obj = fixture_object("deployment-gpu-count-mismatch.json", namespace="kube-system")
    obj["metadata"]["name"] = "kube-system-untouched"
    out = apply(release, obj)
    assert out.returncode == 0, out.stderr
    stored = get(release, "deployment", "kube-system-untouched", "-n", "kube-system")
    assert "aim-engine.io/gpu-model" not in stored["spec"]["template"]["metadata"]["labels"]
    logs = release.kubectl("logs", "-n", NS, "-l", "app.kubernetes.io/component=recipe-validator", "--tail=-1", "--prefix")
    assert "kube-system-untouched" not in logs.stdout
    release.kubectl("delete", "deployment", "kube-system-untouched", "-n", "kube-system", "--wait=false")


def test_helm_upgrade_that_changes_the_model_and_gpu_count_rolls_the_pods(release: E2ECluster) -> None:
    e2e = release
    before = {p["metadata"]["name"] for p in live_pods(e2e, NS, INFERENCE)}
    rs_before = {r["metadata"]["name"] for r in get(e2e, "replicaset", "-n", NS, "-l", INFERENCE)["items"]}
    out = upgrade(e2e, "aim_engine.model_id=meta-llama/Llama-3.1-70B-Instruct", "aim_engine.overrides.gpu_count=8", wait=True)
    assert out.returncode == 0, out.stderr
    cm = get(e2e, "configmap", "aim-engine-recipe-config", "-n", NS)
    new_recipe = cm["metadata"]["labels"]["aim-engine.io/recipe-id"]
    assert new_recipe.startswith("llama-3.1-70b-") and "8gpu" in new_recipe, new_recipe
    rs_after = {r["metadata"]["name"] for r in get(e2e, "replicaset", "-n", NS, "-l", INFERENCE)["items"]}
    assert rs_after - rs_before, "no new ReplicaSet: the pod template did not change"
    pods = wait_for(
        lambda: [
            p for p in live_pods(e2e, NS, INFERENCE) if p["metadata"]["name"] not in before and p["status"]["phase"] == "Running"
        ],
        what="a pod of the new recipe running",
    )
    p = pods[0]
    assert p["metadata"]["labels"]["aim-engine.io/recipe-id"] == new_recipe
    gpus = p["spec"]["containers"][0]["resources"]["limits"]
    assert "8" in (gpus.get("amd.com/gpu"), gpus.get("nvidia.com/gpu")), gpus
    wait_for(lambda: not (before & {q["metadata"]["name"] for q in live_pods(e2e, NS, INFERENCE)}), what="old pods gone")


def helm_template(e2e: E2ECluster) -> dict[str, Any]:
    """The engine Deployment's pod template as Helm wrote it (the reconcile Job's rollout
    annotation, which it adds to roll the pods, left out)."""
    (dep,) = get(e2e, "deployment", "-n", NS, "-l", INFERENCE)["items"]
    template = dep["spec"]["template"]
    template["metadata"].get("annotations", {}).pop("aim-engine.io/recipe-rollout", None)
    return dict(template)


def test_a_selection_that_changes_with_the_values_unchanged_reaches_the_pods(release: E2ECluster) -> None:
    """The nodes of the selected product become unusable (tainted): `helm upgrade --reuse-values`
    changes no value, so Helm rolls nothing, but the hook selects another recipe; the reconcile Job
    rolls the Deployment (its strategy), replacing the Pod whose recipe fingerprint is no longer the
    selection's."""
    e2e = release
    cm = get(e2e, "configmap", "aim-engine-recipe-config", "-n", NS)
    old_recipe = cm["metadata"]["labels"]["aim-engine.io/recipe-id"]
    product = yaml.safe_load(cm["data"]["recipe.yaml"])["hardware"]
    before = {p["metadata"]["name"] for p in live_pods(e2e, NS, INFERENCE)}
    assert before, "no inference pod to replace"
    assert all(p["metadata"]["annotations"].get("aim-engine.io/recipe-fingerprint") for p in live_pods(e2e, NS, INFERENCE)), (
        "the webhook wrote no fingerprint"
    )
    template_before = helm_template(e2e)
    nodes = [name for name, *_ in POOL_NODES if name.startswith(f"prod-{product.lower()}-")]  # prod-mi300x-0, ...
    assert nodes, f"no kwok node of {product} in the pool"
    try:
        for n in nodes:
            e2e.kubectl("taint", "nodes", n, "aim-e2e/unusable=true:NoSchedule", "--overwrite", check=True)
        out = upgrade(e2e, wait=True)
        assert out.returncode == 0, out.stderr
        cm = get(e2e, "configmap", "aim-engine-recipe-config", "-n", NS)
        new_recipe = cm["metadata"]["labels"]["aim-engine.io/recipe-id"]
        assert new_recipe != old_recipe and yaml.safe_load(cm["data"]["recipe.yaml"])["hardware"] != product
        assert helm_template(e2e) == template_before, "Helm changed the pod template: this is not the case under test"
        try:
            pods = wait_for(
                lambda: [
                    p
                    for p in live_pods(e2e, NS, INFERENCE)
                    if p["metadata"]["name"] not in before
                    and p["metadata"]["labels"].get("aim-engine.io/recipe-id") == new_recipe
                    and p["spec"].get("nodeName")
                ],
                # 41 s alone; in CI beside the seed jobs (whose webhooks see every namespace and
                # refuse Pod creations while they start) once more than 240 s
                timeout=420,
                what=f"a pod of the new recipe {new_recipe}, replaced by the reconcile Job, scheduled",
            )
        except AssertionError:
            rec = "app.kubernetes.io/component=recipe-validator-reconcile"
            print(e2e.kubectl("logs", "-n", NS, "-l", rec, "--tail=50", "--prefix").stdout[-4000:])
            print(e2e.kubectl("get", "deploy,rs,pods,jobs", "-n", NS, "-o", "wide").stdout[-4000:])
            print(e2e.kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp").stdout[-4000:])
            print(cm["data"].get("upgrade.json"))
            raise
        assert pods[0]["spec"]["nodeName"] not in nodes
        wait_for(lambda: not (before & {q["metadata"]["name"] for q in live_pods(e2e, NS, INFERENCE)}), what="old pods gone")
        # The Job says so once it has seen the rollout complete (its next poll after the old pod went).
        wait_for(
            lambda: (
                f"outdated recipe replaced by {new_recipe}"
                in e2e.kubectl(
                    "logs", "-n", NS, "-l", "app.kubernetes.io/component=recipe-validator-reconcile", "--tail=-1"
                ).stdout
            ),
            timeout=60,
            what="the reconcile Job's report of the replacement",
        )
    finally:
        for n in nodes:
            e2e.kubectl("taint", "nodes", n, "aim-e2e/unusable-", check=True)


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": APPS,
            "labels": {"aim-engine.io/recipe-id": "qwen3-32b-mi300x-1gpu-fp8"},
        },
        "spec": {"containers": [{"name": "vllm", "image": "rocm/vllm:latest", "args": ["--model", "Qwen/Qwen3-32B"]}]},
    }


def _scale_webhook(e2e: E2ECluster, replicas: int) -> None:
    e2e.kubectl("scale", f"deployment/{VALIDATOR}", "-n", NS, f"--replicas={replicas}", check=True)
    if replicas == 0:
        wait_for(lambda: not live_pods(e2e, NS, "app.kubernetes.io/component=recipe-validator"), what="webhook pods gone")
        wait_for(
            lambda: (
                not any(
                    s.get("endpoints")
                    for s in get(e2e, "endpointslices", "-n", NS, "-l", f"kubernetes.io/service-name={VALIDATOR}")["items"]
                )
            ),
            what="no webhook endpoints",
        )
    else:
        e2e.kubectl("rollout", "status", f"deployment/{VALIDATOR}", "-n", NS, "--timeout=180s", check=True)


def test_with_the_webhook_down_fail_blocks_and_ignore_admits(release: E2ECluster) -> None:
    e2e = release
    _scale_webhook(e2e, 0)
    try:
        out = apply(e2e, _pod("blocked-while-down"))
        assert out.returncode != 0
        assert "failed calling webhook" in out.stderr, out.stderr

        up = upgrade(e2e, "admission_controller.webhook.failure_policy=Ignore")
        assert up.returncode == 0, up.stderr
        _scale_webhook(e2e, 0)  # the upgrade put the replicas back
        out = apply(e2e, _pod("admitted-while-down"))
        assert out.returncode == 0, out.stderr
        # Admitted: this release's webhook no longer stands in the way. (Other releases' webhooks,
        # which see every namespace, may have injected their recipe: the lanes beside this one.)
        assert get(e2e, "pod", "admitted-while-down", "-n", APPS)
    finally:
        e2e.kubectl("delete", "pod", "admitted-while-down", "-n", APPS, "--ignore-not-found", "--wait=false")
        _scale_webhook(e2e, 2)


def test_webhook_and_selector_pods_are_admitted_under_pod_security_restricted(e2e: E2ECluster) -> None:
    """Installed with Helm 4 (the rest of the suite uses Helm 3): hooks, wait and uninstall work
    with both. A second release in another namespace, while the first is installed: each webhook
    sees the other's objects and leaves them to their own release (it may not read their
    selection), so neither blocks the other."""
    ns = "aim-restricted"
    e2e.kubectl("create", "namespace", ns, check=True)
    e2e.kubectl(
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        check=True,
    )
    try:
        out = e2e.helm(
            "install",
            "aim-engine-restricted",
            str(ROOT / "chart"),
            "-n",
            ns,
            "--set",
            "aim_engine.model_id=Qwen/Qwen3-32B",
            "--set",
            "admission_controller.enabled=true",
            "--set",
            "workload.replicas=0",
            "--set",
            "model_cache.enabled=false",
            *image_sets(),
            *own_webhook(ns),
            "--wait",
            "--timeout",
            "5m",
            helm4=True,
        )
        assert out.returncode == 0, out.stderr + e2e.kubectl("get", "events", "-n", ns).stdout
        assert "violate PodSecurity" not in e2e.kubectl("get", "events", "-n", ns).stdout
        validators = live_pods(e2e, ns, "app.kubernetes.io/component=recipe-validator")
        assert len(validators) == 2 and all(p["status"]["phase"] == "Running" for p in validators)
        logs = e2e.kubectl("logs", "job/aim-engine-restricted-recipe-selector", "-n", ns, check=True).stdout
        assert "wrote selection to configmap aim-restricted/aim-engine-restricted-recipe-config" in logs
    finally:
        e2e.helm("uninstall", "aim-engine-restricted", "-n", ns, "--wait", "--timeout", "3m", helm4=True)
        e2e.kubectl("delete", "namespace", ns, "--wait=false")


def test_helm_uninstall_leaves_no_webhook_configuration(release: E2ECluster) -> None:
    e2e = release
    out = e2e.helm("uninstall", "aim-engine", "-n", NS, "--wait", "--timeout", "3m")
    assert out.returncode == 0, out.stderr
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        names = [c["metadata"]["name"] for c in get(e2e, kind)["items"]]
        assert f"aim-engine-recipe-validator-{NS}" not in names, names  # (other releases' stay theirs)
    # The selection record is written by the hook, not owned by Helm: kept (docs/chart.md).
    assert e2e.kubectl("get", "configmap", "aim-engine-recipe-config", "-n", NS).returncode == 0
    # With its webhook configurations gone, this release stops no labelled pod.
    out = apply(e2e, _pod("after-uninstall"))
    assert out.returncode == 0, out.stderr
    e2e.kubectl("delete", "namespace", APPS, "--wait=false")


def test_a_multi_node_recipe_is_served_by_a_leaderworkerset(pool: E2ECluster) -> None:
    """workload.kind=LeaderWorkerSet: the hook selects a recipe spanning two nodes, the API server
    stores the LeaderWorkerSet (validated by the real LWS CRD schema and by the webhook), and the
    group's Pods — created here as the LeaderWorkerSet controller creates them, since that
    controller is not part of this cluster — get the recipe: the leader its parallelism flags through
    "$@", the worker only its GPUs; each lands on its own H100 node."""
    e2e = pool
    ns = "aim-lws"
    release = "aim-engine-lws"
    e2e.kubectl("create", "namespace", ns, check=True)
    try:
        out = e2e.helm(
            "install",
            release,
            str(ROOT / "chart"),
            "-n",
            ns,
            "--set",
            "aim_engine.model_id=deepseek-ai/DeepSeek-R1",
            "--set",
            "workload.kind=LeaderWorkerSet",
            # no shared claim: the local volumes (500Gi) cannot hold DeepSeek-R1's 642 GiB checkpoint,
            # which the hook refuses to plan into a smaller cache
            "--set",
            "model_cache.enabled=false",
            *image_sets(),
            *POOL_SETS,
            *own_webhook(ns),
            "--wait",
            "--timeout",
            "5m",
        )
        if out.returncode != 0:
            hook = e2e.kubectl("logs", f"job/{release}-recipe-selector", "-n", ns).stdout
            pods = e2e.kubectl("get", "pods", "-A", "-o", "wide").stdout
            raise AssertionError(f"{out.stderr}\nthe selector hook said:\n{hook[-3000:]}\npods:\n{pods}")
        cm = get(e2e, "configmap", f"{release}-recipe-config", "-n", ns)
        assert cm["metadata"]["labels"]["aim-engine.io/recipe-id"] == "deepseek-r1-h100-16gpu-fp8"
        lws = get(e2e, "leaderworkerset", release, "-n", ns)
        lwt = lws["spec"]["leaderWorkerTemplate"]
        assert lwt["size"] == 2
        for idx, tpl in ((0, lwt["leaderTemplate"]), (1, lwt["workerTemplate"])):
            name = f"{release}-0" + (f"-{idx}" if idx else "")
            labels = {
                **tpl["metadata"]["labels"],
                "leaderworkerset.sigs.k8s.io/name": release,
                "leaderworkerset.sigs.k8s.io/group-index": "0",
                "leaderworkerset.sigs.k8s.io/worker-index": str(idx),
            }
            annotations = {**tpl["metadata"].get("annotations", {}), "leaderworkerset.sigs.k8s.io/size": "2"}
            spec = copy.deepcopy(tpl["spec"])
            for c in spec["containers"]:
                c.setdefault("env", [])[:0] = [
                    {"name": "LWS_LEADER_ADDRESS", "value": f"{release}-0.{release}.{ns}"},
                    {"name": "LWS_GROUP_SIZE", "value": "2"},
                ]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
                "spec": spec,
            }
            created = apply(e2e, pod)
            assert created.returncode == 0, created.stderr
        leader = get(e2e, "pod", f"{release}-0", "-n", ns)
        worker = get(e2e, "pod", f"{release}-0-1", "-n", ns)
        largs = " ".join(leader["spec"]["containers"][0]["args"])
        assert "--tensor-parallel-size 8" in largs and "--pipeline-parallel-size 2" in largs, largs
        assert leader["spec"]["containers"][0]["command"][-1] == "vllm"  # $0: the args reach vLLM via "$@"
        assert "args" not in worker["spec"]["containers"][0]
        for p in (leader, worker):
            assert p["metadata"]["labels"]["aim-engine.io/recipe-id"] == "deepseek-r1-h100-16gpu-fp8"
            assert p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
        h100 = {name for name, *_ in POOL_NODES if name.startswith("prod-h100-")}

        def on_two_h100_nodes() -> bool:
            nodes = [
                q["spec"].get("nodeName")
                for q in (get(e2e, "pod", f"{release}-0", "-n", ns), get(e2e, "pod", f"{release}-0-1", "-n", ns))
            ]
            return len(set(nodes)) == 2 and set(nodes) <= h100

        placed = wait_for(on_two_h100_nodes, what="the group's pods on two H100 nodes, one each")
        assert placed
    finally:
        e2e.helm("uninstall", release, "-n", ns, "--wait", "--timeout", "3m")
        e2e.kubectl("delete", "namespace", ns, "--wait=false")
