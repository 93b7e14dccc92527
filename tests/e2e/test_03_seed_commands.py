"""Every helm command of seed 004 installs on the real cluster: each in its own namespace, with
`--wait`, its vLLM pods scheduled on nodes of the product its recipe (or its manual settings) names,
then uninstalled leaving no webhook configuration or workload behind.

The commands are the seed's, verbatim, after `helm install RELEASE chart/` (the seed's `./helm`);
only the namespace and this cluster's image are added. The production command is covered by
test_02_e2e.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from localcluster import wait_for

from .conftest import IMAGE_VALUES, ROOT, E2ECluster

CHART = str(ROOT / "chart")
WAIT = ["--wait", "--timeout", "5m"]
# kwok node name prefix of each product (tools/realcluster.py)
NODE_PREFIX = {"MI300X": "mi300x-", "H100": "h100-", "A100": "a100-"}
TIMINGS: dict[str, float] = {}


def image_sets() -> list[str]:
    return [x for k, v in IMAGE_VALUES.items() for x in ("--set", f"{k}={v}")]


def sets(*pairs: str) -> list[str]:
    return [x for kv in pairs for x in ("--set", kv)]


@dataclass
class Install:
    release: str
    namespace: str
    args: list[str]
    expected_product: str | None = None  # manual mode: the product the pods must land on
    extra: dict[str, Any] = field(default_factory=dict)


def get(e2e: E2ECluster, *args: str) -> Any:
    return json.loads(e2e.kubectl("get", *args, "-o", "json", check=True).stdout)


def helm_install(e2e: E2ECluster, inst: Install) -> None:
    started = time.monotonic()
    out = e2e.helm("install", inst.release, CHART, "-n", inst.namespace, *inst.args, *image_sets(), *WAIT)
    TIMINGS[f"{inst.namespace}/{inst.release}"] = time.monotonic() - started
    if out.returncode != 0:
        diag = e2e.kubectl("get", "pods,jobs,events", "-n", inst.namespace).stdout
        raise AssertionError(f"helm install {inst.release} failed:\n{out.stdout}\n{out.stderr}\n{diag}")


def inference_pods(e2e: E2ECluster, inst: Install) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={inst.release},app.kubernetes.io/component=inference"
    pods = get(e2e, "pods", "-n", inst.namespace, "-l", selector)["items"]
    return [p for p in pods if "deletionTimestamp" not in p["metadata"]]


def selected_recipe(e2e: E2ECluster, inst: Install) -> dict[str, Any]:
    cm = get(e2e, "configmap", f"{inst.release}-recipe-config", "-n", inst.namespace)
    return dict(yaml.safe_load(cm["data"]["recipe.yaml"]))


def assert_pods_on_the_right_product(e2e: E2ECluster, inst: Install) -> str:
    """Every vLLM pod is Running on a node of the product meant; returns that product."""
    product = inst.expected_product or selected_recipe(e2e, inst)["hardware"]
    pods = inference_pods(e2e, inst)
    assert pods, f"{inst.release}: no vLLM pod"
    for p in pods:
        node = p["spec"].get("nodeName", "")
        assert p["status"]["phase"] == "Running", (inst.release, p["status"])
        if e2e.local:
            assert node.startswith(NODE_PREFIX[product]), (inst.release, node, product)
        node_labels = get(e2e, "node", node)["metadata"]["labels"]
        assert any(product.lower() in v.lower().replace("-", "").replace("_", "") for v in node_labels.values()), (
            inst.release,
            node,
            product,
        )
    return product


def uninstall_clean(e2e: E2ECluster, inst: Install) -> None:
    out = e2e.helm("uninstall", inst.release, "-n", inst.namespace, "--wait", "--timeout", "3m")
    assert out.returncode == 0, out.stderr
    configs = e2e.kubectl("get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "name").stdout
    assert f"{inst.release}-recipe-validator-{inst.namespace}" not in configs
    wait_for(lambda: not inference_pods(e2e, inst), what=f"{inst.release}'s vLLM pods gone")
    assert not get(e2e, "deployments", "-n", inst.namespace, "-l", f"app.kubernetes.io/instance={inst.release}")["items"]


@pytest.fixture
def namespace(e2e: E2ECluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.node.callspec.id if hasattr(request.node, "callspec") else request.node.name
    ns = "seed-" + name.removeprefix("test_").removeprefix("seed_").replace("_", "-").lower()
    ns = ns[:50].rstrip("-")
    e2e.kubectl("create", "namespace", ns, check=True)
    yield ns
    # A failed test may leave its releases: remove them, so the next one finds the GPUs free.
    for left in e2e.helm("list", "-n", ns, "-a", "-q").stdout.split():
        e2e.helm("uninstall", left, "-n", ns, "--wait", "--timeout", "3m")
    e2e.kubectl("delete", "namespace", ns, "--wait=false")


# Seed 004, Quick Start / Performance Optimization: one install each.
SINGLE = {
    "quickstart-auto": ["--set", "aim_engine.auto_select=true", "--set", "aim_engine.model_id=Qwen/Qwen3-32B"],
    "quickstart-manual": sets(
        "aim_engine.auto_select=false", "aim_engine.gpu_count=4", "aim_engine.precision=bf16", "aim_engine.backend=vllm"
    ),
    "quickstart-custom-parameters": sets(
        "aim_engine.auto_select=true",
        "aim_engine.overrides.gpu_count=8",
        "aim_engine.overrides.precision=fp16",
        "aim_engine.overrides.vllm_args.max_model_len=16384",
    ),
    "performance-optimization": sets(
        "monitoring.enabled=true", "aim_engine.performance_tuning=true", "aim_engine.vllm_args.max_batch_size=64"
    ),
}


@pytest.mark.parametrize("command", list(SINGLE))
def test_seed_command_installs_and_lands_on_its_product(e2e: E2ECluster, namespace: str, command: str) -> None:
    inst = Install("aim-engine", namespace, SINGLE[command], expected_product="MI300X" if command.endswith("manual") else None)
    helm_install(e2e, inst)
    product = assert_pods_on_the_right_product(e2e, inst)
    vllm = inference_pods(e2e, inst)[0]["spec"]["containers"][0]
    args = " ".join(vllm.get("command", []) + vllm.get("args", []))
    if command == "quickstart-manual":
        # The hook checked the placement, the pod asks for the GPUs by hand and tolerates the taint.
        logs = e2e.kubectl("logs", "job/aim-engine-recipe-selector", "-n", namespace, check=True).stdout
        assert "1 pod(s) of 4 AMD GPUs fit: MI300X" in logs
        assert vllm["resources"]["limits"]["amd.com/gpu"] == "4" and "--tensor-parallel-size 4" in args
        # The seed's verification command answers in manual mode too: the placement is recorded.
        cm = get(e2e, "configmap", "aim-engine-recipe-config", "-n", namespace)
        assert cm["data"]["mode"] == "manual" and "recipe.yaml" not in cm["data"]
        placed = json.loads(cm["data"]["placement.json"])
        assert placed["fits"] and placed["gpu_count"] == 4 and placed["precision"] == "bf16", placed
        assert placed["product"] == "MI300X" and placed["fits_on"], placed
    elif command == "quickstart-custom-parameters":
        recipe = selected_recipe(e2e, inst)
        assert recipe["gpu_count"] == 8 and recipe["precision"] == "fp16", recipe
        assert "--max-model-len 16384" in args, args
        assert product == recipe["hardware"]
    elif command == "performance-optimization":
        assert "--max-num-seqs 64" in args and "--enable-prefix-caching" in args, args
        assert get(e2e, "servicemonitor", "-n", namespace)["items"]
    uninstall_clean(e2e, inst)


def test_seed_custom_recipe_development(e2e: E2ECluster, namespace: str) -> None:
    # kubectl apply -f custom-recipe.yaml -n aim-engine (the seed's ConfigMap verbatim), then install.
    e2e.kubectl("apply", "-f", str(ROOT / "examples" / "custom-recipe.yaml"), "-n", namespace, check=True)
    inst = Install("aim-engine", namespace, sets("aim_engine.auto_select=false", "aim_engine.custom_recipe=custom-recipe"))
    helm_install(e2e, inst)
    recipe = selected_recipe(e2e, inst)
    assert recipe["recipe_id"] == "custom-qwen-32b-4gpu-bf16"
    # gpu_count 4 and no parallel sizes: tensor parallel over the 4 GPUs (documented in recipes/README.md)
    assert recipe["config"]["args"]["tensor_parallel_size"] == 4
    assert assert_pods_on_the_right_product(e2e, inst) == "MI300X"
    vllm = inference_pods(e2e, inst)[0]["spec"]["containers"][0]
    assert "--tensor-parallel-size 4" in " ".join(vllm.get("command", []) + vllm.get("args", []))
    assert vllm["resources"]["limits"]["amd.com/gpu"] == "4"
    uninstall_clean(e2e, inst)


def test_seed_multi_model_side_by_side(e2e: E2ECluster, namespace: str) -> None:
    qwen = Install("aim-engine-qwen", namespace, sets("aim_engine.model_id=Qwen/Qwen3-32B", "aim_engine.gpu_count=4"))
    llama = Install(
        "aim-engine-llama",
        namespace,
        sets("aim_engine.model_id=meta-llama/Llama-2-70b-chat-hf", "aim_engine.gpu_count=8", "aim_engine.precision=fp16"),
    )
    helm_install(e2e, qwen)
    helm_install(e2e, llama)
    assert selected_recipe(e2e, qwen)["gpu_count"] == 4
    assert selected_recipe(e2e, llama)["gpu_count"] == 8 and selected_recipe(e2e, llama)["precision"] == "fp16"
    assert_pods_on_the_right_product(e2e, qwen)
    assert_pods_on_the_right_product(e2e, llama)
    uninstall_clean(e2e, llama)
    uninstall_clean(e2e, qwen)


def test_seed_disaster_recovery_and_debug(e2e: E2ECluster, namespace: str) -> None:
    inst = Install("aim-engine", namespace, sets("aim_engine.auto_select=true", "aim_engine.model_id=Qwen/Qwen3-32B"))
    helm_install(e2e, inst)
    before = selected_recipe(e2e, inst)["recipe_id"]
    # kubectl get configmap -n aim-engine -o yaml > recipe-backup.yaml
    backup = e2e.kubectl("get", "configmap", "-n", namespace, "-o", "yaml", check=True).stdout
    # the disaster: the selection is lost
    e2e.kubectl("delete", "configmap", "aim-engine-recipe-config", "-n", namespace, check=True)
    # kubectl apply -f recipe-backup.yaml
    e2e.kubectl("apply", "-n", namespace, "-f", "-", stdin=backup, check=True)
    # helm upgrade aim-engine ./helm --set aim_engine.restore_from_backup=true
    started = time.monotonic()
    out = e2e.helm(
        "upgrade", "aim-engine", CHART, "-n", namespace, "--set", "aim_engine.restore_from_backup=true", *image_sets(), *WAIT
    )
    TIMINGS[f"{namespace}/restore-upgrade"] = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    logs = e2e.kubectl("logs", "job/aim-engine-recipe-selector", "-n", namespace, check=True).stdout
    assert f"Kept the recipe restored in ConfigMap {namespace}/aim-engine-recipe-config: {before}" in logs
    assert selected_recipe(e2e, inst)["recipe_id"] == before
    assert_pods_on_the_right_product(e2e, inst)

    # Debug Commands: helm upgrade aim-engine ./helm --set aim_engine.debug=true --set aim_engine.log_level=DEBUG
    started = time.monotonic()
    out = e2e.helm(
        "upgrade",
        "aim-engine",
        CHART,
        "-n",
        namespace,
        "--set",
        "aim_engine.debug=true",
        "--set",
        "aim_engine.log_level=DEBUG",
        *image_sets(),
        *WAIT,
    )
    TIMINGS[f"{namespace}/debug-upgrade"] = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    job = get(e2e, "job", "aim-engine-recipe-selector", "-n", namespace)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][1] == "DEBUG"
    # kubectl logs deployment/aim-engine-recipe-validator -n aim-engine
    assert e2e.kubectl("logs", "deployment/aim-engine-recipe-validator", "-n", namespace).returncode == 0
    # kubectl get validatingwebhookconfiguration | grep aim-engine
    assert "aim-engine" in e2e.kubectl("get", "validatingwebhookconfiguration", check=True).stdout
    vllm = inference_pods(e2e, inst)[0]["spec"]["containers"][0]
    assert "--enable-log-requests" in vllm.get("args", [])
    assert_pods_on_the_right_product(e2e, inst)
    uninstall_clean(e2e, inst)


def test_a_selection_that_cannot_succeed_fails_the_hook_at_once_with_its_reason(e2e: E2ECluster, namespace: str) -> None:
    """No retries for a decision: the Job fails on its first pod, and `kubectl describe job` shows why."""
    inst = Install("aim-engine", namespace, sets("aim_engine.model_id=Qwen/Qwen3-32B", "aim_engine.gpu_count=64"))
    started = time.monotonic()
    out = e2e.helm("install", inst.release, CHART, "-n", namespace, *inst.args, *image_sets(), *WAIT)
    elapsed = time.monotonic() - started
    assert out.returncode != 0
    TIMINGS[f"{namespace}/failed-install"] = elapsed
    job = get(e2e, "job", "aim-engine-recipe-selector", "-n", namespace)
    assert job["status"].get("failed") == 1, job["status"]  # one pod, no retry
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy", failed
    described = e2e.kubectl("describe", "job", "aim-engine-recipe-selector", "-n", namespace, check=True).stdout
    assert "RecipeNotFound" in described and "64" in described, described
    pods = get(e2e, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=recipe-selector")["items"]
    message = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"].get("message", "")
    assert "no recipe selected" in message, message
    e2e.helm("uninstall", inst.release, "-n", namespace, "--wait", "--timeout", "3m")


def test_manual_mode_that_cannot_be_placed_fails_fast_with_what_to_set(e2e: E2ECluster, namespace: str) -> None:
    # H100 and A100 nodes both advertise nvidia.com/gpu: a hand-set H100 pod could land on an A100.
    inst = Install(
        "aim-engine",
        namespace,
        sets("aim_engine.auto_select=false", "aim_engine.gpu_count=4", "aim_engine.hardware.gpu_type=H100"),
    )
    out = e2e.helm("install", inst.release, CHART, "-n", namespace, *inst.args, *image_sets(), *WAIT)
    assert out.returncode != 0
    described = e2e.kubectl("describe", "job", "aim-engine-recipe-selector", "-n", namespace, check=True).stdout
    assert "PlacementFailed" in described and "workload.node_selector" in described, described
    e2e.helm("uninstall", inst.release, "-n", namespace, "--wait", "--timeout", "3m")
    # With the product pinned as the message says, it installs and lands on H100.
    label = get(e2e, "node", "h100-0")["metadata"]["labels"]["nvidia.com/gpu.product"] if e2e.local else None
    if label:
        pinned = Install(
            "aim-engine",
            namespace,
            [*inst.args, "--set-string", f"workload.node_selector.nvidia\\.com/gpu\\.product={label}"],
            expected_product="H100",
        )
        helm_install(e2e, pinned)
        assert_pods_on_the_right_product(e2e, pinned)
        uninstall_clean(e2e, pinned)


@pytest.fixture(scope="module", autouse=True)
def report_timings(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints each install's time at the end of the module (figures, not assertions)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"seed install {name}: {seconds:.1f} s (helm install/upgrade --wait)" for name, seconds in TIMINGS.items()]
    lane = os.environ.get("AIM_E2E_LANE", "all")
    (ROOT / ".tools" / f"e2e-seed-timings-{lane}.txt").write_text("\n".join(lines) + "\n")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
