"""The chart against a real kube-apiserver: every object it renders (release resources and hook
resources) is accepted by the API server's own validation; two releases install side by side in one
namespace; an upgrade that changes the selection inputs changes the pod template (so the pods roll);
`helm uninstall` leaves no webhook configuration behind. No kubelet here: hooks are applied
directly (`--no-hooks` for Helm), since nothing would run their Jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "tools"))

from kubernetes import client, config, utils

from localcluster import ROOT, start

HELM = str(ROOT / ".tools/bin/helm")
NS = "aim-engine"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cp = start(tmp_path_factory.mktemp("cp"))
    try:
        config.load_kube_config(config_file=str(cp.kubeconfig))
        yield cp
    finally:
        cp.stop()


def helm(cp, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args, "--kubeconfig", str(cp.kubeconfig)], capture_output=True, text=True, check=False)


def webhook_configs() -> set[str]:
    adm = client.AdmissionregistrationV1Api()
    names = {c.metadata.name for c in adm.list_validating_webhook_configuration().items}
    names |= {c.metadata.name for c in adm.list_mutating_webhook_configuration().items}
    return names


def test_install_side_by_side_upgrade_and_uninstall(cluster):
    out = helm(
        cluster,
        "install",
        "aim-engine-qwen",
        str(ROOT / "chart"),
        "-n",
        NS,
        "--create-namespace",
        "--no-hooks",
        "--set",
        "aim_engine.model_id=Qwen/Qwen3-32B",
        "--set",
        "aim_engine.gpu_count=4",
    )
    assert out.returncode == 0, out.stderr
    out = helm(
        cluster,
        "install",
        "aim-engine-llama",
        str(ROOT / "chart"),
        "-n",
        NS,
        "--no-hooks",
        "--set",
        "aim_engine.model_id=meta-llama/Llama-2-70b-chat-hf",
        "--set",
        "aim_engine.gpu_count=8",
        "--set",
        "aim_engine.precision=fp16",
    )
    assert out.returncode == 0, out.stderr
    apps = client.AppsV1Api()
    assert {d.metadata.name for d in apps.list_namespaced_deployment(NS).items} >= {
        "aim-engine-qwen",
        "aim-engine-qwen-recipe-validator",
        "aim-engine-llama",
        "aim-engine-llama-recipe-validator",
    }
    assert {"aim-engine-qwen-recipe-validator-aim-engine", "aim-engine-llama-recipe-validator-aim-engine"} <= webhook_configs()

    before = apps.read_namespaced_deployment("aim-engine-qwen", NS).spec.template.metadata.annotations
    out = helm(
        cluster,
        "upgrade",
        "aim-engine-qwen",
        str(ROOT / "chart"),
        "-n",
        NS,
        "--no-hooks",
        "--set",
        "aim_engine.model_id=Qwen/Qwen3-8B",
        "--set",
        "aim_engine.gpu_count=4",
    )
    assert out.returncode == 0, out.stderr
    after = apps.read_namespaced_deployment("aim-engine-qwen", NS).spec.template.metadata.annotations
    assert after["checksum/selection-inputs"] != before["checksum/selection-inputs"]  # the pods roll

    for release in ("aim-engine-qwen", "aim-engine-llama"):
        out = helm(cluster, "uninstall", release, "-n", NS)
        assert out.returncode == 0, out.stderr
    assert not {n for n in webhook_configs() if "aim-engine" in n}, webhook_configs()


@pytest.mark.parametrize(
    "values",
    [
        "seed-configuration-options-values.yaml",
        "seed-custom-recipe-values.yaml",
        "manual-no-webhook-values.yaml",
        "cert-manager-values.yaml",
    ],
)
def test_the_api_server_accepts_every_rendered_object(cluster, values):
    """Server-side dry-run create of each object (hooks included): the API server's own validation,
    beyond the OpenAPI schema (webhook configuration rules, RBAC references, selectors, quantities)."""
    out = subprocess.run(
        [
            HELM,
            "template",
            "aim-engine",
            str(ROOT / "chart"),
            "-n",
            NS,
            "-f",
            str(ROOT / "chart/ci" / values),
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "--api-versions",
            "monitoring.coreos.com/v1/PrometheusRule",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    core = client.CoreV1Api()
    try:
        core.create_namespace({"metadata": {"name": NS}})
    except client.exceptions.ApiException as e:
        assert e.status == 409
    api = client.ApiClient()
    skipped = []
    docs = [d for d in yaml.safe_load_all(out) if d]
    # Helm creates the release's ServiceAccounts before it runs the test Pod that names one (the
    # API server refuses a Pod whose ServiceAccount does not exist): create them for real first.
    for doc in docs:
        if doc["kind"] == "ServiceAccount":
            try:
                utils.create_from_dict(api, doc, namespace=NS)
            except utils.FailToCreateError as e:
                assert all(x.status == 409 for x in e.api_exceptions), e
    for doc in docs:
        if doc["kind"] == "ServiceAccount":
            continue  # created (so validated) above
        if doc["apiVersion"].startswith(("monitoring.coreos.com", "cert-manager.io")):
            skipped.append(doc["kind"])  # CRDs not installed on this bare API server (schema-checked in make chart)
            continue
        utils.create_from_dict(api, doc, namespace=NS, dry_run="All")
    assert set(skipped) <= {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"}
