"""Admission through a real kube-apiserver: the chart's own webhook configurations (rendered from
chart/, pointed at a webhook served on loopback), refusals with the webhook's message, injection
visible in the stored object, server-side dry-run, kube-system never intercepted, the release's
selection ConfigMap resolved, and failure policies with the webhook down."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "webhook"))

from helpers import review
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from server import start as start_webhook

from localcluster import ROOT, chart_webhook_configurations, ensure_default_service_account, start

NS = "inference"


def apply_webhook_configurations(adm: client.AdmissionregistrationV1Api, docs: list[dict]) -> None:
    for d in docs:
        if d["kind"] == "MutatingWebhookConfiguration":
            with contextlib.suppress(ApiException):
                adm.delete_mutating_webhook_configuration(d["metadata"]["name"])
            adm.create_mutating_webhook_configuration(d)
        else:
            with contextlib.suppress(ApiException):
                adm.delete_validating_webhook_configuration(d["metadata"]["name"])
            adm.create_validating_webhook_configuration(d)
    time.sleep(1.5)  # the API server picks configurations up from its informer


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cp")
    cp = start(tmp)
    try:
        config.load_kube_config(config_file=str(cp.kubeconfig))
        core, apps, adm = client.CoreV1Api(), client.AppsV1Api(), client.AdmissionregistrationV1Api()
        core.create_namespace({"metadata": {"name": NS}})
        for ns in (NS, "kube-system"):
            ensure_default_service_account(core, ns)
        wh_tmp = tmp_path_factory.mktemp("webhook")
        webhook = start_webhook(wh_tmp, workers=1, threads=4, kubeconfig=cp.kubeconfig)
        apply_webhook_configurations(
            adm, chart_webhook_configurations(webhook.port, webhook.ca_file.read_bytes(), failure_policy="Fail")
        )
        yield {"cp": cp, "core": core, "apps": apps, "adm": adm, "webhook": webhook, "wh_tmp": wh_tmp}
        webhook.stop(signal.SIGKILL)
    finally:
        cp.stop()


def deployment(name: str) -> dict:
    obj = review(name)["request"]["object"]
    obj["metadata"].pop("annotations", None)
    obj["metadata"]["namespace"] = NS
    return obj


@pytest.mark.parametrize(
    ("fixture", "code"),
    [
        ("deployment-gpu-count-mismatch.json", "GPU_COUNT_MISMATCH"),
        ("deployment-tp-mismatch.json", "PARALLELISM_MISMATCH"),
        ("deployment-fp8-on-a100.json", "PRECISION_UNSUPPORTED"),
        ("deployment-memory-too-small.json", "RESOURCES_BELOW_RECIPE"),
    ],
)
def test_the_api_server_refuses_bad_deployments_with_the_webhooks_message(cluster, fixture, code):
    with pytest.raises(ApiException) as e:
        cluster["apps"].create_namespaced_deployment(NS, deployment(fixture))
    body = json.loads(e.value.body)
    assert e.value.status == 403 and f"[{code}]" in body["message"] and "fix:" in body["message"], body["message"]


def test_a_good_deployment_is_admitted_and_stored_with_the_injection(cluster):
    obj = deployment("deployment-bare.json")
    created = cluster["apps"].create_namespaced_deployment(NS, obj)
    stored = cluster["apps"].read_namespaced_deployment(created.metadata.name, NS)
    c = stored.spec.template.spec.containers[0]
    assert c.resources.limits["amd.com/gpu"] == "1"
    assert "--tensor-parallel-size" in c.args
    assert stored.spec.template.metadata.labels["aim-engine.io/gpu-model"] == "MI300X"


def test_server_side_dry_run(cluster):
    with pytest.raises(ApiException) as e:
        cluster["apps"].create_namespaced_deployment(NS, deployment("deployment-tp-mismatch.json"), dry_run="All")
    assert "[PARALLELISM_MISMATCH]" in json.loads(e.value.body)["message"]
    obj = deployment("deployment-bare.json")
    obj["metadata"]["name"] = "dry-run-only"
    out = cluster["apps"].create_namespaced_deployment(NS, obj, dry_run="All")
    assert out.spec.template.spec.containers[0].resources.limits["amd.com/gpu"] == "1"
    with pytest.raises(ApiException) as missing:
        cluster["apps"].read_namespaced_deployment("dry-run-only", NS)
    assert missing.value.status == 404


def test_kube_system_is_never_intercepted(cluster):
    obj = deployment("deployment-gpu-count-mismatch.json")
    obj["metadata"]["namespace"] = "kube-system"
    cluster["apps"].create_namespaced_deployment("kube-system", obj)  # admitted: the webhook never saw it
    assert "kube-system" not in cluster["webhook"].logs()


def test_the_chart_style_release_gets_its_selected_recipe_at_pod_creation(cluster):
    from aim_engine.adapters.catalog import load_bundle

    recipe = next(r for r in load_bundle(ROOT / "recipes").recipes if r.recipe_id == "qwen3-32b-mi300x-4gpu-bf16")
    cluster["core"].create_namespaced_config_map(
        NS, {"metadata": {"name": "aim-engine-recipe-config"}, "data": {"recipe.yaml": yaml.safe_dump(recipe.to_seed())}}
    )
    pod = review("pod-from-replicaset.json")["request"]["object"]
    pod["metadata"].pop("ownerReferences")
    pod["metadata"]["labels"]["aim-engine.io/recipe-id"] = "selected"
    pod["metadata"]["annotations"] = {"aim-engine.io/recipe-config": "aim-engine-recipe-config"}
    created = cluster["core"].create_namespaced_pod(NS, pod)
    assert created.metadata.labels["aim-engine.io/recipe-id"] == "qwen3-32b-mi300x-4gpu-bf16"
    assert created.spec.containers[0].resources.limits["amd.com/gpu"] == "4"
    assert any(v.name == "aim-dshm" for v in created.spec.volumes)


def test_webhook_down_fail_blocks_and_ignore_admits(cluster):
    cluster["webhook"].stop(signal.SIGTERM)
    pod = review("pod-from-replicaset.json")["request"]["object"]
    pod["metadata"].pop("ownerReferences")
    with pytest.raises(ApiException) as e:
        cluster["core"].create_namespaced_pod(NS, pod)
    assert "failed calling webhook" in json.loads(e.value.body)["message"]
    apply_webhook_configurations(
        cluster["adm"],
        chart_webhook_configurations(cluster["webhook"].port, cluster["webhook"].ca_file.read_bytes(), failure_policy="Ignore"),
    )
    created = cluster["core"].create_namespaced_pod(NS, pod)
    assert created.metadata.name
    # Controllers use Ignore whatever failure_policy says: an unavailable webhook never blocks an install.
    obj = deployment("deployment-bare.json")
    obj["metadata"]["name"] = "while-webhook-down"
    cluster["apps"].create_namespaced_deployment(NS, obj)
