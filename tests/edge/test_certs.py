"""Certificate bootstrap through the real Kubernetes client: Secret created, kept while valid,
re-issued from the same CA when expiring or for another Service; caBundle patched into the named
webhook configurations only."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from fake_apiserver import FakeApiServer

from aim_webhook.bootstrap import dns_names, needs_new_cert
from aim_webhook.cli import main
from aim_webhook.tls import new_ca, new_serving_cert

ADM = "/apis/admissionregistration.k8s.io/v1"


def webhook_config(kind: str, name: str) -> dict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "resourceVersion": "1"},
        "webhooks": [
            {
                "name": "validate.aim-engine.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": {
                    "service": {
                        "name": "aim-engine-recipe-validator",
                        "namespace": "aim-engine",
                        "path": "/validate",
                        "port": 443,
                    }
                },
            }
        ],
    }


@pytest.fixture
def api(tmp_path):
    with FakeApiServer([], []) as server:
        server.objects[(f"{ADM}/validatingwebhookconfigurations", "aim-engine-validating")] = webhook_config(
            "ValidatingWebhookConfiguration", "aim-engine-validating"
        )
        server.objects[(f"{ADM}/mutatingwebhookconfigurations", "aim-engine-mutating")] = webhook_config(
            "MutatingWebhookConfiguration", "aim-engine-mutating"
        )
        server.objects[(f"{ADM}/validatingwebhookconfigurations", "someone-else")] = webhook_config(
            "ValidatingWebhookConfiguration", "someone-else"
        )
        server.kubeconfig_path = server.kubeconfig(tmp_path / "kubeconfig")
        yield server


def certs(api, *extra):
    return main(
        [
            "certs",
            "--kubeconfig",
            api.kubeconfig_path,
            "--namespace",
            "aim-engine",
            "--service",
            "aim-engine-recipe-validator",
            "--secret",
            "aim-engine-webhook-tls",
            "--validating-webhook",
            "aim-engine-validating",
            "--mutating-webhook",
            "aim-engine-mutating",
            *extra,
        ]
    )


def secret(api):
    return api.objects[("/api/v1/namespaces/aim-engine/secrets", "aim-engine-webhook-tls")]


def test_bootstrap_creates_secret_and_patches_only_named_configs(api, capsys):
    assert certs(api) == 0
    data = secret(api)["data"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "aim-engine-recipe-validator.aim-engine.svc" in sans
    for key in ("aim-engine-validating", "aim-engine-mutating"):
        kind = "validating" if "validating" in key else "mutating"
        cfg = api.objects[(f"{ADM}/{kind}webhookconfigurations", key)]
        assert cfg["webhooks"][0]["clientConfig"]["caBundle"] == data["ca.crt"]
    assert (
        "caBundle" not in api.objects[(f"{ADM}/validatingwebhookconfigurations", "someone-else")]["webhooks"][0]["clientConfig"]
    )
    assert "certificate: no CA" in capsys.readouterr().out


def test_second_run_changes_nothing(api, capsys):
    certs(api)
    rv = secret(api)["metadata"]["resourceVersion"]
    assert certs(api) == 0
    assert secret(api)["metadata"]["resourceVersion"] == rv
    assert "certificate: unchanged" in capsys.readouterr().out


def test_expiring_certificate_is_reissued_from_the_same_ca(api, capsys):
    certs(api)
    before = dict(secret(api)["data"])
    assert certs(api, "--renew-before-days", "400") == 0  # every 365-day certificate is now "expiring"
    after = secret(api)["data"]
    assert after["ca.crt"] == before["ca.crt"] and after["tls.crt"] != before["tls.crt"]
    assert "expires" in capsys.readouterr().out


def test_missing_webhook_configuration_is_a_clear_error(api, capsys):
    code = certs(api, "--validating-webhook", "does-not-exist")
    assert code == 2 and "404" in capsys.readouterr().err


def test_needs_new_cert_reasons():
    ca = new_ca()
    names = dns_names("svc", "ns")
    good = new_serving_cert(ca, dns_names=names)
    assert needs_new_cert(good.cert, names=names, ca_pem=ca.cert, renew_before_days=30) == ""
    assert needs_new_cert(None, names=names, ca_pem=ca.cert, renew_before_days=30) == "no serving certificate"
    assert "does not cover" in needs_new_cert(good.cert, names=[*names, "other"], ca_pem=ca.cert, renew_before_days=30)
    assert needs_new_cert(good.cert, names=names, ca_pem=new_ca().cert, renew_before_days=30) == "not issued by the current CA"
    short = new_serving_cert(ca, dns_names=names, days=10)
    assert needs_new_cert(short.cert, names=names, ca_pem=ca.cert, renew_before_days=30).startswith("expires")


def test_the_webhook_writes_its_own_ca_bundle_at_start(api, tmp_path):
    import argparse

    from aim_webhook.cli import _patch_ca_bundle

    ca = new_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    args = argparse.Namespace(
        tls_ca=str(tmp_path / "ca.crt"), ca_bundle_for=["aim-engine-validating"], kubeconfig=api.kubeconfig_path
    )
    # Only the validating configuration of that name exists: the mutating one is missing (404) and
    # the server says so rather than start untrusted.
    problem = _patch_ca_bundle(args, attempts=1)
    assert "404" in problem
    api.objects[(f"{ADM}/mutatingwebhookconfigurations", "aim-engine-validating")] = webhook_config(
        "MutatingWebhookConfiguration", "aim-engine-validating"
    )
    assert _patch_ca_bundle(args, attempts=1) == ""
    bundle = base64.b64encode(ca.cert).decode()
    for kind in ("validating", "mutating"):
        cfg = api.objects[(f"{ADM}/{kind}webhookconfigurations", "aim-engine-validating")]
        assert cfg["webhooks"][0]["clientConfig"]["caBundle"] == bundle
    assert (
        "caBundle" not in api.objects[(f"{ADM}/validatingwebhookconfigurations", "someone-else")]["webhooks"][0]["clientConfig"]
    )
