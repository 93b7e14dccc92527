"""A real Kubernetes API server on loopback for admission tests: etcd + kube-apiserver built from
the k8s.io/kubernetes module (make cluster-tools), generated certificates, a static admin token,
RBAC authorisation and the admission plugins on. No kubelet: Pods are admitted and stored, not run
(the real-cluster suite adds nodes)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".tools" / "bin"
TOKEN = "aim-engine-test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pem_key(key) -> bytes:  # type: ignore[no-untyped-def]
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool, sans=(), ips=(), org: str = "") -> x509.Certificate:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    name = [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    if org:
        name.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(name))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans or ips:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]),
            critical=False,
        )
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class ControlPlane:
    url: str
    ca_file: Path
    kubeconfig: Path
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start(tmp: Path, *, controllers: bool = False, node_ip: str | None = None, detach: bool = False) -> ControlPlane:
    """etcd + kube-apiserver; with `controllers`, also kube-controller-manager, kube-scheduler and
    kwok (simulated nodes: those annotated kwok.x-k8s.io/node=fake).

    With `node_ip` (the real-cluster harness, tools/realcluster.py) the API server also listens on
    that address so that Pods reach it through the `kubernetes` Service, authorises kubelets (Node
    authorizer, NodeRestriction), reaches webhooks by their endpoints (there is no in-cluster DNS
    or Service route from the host: --enable-aggregator-routing) and has a client certificate for
    kubelets. `detach` starts the processes in their own session (they outlive this process)."""
    for tool in ("etcd", "kube-apiserver"):
        assert (BIN / tool).exists(), f"{BIN / tool} missing: run make cluster-tools"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("aim-engine-test-ca", ca_key, None, ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert(
        "kube-apiserver",
        ca_key,
        ca.subject,
        srv_key,
        ca=False,
        sans=["localhost", "kubernetes.default.svc"],
        ips=["127.0.0.1", "10.96.0.1", *([node_ip] if node_ip else [])],
    )
    kc_key = ec.generate_private_key(ec.SECP256R1())
    kc = _cert("kube-apiserver-kubelet-client", ca_key, ca.subject, kc_key, ca=False, org="system:masters")
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # The aggregation layer (API servers such as KEDA's metrics server behind an APIService): the
    # API server proxies to them with this client certificate, from its own front-proxy CA, and they
    # trust the user it names from the headers (Kubernetes' "Configure the Aggregation Layer").
    fp_ca_key = ec.generate_private_key(ec.SECP256R1())
    fp_ca = _cert("aim-engine-front-proxy-ca", fp_ca_key, None, fp_ca_key, ca=True)
    fp_key = ec.generate_private_key(ec.SECP256R1())
    fp = _cert("front-proxy-client", fp_ca_key, fp_ca.subject, fp_key, ca=False)
    files = {
        "front-proxy-ca.crt": fp_ca.public_bytes(serialization.Encoding.PEM),
        "front-proxy-client.crt": fp.public_bytes(serialization.Encoding.PEM),
        "front-proxy-client.key": _pem_key(fp_key),
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "apiserver.crt": srv.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(srv_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "tokens.csv": f'{TOKEN},admin,admin-uid,"system:masters"\n'.encode(),
        "ca.key": _pem_key(ca_key),
        "kubelet-client.crt": kc.public_bytes(serialization.Encoding.PEM),
        "kubelet-client.key": _pem_key(kc_key),
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    procs, logs = [], []

    def spawn(name: str, cmd: list[str]) -> None:
        log = tmp / f"{name}.log"
        logs.append(log)
        procs.append(subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=detach))

    spawn(
        "etcd",
        [
            str(BIN / "etcd"),
            "--data-dir",
            str(tmp / "etcd"),
            "--listen-client-urls",
            f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer_port}",
            "--initial-cluster",
            f"default=http://127.0.0.1:{peer_port}",
            "--log-level",
            "warn",
        ],
    )
    spawn(
        "kube-apiserver",
        [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={'0.0.0.0' if node_ip else '127.0.0.1'}",
            f"--secure-port={api_port}",
            f"--tls-cert-file={tmp / 'apiserver.crt'}",
            f"--tls-private-key-file={tmp / 'apiserver.key'}",
            f"--client-ca-file={tmp / 'ca.crt'}",
            f"--token-auth-file={tmp / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={tmp / 'sa.pub'}",
            f"--service-account-signing-key-file={tmp / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            f"--authorization-mode={'Node,RBAC' if node_ip else 'RBAC'}",
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,"
            f"MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota{',NodeRestriction' if node_ip else ''}",
            f"--advertise-address={node_ip or '127.0.0.1'}",
            f"--cert-dir={tmp / 'certs'}",
            f"--requestheader-client-ca-file={tmp / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={tmp / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={tmp / 'front-proxy-client.key'}",
            "--v=1",
            *(
                [
                    "--enable-aggregator-routing=true",
                    f"--kubelet-client-certificate={tmp / 'kubelet-client.crt'}",
                    f"--kubelet-client-key={tmp / 'kubelet-client.key'}",
                    "--kubelet-preferred-address-types=InternalIP",
                ]
                if node_ip
                else []
            ),
        ],
    )
    cp = ControlPlane(f"https://127.0.0.1:{api_port}", tmp / "ca.crt", tmp / "kubeconfig", procs, logs)
    cp.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
current-context: test
clusters: [{{name: test, cluster: {{server: "{cp.url}", certificate-authority: "{cp.ca_file}"}}}}]
contexts: [{{name: test, context: {{cluster: test, user: admin}}}}]
users: [{{name: admin, user: {{token: {TOKEN}}}}}]
""")
    _wait_ready(cp, procs, logs)
    if controllers:
        for tool in ("kube-controller-manager", "kube-scheduler", "kwok"):
            assert (BIN / tool).exists(), f"{BIN / tool} missing: run make cluster-tools"
        kc = str(cp.kubeconfig)
        spawn(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                f"--service-account-private-key-file={tmp / 'sa.key'}",
                f"--root-ca-file={tmp / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={tmp / 'kcm-certs'}",
                "--controllers=*,-nodeipam",
                # kwok heartbeats its nodes every 20-45 s (its node-heartbeat stage) and stops once a
                # node is marked NotReady: a grace period under that flaps them (found in CI).
                "--node-monitor-grace-period=90s",
                "--v=1",
            ],
        )
        spawn(
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={tmp / 'sched-certs'}",
                "--v=1",
            ],
        )
        spawn(
            "kwok",
            [
                str(BIN / "kwok"),
                "-c",
                str(ROOT / ".tools" / "kwok" / "stages.yaml"),
                f"--kubeconfig={kc}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.0.0.1/24",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
    return cp


def _wait_ready(cp: ControlPlane, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is not None:
                cp.stop()
                raise RuntimeError(f"{log.name} exited: {log.read_text()[-3000:]}")
        try:
            req = urllib.request.Request(f"{cp.url}/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
            if urllib.request.urlopen(req, context=cp.context(), timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    cp.stop()
    raise RuntimeError("kube-apiserver not ready: " + logs[1].read_text()[-3000:])


def wait_for(fn, *, timeout: float = 180, what: str):  # type: ignore[no-untyped-def]
    """Poll `fn` every second until it returns something truthy; return that, or fail the test with
    what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last}")


def ensure_default_service_account(core, namespace: str) -> None:  # type: ignore[no-untyped-def]
    """Create the namespace's "default" ServiceAccount, which the ServiceAccount admission plugin
    wants before it admits Pods; no controller-manager makes it on the bare control plane."""
    for _ in range(50):
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})
            return
        except ApiException as e:
            if e.status == 409:
                return
            time.sleep(0.2)


def env_with_kubeconfig(cp: ControlPlane) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}


def chart_webhook_configurations(
    port: int, ca_pem: bytes, *, failure_policy: str = "Fail", release: str = "aim-engine", namespace: str = "aim-engine"
) -> list[dict[str, object]]:
    """The chart's own Mutating/ValidatingWebhookConfiguration, rendered by Helm, pointed at a webhook
    served on loopback (this control plane has no service dataplane to reach it by its Service)."""
    out = subprocess.run(
        [
            str(BIN / "helm"),
            "template",
            release,
            str(ROOT / "chart"),
            "-n",
            namespace,
            "--show-only",
            "templates/admission/webhook-configurations.yaml",
            "--set",
            f"admission_controller.webhook.failure_policy={failure_policy}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    for d in docs:
        for hook in d["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": base64.b64encode(ca_pem).decode()}
    return docs
