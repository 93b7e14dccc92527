"""Certificate bootstrap with no manual step: `aim-webhook certs`, run as a Job (or an init step).

Keeps a long-lived self-managed CA and a serving certificate in one Secret (type kubernetes.io/tls,
keys tls.crt, tls.key, ca.crt, ca.key), re-issues the serving certificate from the same CA when it
is missing, expiring (within --renew-before-days) or does not cover the Service's DNS names, and
writes the CA into `clientConfig.caBundle` of the named webhook configurations only (RBAC can then
grant get/update on those names alone). Keeping the CA stable is what makes rotation safe: the API
server trusts the new serving certificate before the webhook presents it, and the serving pods
pick it up from the mounted Secret without a restart (tls.ReloadingContext).
With cert-manager, skip this and let its CA injector fill caBundle."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from kubernetes.client.exceptions import ApiException

from aim_engine.domain.errors import AimError

from .tls import Pem, new_ca, new_serving_cert

log = logging.getLogger(__name__)


class BootstrapError(AimError):
    pass


def dns_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(data: str | None) -> bytes | None:
    return base64.b64decode(data) if data else None


def needs_new_cert(cert_pem: bytes | None, *, names: Sequence[str], ca_pem: bytes, renew_before_days: int) -> str:
    """Why the serving certificate must be re-issued, or '' when it is fine."""
    if not cert_pem:
        return "no serving certificate"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        return "unreadable certificate"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "not issued by the current CA"
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=renew_before_days):
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = set()
    missing = [n for n in names if n not in sans]
    return f"does not cover {', '.join(missing)}" if missing else ""


@dataclass(frozen=True)
class Plan:
    secret_data: dict[str, str]
    ca_pem: bytes
    reason: str  # why the secret changes ('' = unchanged)


def plan(existing: dict[str, Any] | None, *, names: Sequence[str], renew_before_days: int, days: int) -> Plan:
    data = (existing or {}).get("data") or {}
    ca_cert, ca_key = _unb64(data.get("ca.crt")), _unb64(data.get("ca.key"))
    reason = ""
    if ca_cert and ca_key:
        try:
            ca_obj = x509.load_pem_x509_certificate(ca_cert)
            if ca_obj.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=renew_before_days * 2):
                ca_cert = ca_key = None
                reason = "CA expiring"
        except ValueError:
            ca_cert = ca_key = None
            reason = "CA unreadable"
    if not (ca_cert and ca_key):
        ca = new_ca()
        reason = reason or "no CA"
    else:
        ca = Pem(ca_cert, ca_key)
    why = reason or needs_new_cert(_unb64(data.get("tls.crt")), names=names, ca_pem=ca.cert, renew_before_days=renew_before_days)
    if not why:
        return Plan(secret_data=dict(data), ca_pem=ca.cert, reason="")
    serving = new_serving_cert(ca, dns_names=names, days=days)
    return Plan(
        secret_data={
            "tls.crt": _b64(serving.cert),
            "tls.key": _b64(serving.key),
            "ca.crt": _b64(ca.cert),
            "ca.key": _b64(ca.key),
        },
        ca_pem=ca.cert,
        reason=why,
    )


def run(
    *,
    kube_core: Any,
    kube_admission: Any,
    namespace: str,
    service: str,
    secret: str,
    validating: Sequence[str],
    mutating: Sequence[str],
    days: int = 365,
    renew_before_days: int = 30,
) -> str:
    names = dns_names(service, namespace)
    try:
        try:
            current = kube_core.api_client.sanitize_for_serialization(kube_core.read_namespaced_secret(secret, namespace))
        except ApiException as e:
            if e.status != 404:
                raise
            current = None
        p = plan(current, names=names, renew_before_days=renew_before_days, days=days)
        if p.reason:
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": secret,
                    "namespace": namespace,
                    "labels": {
                        "app.kubernetes.io/component": "admission-controller",
                        "app.kubernetes.io/managed-by": "aim-webhook-certs",
                    },
                },
                "data": p.secret_data,
            }
            if current is None:
                kube_core.create_namespaced_secret(namespace, body)
            else:
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                kube_core.replace_namespaced_secret(secret, namespace, body)
            log.info("secret %s/%s written: %s", namespace, secret, p.reason)
        patch_ca_bundle(kube_admission, validating=validating, mutating=mutating, ca_pem=p.ca_pem)
    except ApiException as e:
        raise BootstrapError(f"API server answered {e.status} {e.reason}: {str(e.body)[:300]}") from e
    return p.reason or "unchanged"


def patch_ca_bundle(kube_admission: Any, *, validating: Sequence[str], mutating: Sequence[str], ca_pem: bytes) -> int:
    """Write the CA into clientConfig.caBundle of the named configurations; returns how many changed."""
    bundle = _b64(ca_pem)
    changed_count = 0
    for kind, names_, read, replace in (
        (
            "validating",
            validating,
            kube_admission.read_validating_webhook_configuration,
            kube_admission.replace_validating_webhook_configuration,
        ),
        (
            "mutating",
            mutating,
            kube_admission.read_mutating_webhook_configuration,
            kube_admission.replace_mutating_webhook_configuration,
        ),
    ):
        for name in names_:
            cfg = kube_admission.api_client.sanitize_for_serialization(read(name))
            changed = False
            for hook in cfg.get("webhooks") or []:
                client = hook.setdefault("clientConfig", {})
                if client.get("caBundle") != bundle:
                    client["caBundle"] = bundle
                    changed = True
            if changed:
                replace(name, cfg)
                changed_count += 1
                log.info("caBundle written into %s webhook configuration %s", kind, name)
    return changed_count
