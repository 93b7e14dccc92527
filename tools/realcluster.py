#!/usr/bin/env python3
"""A real single-node Kubernetes cluster from real components, plus simulated GPU nodes.

    python tools/realcluster.py up [--state DIR] [--no-monitoring]   (make cluster-up)
    python tools/realcluster.py down [--state DIR]                   (make cluster-down)

- control plane: etcd, kube-apiserver (PodSecurity, Mutating/ValidatingAdmissionWebhook, Node
  authorizer), kube-controller-manager, kube-scheduler (tools/localcluster.py), on this machine's
  address so that Pods reach the API server through the `kubernetes` Service;
- one real node, `aim-engine-node`: containerd (Debian 1.6, CRI plugin, runc, overlayfs) with the
  images built from the repository's Dockerfiles (tools/cluster/build-images.sh) imported, a bridge
  CNI network (containernetworking-plugins), kubelet and kube-proxy (iptables) built from the same
  k8s.io/kubernetes module as the control plane. It runs the webhook, the selector hook Job and the
  certificate Job as real containers, and vLLM's CPU build. containerd's image store
  (.tools/containerd) outlives the cluster: an image tarball is imported (and unpacked) once, not at
  every `up` (the vLLM image is 6.6 GB);
- model-cache volumes (hostPath PersistentVolumes) that hold the test model `aim-engine/tiny-llama` in
  a Hugging Face cache layout, so a vLLM pod on the real node gets it through the chart's PVC;
- monitoring (unless --no-monitoring): prometheus-operator and a Prometheus, both built locally, that
  pick up every ServiceMonitor, PodMonitor and PrometheusRule labelled like the chart's
  (tools/monitoring/stack.yaml);
- kwok nodes with realistic GPU capacity and labels (AMD GPU labeller and GPU Feature Discovery
  forms), tainted `<vendor>/gpu=present:NoSchedule` as GPU operators do: the vLLM Pods (which get
  the toleration from the webhook) land there, nothing else does.

Needs root (containerd, kubelet, iptables). One cluster per machine: sockets live under
/run/aim-engine-cluster. `down` stops Pods through the kubelet first (so CNI and volumes are torn
down by their owners), then every process it started and any container shim left, unmounts what is
left under the state directory, deletes the bridge and kube-proxy's rules, and reports any survivor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import yaml  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from kubernetes import client, config, utils  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from localcluster import TOKEN, ControlPlane, _cert, _pem_key, free_port, start  # noqa: E402

NODE = "aim-engine-node"
RUN = Path("/run/aim-engine-cluster")
SOCK = RUN / "containerd.sock"
OWNER = Path("/run/aim-engine-cluster.owner")  # outside RUN: down() removes RUN
BRIDGE = "aimcni0"
POD_CIDR = "10.244.0.0/24"
K8S = ROOT / ".tools" / "bin"
IMAGES = ROOT / ".tools" / "images"
DEFAULT_STATE = ROOT / ".tools" / "cluster"
# containerd's per-registry host configuration (hosts.toml), read at each pull: trust_registry()
# lets the node pull from a registry on this host's loopback over plain HTTP, as a user's nodes
# pull through their containerd's registry config.
REGISTRY_HOSTS = RUN / "certs.d"


def _cache_root() -> Path:
    """The build cache outside the clone (tools/cache.py: $AIM_ENGINE_CACHE, else
    ${XDG_CACHE_HOME:-~/.cache}/aim-engine)."""
    explicit = os.environ.get("AIM_ENGINE_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "aim-engine").resolve()


# containerd's root (content, unpacked snapshots, metadata): shared by every cluster and every clone
# on this machine, one cluster at a time, in the build cache, so that an image is imported (and
# unpacked) once. It is content-addressed: an image is imported again when what the clone built
# differs from what the store holds (the OCI manifest's digest; a tarball's cache entry, size and
# mtime). Its state directory (tasks, sockets) is under RUN.
IMAGE_STORE = _cache_root() / "containerd"
# (image under IMAGES: a `docker save` tarball or an OCI layout directory, required): what the real node runs.
NODE_IMAGES = [
    ("pause.oci", True),
    ("aim-engine.tar", True),
    ("vllm-cpu.oci", False),
    ("monitoring.tar", False),
    ("keda.tar", False),
]
KEDA_NS = "keda"
# KEDA's metrics API server reaches the operator's gRPC metrics service by this address: a fixed
# cluster IP, since the local cluster has no DNS (the authority keeps the operator's certificate valid).
KEDA_OPERATOR_IP = "10.96.66.66"
# The test model (tools/engine/make_test_model.py, written by build-images.sh) and the image serving it.
TEST_MODEL = IMAGES / "test-model"
TEST_MODEL_ID = "aim-engine/tiny-llama"
MONITORING_STACK = ROOT / "tools" / "monitoring" / "stack.yaml"
MONITORING_NS = "aim-monitoring"
PROMETHEUS_NAME = "aim-engine"  # the Prometheus object; its pod is prometheus-aim-engine-0

AMD_MI300X = {
    "amd.com/gpu.product-name": "AMD_Instinct_MI300X_OAM",
    "amd.com/gpu.device-id": "74a1",
    "amd.com/gpu.vram": "192G",
    "amd.com/gpu.family": "AI",
}
GFD_H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "8"}
GFD_A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920", "nvidia.com/gpu.count": "8"}
# (name, labels, extended resource, GPUs)
# Room for the e2e suite's lanes that install side by side (tools/e2e.py): four MI300X servers, three
# H100 and one A100.
GPU_NODES: list[tuple[str, dict[str, str], str, int]] = [
    ("mi300x-0", AMD_MI300X, "amd.com/gpu", 8),
    ("mi300x-1", AMD_MI300X, "amd.com/gpu", 8),
    ("mi300x-2", AMD_MI300X, "amd.com/gpu", 8),
    ("mi300x-3", AMD_MI300X, "amd.com/gpu", 8),
    ("h100-0", GFD_H100, "nvidia.com/gpu", 8),
    ("h100-1", GFD_H100, "nvidia.com/gpu", 8),
    ("h100-2", GFD_H100, "nvidia.com/gpu", 8),
    ("a100-0", GFD_A100, "nvidia.com/gpu", 8),
]


def log(msg: str) -> None:
    print(f">> {msg}", flush=True)


def sh(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """A best-effort command (teardown, probes): the caller reads its result."""
    return subprocess.run(cmd, check=False, capture_output=True, text=True)


def host_ip() -> str:
    """The address of the interface that carries the default route (what Pods can reach)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))  # no packet is sent for a UDP connect
        return str(s.getsockname()[0])


@dataclass
class Cluster:
    state: Path
    kubeconfig: Path
    url: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def kubeconfig_file(path: Path, *, server: str, ca: Path, user: dict[str, str]) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "aim-engine",
                "clusters": [{"name": "aim-engine", "cluster": {"server": server, "certificate-authority": str(ca)}}],
                "contexts": [{"name": "aim-engine", "context": {"cluster": "aim-engine", "user": "u"}}],
                "users": [{"name": "u", "user": user}],
            },
            indent=1,
        )
    )


def _spawn(state: Path, name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    logf = (state / "logs" / f"{name}.log").open("ab")
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    with (state / "pids").open("a") as f:
        f.write(f"{p.pid} {name}\n")
    return p.pid


def _wait(fn: Any, *, timeout: float, what: str, state: Path, logname: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # reported on timeout
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    tail = ""
    if logname:
        lf = state / "logs" / f"{logname}.log"
        tail = "\n" + lf.read_text(errors="replace")[-4000:] if lf.exists() else ""
    raise RuntimeError(f"timed out waiting for {what}: {last}{tail}")


def _node_credentials(state: Path, cp_dir: Path, ip: str) -> None:
    ca_key = serialization.load_pem_private_key((cp_dir / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((cp_dir / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(f"system:node:{NODE}", ca_key, ca.subject, key, ca=False, org="system:nodes")
    (state / "kubelet.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (state / "kubelet.key").write_bytes(_pem_key(key))
    skey = ec.generate_private_key(ec.SECP256R1())
    serving = _cert(NODE, ca_key, ca.subject, skey, ca=False, sans=[NODE], ips=[ip])
    (state / "kubelet-serving.crt").write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    (state / "kubelet-serving.key").write_bytes(_pem_key(skey))


def _containerd_config(state: Path) -> Path:
    cfg = state / "containerd.toml"
    cfg.write_text(f"""version = 2
root = "{IMAGE_STORE}"
state = "{RUN / "containerd-state"}"
[grpc]
  address = "{SOCK}"
[ttrpc]
  address = "{RUN / "containerd.sock.ttrpc"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "aim-engine.local/pause:3.10"
  enable_selinux = false
  # This machine withholds CAP_SYS_RESOURCE even from root: no process may lower its OOM score
  # below its own (the Pod sandbox asks for -998), so containerd caps it as it does rootless.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{REGISTRY_HOSTS}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{state / "cni" / "net.d"}"
""")
    net = state / "cni" / "net.d"
    net.mkdir(parents=True, exist_ok=True)
    (net / "10-aim-engine.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "aim-engine",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(state / "cni" / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=1,
        )
    )
    return cfg


def _kubelet_config(state: Path, ip: str, cp_dir: Path) -> Path:
    cfg = state / "kubelet.yaml"
    cfg.write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": ip,
                "port": free_port(),
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": free_port(),
                "tlsCertFile": str(state / "kubelet-serving.crt"),
                "tlsPrivateKeyFile": str(state / "kubelet-serving.key"),
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(cp_dir / "ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                "cgroupDriver": "cgroupfs",
                "failCgroupV1": False,
                "failSwapOn": False,
                "containerRuntimeEndpoint": f"unix://{SOCK}",
                "podLogsDir": str(state / "pod-logs"),
                "resolvConf": "/etc/resolv.conf",
                "serializeImagePulls": False,
                "registerNode": True,
                "maxPods": 60,
                "evictionHard": {
                    "memory.available": "100Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "nodeStatusReportFrequency": "10s",
                # Secret and ConfigMap volumes follow their objects at each Pod sync: 10 s instead of a
                # minute, so that Prometheus sees a new ServiceMonitor or PrometheusRule (which the
                # operator writes into its Secrets) within seconds.
                "syncFrequency": "10s",
                "shutdownGracePeriod": "0s",
            },
            indent=1,
        )
    )
    return cfg


CTR = ["ctr", "--address", str(SOCK), "-n", "k8s.io"]


def _start_containerd(state: Path, cfg: Path) -> None:
    """Start containerd on the shared image store. A cluster that did not stop cleanly may have left
    container records in it: they are deleted, and containerd restarted so that its CRI plugin starts
    from an empty list (the kubelet would otherwise try to tear down sandboxes of another cluster)."""

    logf = state / "logs" / "containerd.log"

    def start() -> int:
        offset = logf.stat().st_size if logf.exists() else 0
        pid = _spawn(state, "containerd", ["containerd", "--config", str(cfg)])
        _wait(lambda: sh([*CTR, "version"]).returncode == 0, timeout=60, what="containerd", state=state, logname="containerd")

        # The CRI plugin answers "server is not initialized yet" (and a kubelet started then exits)
        # until it has recovered its state and started its streaming server, which it logs. (When
        # every image had to be imported this took longer than the imports; with the shared store it
        # does not.)
        def cri_ready() -> bool:
            with logf.open("rb") as f:
                f.seek(offset)
                return b'msg="Start streaming server"' in f.read()

        _wait(cri_ready, timeout=60, what="containerd's CRI plugin", state=state, logname="containerd")
        return pid

    pid = start()
    left = sh([*CTR, "containers", "ls", "-q"]).stdout.split()
    if not left:
        return
    log(f"removing {len(left)} container records a previous cluster left in {IMAGE_STORE}")
    _delete_containers()
    _stop(pid)
    for d in ("sandboxes", "containers"):
        shutil.rmtree(IMAGE_STORE / "io.containerd.grpc.v1.cri" / d, ignore_errors=True)
    start()


def _delete_containers() -> None:
    for c in sh([*CTR, "containers", "ls", "-q"]).stdout.split():
        sh([*CTR, "tasks", "delete", "--force", c])
        sh([*CTR, "containers", "delete", c])


def _layout_manifest(layout: Path) -> tuple[str, str]:
    """(image name, manifest digest) of a one-image OCI layout (tools/cluster/oci_image.py)."""
    (m,) = json.loads((layout / "index.json").read_text())["manifests"]
    return m["annotations"]["io.containerd.image.name"], m["digest"]


def _image_names(path: Path) -> list[str]:
    """The names an image carries: a `docker save` tarball's RepoTags, an OCI layout's name."""
    if path.is_dir():
        return [_layout_manifest(path)[0]]
    with tarfile.open(path) as t:
        f = t.extractfile("manifest.json")
        assert f is not None
        return [tag for m in json.load(f) for tag in m.get("RepoTags") or []]


def _store_digests() -> dict[str, str]:
    """name -> manifest digest of every image in the store (`ctr images ls`)."""
    out: dict[str, str] = {}
    for line in sh([*CTR, "images", "ls"]).stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3 and cols[2].startswith("sha256:"):
            out[cols[0]] = cols[2]
    return out


def _import_images(state: Path, cfg: Path) -> None:
    """Import (and unpack, for the CRI's snapshotter) each image the store does not hold yet. An OCI
    layout is known by its manifest's digest, which the store reports; a tarball by the cache entry
    it is in, its size and its mtime (recorded in imported.json), and its images must still be listed.
    A layout is streamed to `ctr images import` as a tar (no second copy on disk)."""
    stamps_file = IMAGE_STORE / "imported.json"
    try:
        stamps: dict[str, str] = json.loads(stamps_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    digests = _store_digests()
    for name, _required in NODE_IMAGES:
        path = IMAGES / name
        if not path.exists():
            if name.startswith("vllm-cpu"):
                log(f"{path} missing: the node will not run vLLM (make images builds it)")
            continue
        names = _image_names(path)
        t0 = time.monotonic()
        if path.is_dir():
            ref, digest = _layout_manifest(path)
            if digests.get(ref) == digest:
                continue
            tar = subprocess.Popen(["tar", "-C", str(path.resolve()), "-cf", "-", "."], stdout=subprocess.PIPE)
            r = subprocess.run([*CTR, "images", "import", "--snapshotter", "overlayfs", "-"], stdin=tar.stdout,
                               capture_output=True, text=True, check=False)  # fmt: skip
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0 or r.returncode != 0:
                raise RuntimeError(f"ctr images import of {path} failed: {r.stderr[-2000:]}")
            size = sum(f.stat().st_size for f in (path / "blobs" / "sha256").iterdir())
        else:
            st = path.stat()
            stamp = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
            if stamps.get(name) == stamp and all(n in digests for n in names):
                continue
            r = sh([*CTR, "images", "import", "--snapshotter", "overlayfs", str(path)])
            if r.returncode != 0:
                raise RuntimeError(f"ctr images import {path} failed: {r.stderr[-2000:]}")
            stamps[name] = stamp
            stamps_file.write_text(json.dumps(stamps, indent=1))
            size = st.st_size
        log(f"imported {', '.join(names)} in {time.monotonic() - t0:.0f} s ({size / 2**30:.1f} GiB)")
    # Images of ours that no image of the clone names any more (an older vLLM or Prometheus):
    # containerd's garbage collector frees their content and snapshots once they are untagged.
    current = {n for name, _ in NODE_IMAGES if (IMAGES / name).exists() for n in _image_names(IMAGES / name)}
    stale = sorted(n for n in _store_digests() if n.startswith("aim-engine.local/") and n not in current)
    if stale:
        sh([*CTR, "images", "rm", *stale])
        log(f"removed images no longer built: {', '.join(stale)}")


def tokenizer_cache(into: Path) -> Path:
    """A Hugging Face cache holding the test model (its tokenizer, for vLLM's benchmark client run
    by a test), copied from what `make images` wrote: the model-cache volumes are the releases'
    (a released volume may be emptied while another test reads it)."""
    dst = into / "hf-home"
    if not dst.is_dir():
        shutil.copytree(TEST_MODEL, dst, symlinks=True)
    return dst


def trust_registry(host: str) -> Path:
    """containerd pulls `host`'s images over plain HTTP (a registry on this machine's loopback, which
    the node, on the host network, reaches): its hosts.toml, read at every pull."""
    d = REGISTRY_HOSTS / host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(f'server = "http://{host}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n')
    return d


def forget_registry(host: str) -> None:
    """Undo trust_registry(), and drop what the node pulled from it (the image store is cached)."""
    shutil.rmtree(REGISTRY_HOSTS / host, ignore_errors=True)
    listed = sh([*CTR, "images", "ls", "-q"])
    for ref in listed.stdout.split():
        if ref.startswith(f"{host}/"):
            sh([*CTR, "images", "rm", ref])


def vllm_image() -> str:
    """The vLLM CPU image the node holds (tools/cluster/build-images.sh)."""
    f = IMAGES / "vllm-image"
    return f.read_text().strip() if f.exists() else "aim-engine.local/vllm-cpu"


def up(state: Path = DEFAULT_STATE, *, monitoring: bool | None = None) -> Cluster:
    """Bring the cluster up; `monitoring` defaults to the environment's AIM_CLUSTER_MONITORING (on
    unless it is 0), so that a suite or the demo can run without it."""
    if monitoring is None:
        monitoring = os.environ.get("AIM_CLUSTER_MONITORING", "1") != "0"
    if os.geteuid() != 0:
        raise SystemExit("the local cluster needs root (containerd, kubelet, iptables)")
    if (state / "pids").exists():
        down(state, quiet=True)
    if SOCK.exists() and sh(["ctr", "--address", str(SOCK), "version"]).returncode == 0:
        raise SystemExit(
            f"a local cluster is already running ({SOCK}): `make cluster-down` first, or point the suite at it "
            "with AIM_E2E_KUBECONFIG=.tools/cluster/kubeconfig"
        )
    for tool in ("kubelet", "kube-proxy"):
        if not (K8S / tool).exists():
            raise SystemExit(f"{K8S / tool} missing: run make setup")
    for name, required in NODE_IMAGES:
        if required and not (IMAGES / name).exists():
            raise SystemExit(f"{IMAGES / name} missing: run make images")
    if monitoring and not (IMAGES / "monitoring.tar").exists():
        raise SystemExit(f"{IMAGES / 'monitoring.tar'} missing: run make images (or up --no-monitoring)")
    shutil.rmtree(state, ignore_errors=True)
    (state / "logs").mkdir(parents=True)
    RUN.mkdir(parents=True, exist_ok=True)
    # The machine-wide pieces (containerd's socket, the bridge, kube-proxy's rules, the kubepods
    # cgroups) belong to this state directory: down() of another one must leave them alone.
    OWNER.write_text(str(state.resolve()))
    ip = host_ip()
    t0 = time.monotonic()

    log(f"control plane on {ip} (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)")
    cp_dir = state / "control-plane"
    cp_dir.mkdir()
    cp: ControlPlane = start(cp_dir, controllers=True, node_ip=ip, detach=True)
    with (state / "pids").open("a") as f:
        for p, lf in zip(cp.procs, cp.logs, strict=True):
            f.write(f"{p.pid} {lf.stem}\n")
    server = cp.url.replace("127.0.0.1", ip)
    kubeconfig = state / "kubeconfig"
    kubeconfig_file(kubeconfig, server=server, ca=cp.ca_file, user={"token": TOKEN})
    cluster = Cluster(state, kubeconfig, server)

    try:
        log(f"containerd (CRI, runc, bridge CNI) and the locally built images (store {IMAGE_STORE})")
        cfg = _containerd_config(state)
        _start_containerd(state, cfg)
        _import_images(state, cfg)

        log(f"kubelet ({NODE}) and kube-proxy")
        _node_credentials(state, cp_dir, ip)
        node_kc = state / "kubelet.kubeconfig"
        kubeconfig_file(
            node_kc,
            server=server,
            ca=cp.ca_file,
            user={"client-certificate": str(state / "kubelet.crt"), "client-key": str(state / "kubelet.key")},
        )
        _spawn(
            state,
            "kubelet",
            [
                str(K8S / "kubelet"),
                f"--config={_kubelet_config(state, ip, cp_dir)}",
                f"--kubeconfig={node_kc}",
                f"--root-dir={state / 'kubelet'}",
                f"--cert-dir={state / 'kubelet-pki'}",
                f"--hostname-override={NODE}",
                f"--node-ip={ip}",
                "--node-labels=aim-engine.io/node=real",
                "--v=1",
            ],
        )
        _spawn(
            state,
            "kube-proxy",
            [
                str(K8S / "kube-proxy"),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={NODE}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_CIDR}",
                "--conntrack-max-per-core=0",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                f"--healthz-bind-address=127.0.0.1:{free_port()}",
                "--v=1",
            ],
        )
        config.load_kube_config(config_file=str(kubeconfig))
        core = client.CoreV1Api()

        def node_ready() -> bool:
            n = core.read_node(NODE)
            return any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])

        _wait(node_ready, timeout=120, what=f"node {NODE} Ready", state=state, logname="kubelet")

        prepare(kubeconfig)
        populate_model_cache()
        _wait(
            lambda: all(
                any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
                and not any(t.key.startswith("node.kubernetes.io/") for t in (n.spec.taints or []))
                for n in core.list_node().items
            ),
            timeout=120,
            what="all nodes Ready",
            state=state,
            logname="kwok",
        )
        _wait(
            lambda: any(s.metadata.name == "default" for s in core.list_namespaced_service_account("default").items),
            timeout=60,
            what="the controller-manager (default ServiceAccount)",
            state=state,
            logname="kube-controller-manager",
        )
        if monitoring:
            install_monitoring(kubeconfig)
    except BaseException:
        down(state, quiet=True)
        raise
    log(f"cluster up in {time.monotonic() - t0:.0f} s: KUBECONFIG={kubeconfig}")
    return cluster


CRDS = ROOT / ".tools" / "crds"
# Seed 004's Production Deployment command, as the helm arguments after the chart (used by
# `make demo` and the e2e suite), and the image this cluster runs (tools/cluster/build-images.sh).
SEED_PRODUCTION_SETS = [
    "--set",
    "aim_engine.auto_select=true",
    "--set",
    "monitoring.enabled=true",
    "--set",
    "admission_controller.enabled=true",
    "--set",
    "aim_engine.model_id=Qwen/Qwen3-32B",
]
MODEL_CACHE_VOLUMES = 40
MODEL_CACHE_HOSTPATH = "/var/tmp/aim-engine-model-cache-{}"
LOCAL_IMAGE_REPOSITORY = "aim-engine.local/aim-engine"
LOCAL_IMAGE_TAG = "dev"
# The chart's values for that image, as `helm install` arguments.
LOCAL_IMAGE_SETS = [
    "--set", f"image.aim_engine.repository={LOCAL_IMAGE_REPOSITORY}",
    "--set", f"image.aim_engine.tag={LOCAL_IMAGE_TAG}",
]  # fmt: skip


# The demo's real engine (tools/demo.py; tests/e2e/test_01_real_engine.py checks it): a release of
# the test model asking for CPU, so the selector picks its CPU recipe and vLLM's CPU build serves it
# on the real node, with the chart's monitoring (scraped every 5 s).
CPU_NAMESPACE = "aim-engine-cpu"
CPU_RELEASE = "tiny"


def cpu_release_sets() -> list[str]:
    repository, _, tag = vllm_image().rpartition(":")
    return [
        "--set", f"aim_engine.model_id={TEST_MODEL_ID}",
        "--set", "aim_engine.hardware.gpu_type=CPU-x86",
        "--set-string", "aim_engine.env_vars.HF_HUB_OFFLINE=1",
        "--set", f"image.vllm.repository={repository}",
        "--set", f"image.vllm.tag={tag}",
        "--set", "image.vllm.pull_policy=Never",
        *LOCAL_IMAGE_SETS,
        "--set", "monitoring.enabled=true",
        "--set", "monitoring.prometheus.scrape_interval=5s",
    ]  # fmt: skip


def wait_settled(kubeconfig: Path, namespace: str, release: str, *, timeout: float = 600) -> None:
    """After `helm install/upgrade --wait`: until the release has settled. Helm does not wait for the
    revision's reconcile Job, which replaces the pods created before the webhook served (an install:
    the Deployment comes before the webhook configurations) or whose recipe changed (an upgrade
    that reranked); a request sent before it is done can reach a pod about to go. Settled: that Job
    complete, and every engine pod of the release Ready, none terminating."""
    config.load_kube_config(config_file=str(kubeconfig))
    batch, core = client.BatchV1Api(), client.CoreV1Api()
    instance = f"app.kubernetes.io/instance={release}"
    deadline = time.monotonic() + timeout
    while True:
        jobs = batch.list_namespaced_job(
            namespace, label_selector=f"{instance},app.kubernetes.io/component=recipe-validator-reconcile"
        )
        pods = core.list_namespaced_pod(namespace, label_selector=f"{instance},app.kubernetes.io/component=inference").items
        done = all((j.status.succeeded or 0) >= 1 for j in jobs.items)
        ready = [
            p
            for p in pods
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        ]
        if done and pods and len(ready) == len(pods):
            return
        if time.monotonic() > deadline:
            states = {p.metadata.name: (p.status.phase, bool(p.metadata.deletion_timestamp)) for p in pods}
            raise RuntimeError(
                f"release {namespace}/{release} did not settle in {timeout:.0f} s: reconcile Job done {done}, pods {states}"
            )
        time.sleep(1)


def prepare(kubeconfig: Path) -> None:
    """What the suite expects of any cluster (this one or kind): kwok GPU nodes, the
    prometheus-operator CRDs (ServiceMonitor, PrometheusRule; from its v0.85.0 module, by make
    setup) and pre-provisioned volumes for the model-cache claims (no dynamic provisioner here)."""
    config.load_kube_config(config_file=str(kubeconfig))
    core = client.CoreV1Api()
    log("kwok GPU nodes: " + ", ".join(f"{n} ({g}x {r})" for n, _, r, g in GPU_NODES))
    for name, labels, resource, gpus in GPU_NODES:
        create_gpu_node(core, name=name, labels=labels, resource=resource, gpus=gpus)
    for crd in sorted(CRDS.glob("*.yaml")):
        try:
            utils.create_from_yaml(client.ApiClient(), str(crd))
        except utils.FailToCreateError as e:
            if not all(isinstance(x, ApiException) and x.status == 409 for x in e.api_exceptions):
                raise
    # Model-cache volumes, one per release the e2e suite installs (each is used once: a released
    # hostPath volume is not reclaimed without a deleter), with room for a few reruns.
    for i in range(MODEL_CACHE_VOLUMES):
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"aim-engine-model-cache-{i}", "labels": {"aim-engine.io/e2e": "model-cache"}},
            "spec": {
                "capacity": {"storage": "500Gi"},
                "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": MODEL_CACHE_HOSTPATH.format(i), "type": "DirectoryOrCreate"},
            },
        }
        try:
            core.create_persistent_volume(pv)
        except ApiException as e:
            if e.status != 409:
                raise


def populate_model_cache() -> None:
    """Put the test model into every model-cache volume, as a download would have: the volume is
    mounted at the chart's model_cache.mount_path, which is HF_HOME, so the files sit under
    hub/models--aim-engine--tiny-llama/. The chart's claim (ReadWriteOnce, no storage class, 200Gi)
    binds to any of these volumes (both access modes, no class, 500Gi). The volumes are emptied first:
    every cluster starts with the same caches. Writable by any uid (an engine running as non-root
    may write its locks there)."""
    if not (TEST_MODEL / "hub").is_dir():
        log(f"{TEST_MODEL} missing: the model-cache volumes stay empty (make images writes the test model)")
        return
    for i in range(MODEL_CACHE_VOLUMES):
        dst = Path(MODEL_CACHE_HOSTPATH.format(i))
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(TEST_MODEL, dst)
        for d in (dst, dst / "hub"):
            d.chmod(0o777)
    log(f"model-cache volumes hold {TEST_MODEL_ID} ({MODEL_CACHE_HOSTPATH.format('*')})")


class _CRDLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading YAML 1.1's `=` (the "value" tag: a relabel action in the
    operator's CRDs) as the string it is in YAML 1.2."""


_CRDLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_scalar)


def install_monitoring(kubeconfig: Path, *, timeout: float = 180) -> None:
    """prometheus-operator's CRDs, the operator and a Prometheus (tools/monitoring/stack.yaml, with the
    images build-images.sh made), then wait until that Prometheus is Ready."""
    config.load_kube_config(config_file=str(kubeconfig))
    api = client.ApiClient()
    info = json.loads((IMAGES / "monitoring.json").read_text())
    t0 = time.monotonic()
    ext = client.ApiextensionsV1Api()
    names = set()
    for f in sorted((IMAGES / "monitoring-crds").glob("*.yaml")):
        crd = yaml.load(f.read_text(), Loader=_CRDLoader)
        names.add(crd["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as e:
            if e.status != 409:
                raise

    def established() -> bool:
        ok = {
            c.metadata.name
            for c in ext.list_custom_resource_definition().items
            if any(x.type == "Established" and x.status == "True" for x in c.status.conditions or [])
        }
        return names <= ok

    _wait(established, timeout=60, what="the prometheus-operator CRDs Established", state=kubeconfig.parent)
    text = MONITORING_STACK.read_text()
    for key, value in {
        "@OPERATOR_IMAGE@": info["operator"],
        "@CONFIG_RELOADER_IMAGE@": info["config_reloader"],
        "@PROMETHEUS_IMAGE@": info["prometheus"],
        "@PROMETHEUS_VERSION@": info["prometheus_version"],
    }.items():
        text = text.replace(key, value)
    custom = client.CustomObjectsApi()
    for doc in yaml.safe_load_all(text):
        try:
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                group, version = doc["apiVersion"].split("/")
                plural = doc["kind"].lower() + ("es" if doc["kind"].endswith("s") else "s")
                custom.create_namespaced_custom_object(group, version, doc["metadata"]["namespace"], plural, doc)
            else:
                utils.create_from_dict(api, doc)
        except ApiException as e:
            if e.status != 409:
                raise
        except utils.FailToCreateError as e:
            if not all(isinstance(x, ApiException) and x.status == 409 for x in e.api_exceptions):
                raise
    core = client.CoreV1Api()

    def prometheus_ready() -> bool:
        try:
            pod = core.read_namespaced_pod(f"prometheus-{PROMETHEUS_NAME}-0", MONITORING_NS)
        except ApiException:
            return False
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    _wait(prometheus_ready, timeout=timeout, what="Prometheus (through prometheus-operator) Ready", state=kubeconfig.parent)
    log(
        f"monitoring: prometheus-operator {info['operator_version']}, Prometheus {info['prometheus_version']} "
        f"in namespace {MONITORING_NS}, Ready in {time.monotonic() - t0:.0f} s"
    )


def install_keda(kubeconfig: Path, *, timeout: float = 240) -> str:
    """KEDA, built from its Go module (tools/cluster/build-images.sh): its CRDs and its own manifests
    (config/ of the module: namespace, RBAC, operator, metrics API server, APIService) with this
    cluster's images, then wait until the external metrics API answers. The operator generates and
    rotates its certificates (--enable-cert-rotation, as upstream deploys it) and injects the CA into
    the APIService; KEDA's admission webhooks are not deployed (--enable-webhook-patching=false).
    Returns KEDA's version."""
    info_file = IMAGES / "keda.json"
    if not info_file.exists():
        raise SystemExit(f"{info_file} missing: run make images")
    info = json.loads(info_file.read_text())
    config.load_kube_config(config_file=str(kubeconfig))
    api = client.ApiClient()
    ext = client.ApiextensionsV1Api()
    t0 = time.monotonic()
    names = set()
    for f in sorted((IMAGES / "keda-crds").glob("*.yaml")):
        crd = yaml.load(f.read_text(), Loader=_CRDLoader)
        names.add(crd["metadata"]["name"])
        crd["metadata"].pop("annotations", None)  # kubectl's last-applied copy would exceed the annotation limit
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as e:
            if e.status != 409:
                raise

    def established() -> bool:
        ok = {
            c.metadata.name
            for c in ext.list_custom_resource_definition().items
            if any(x.type == "Established" and x.status == "True" for x in c.status.conditions or [])
        }
        return names <= ok

    _wait(established, timeout=60, what="the KEDA CRDs Established", state=kubeconfig.parent)
    for f in sorted((IMAGES / "keda-manifests").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc:
                continue
            _keda_patch(doc, info)
            try:
                utils.create_from_dict(api, doc)
            except utils.FailToCreateError as e:
                if not all(isinstance(x, ApiException) and x.status == 409 for x in e.api_exceptions):
                    raise

    registration = client.ApiregistrationV1Api()

    def serving() -> bool:
        try:
            svc = registration.read_api_service("v1beta1.external.metrics.k8s.io")
        except ApiException:
            return False
        return any(c.type == "Available" and c.status == "True" for c in (svc.status.conditions if svc.status else None) or [])

    _wait(
        serving,
        timeout=timeout,
        what="KEDA's external metrics API (APIService v1beta1.external.metrics.k8s.io)",
        state=kubeconfig.parent,
    )
    log(f"KEDA {info['version']} in namespace {KEDA_NS}: external metrics API serving in {time.monotonic() - t0:.0f} s")
    return str(info["version"])


def uninstall_keda(kubeconfig: Path) -> None:
    """Remove what install_keda added, the APIService first: an aggregated API whose server is gone
    makes every client's discovery fail ("unable to retrieve the complete list of server APIs")."""
    config.load_kube_config(config_file=str(kubeconfig))
    rbac = client.RbacAuthorizationV1Api()
    steps = [
        lambda: client.ApiregistrationV1Api().delete_api_service("v1beta1.external.metrics.k8s.io"),
        lambda: client.CoreV1Api().delete_namespace(KEDA_NS),
    ]
    for f in sorted((IMAGES / "keda-manifests").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc["kind"] == "ClusterRole":
                steps.append(lambda n=doc["metadata"]["name"]: rbac.delete_cluster_role(n))
            elif doc and doc["kind"] == "ClusterRoleBinding":
                steps.append(lambda n=doc["metadata"]["name"]: rbac.delete_cluster_role_binding(n))
            elif doc and doc["kind"] == "RoleBinding" and doc["metadata"].get("namespace") == "kube-system":
                steps.append(lambda n=doc["metadata"]["name"]: rbac.delete_namespaced_role_binding(n, "kube-system"))
    for step in steps:
        try:
            step()
        except ApiException as e:
            if e.status != 404:
                raise


def _keda_patch(doc: dict[str, Any], info: dict[str, str]) -> None:
    """KEDA's upstream manifests, for this cluster: its images (never pulled), the operator's fixed
    cluster IP and the metrics server's address for it (no DNS), no webhook patching."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind == "Service" and name == "keda-operator":
        doc["spec"]["clusterIP"] = KEDA_OPERATOR_IP
    if kind != "Deployment":
        return
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "Never"
    if name == "keda-operator":
        container["image"] = info["operator"]
        container["args"] = [*container.get("args", []), "--enable-webhook-patching=false"]
    elif name == "keda-metrics-apiserver":
        container["image"] = info["adapter"]
        container["args"] = [
            *container.get("args", []),
            f"--metrics-service-address={KEDA_OPERATOR_IP}:9666",
            f"--metrics-service-grpc-authority=keda-operator.{KEDA_NS}.svc.cluster.local",
        ]


def prometheus_url(kubeconfig: Path) -> str:
    """The local Prometheus' HTTP address: its pod's IP (the host reaches pod addresses over the bridge)."""
    config.load_kube_config(config_file=str(kubeconfig))
    pod = client.CoreV1Api().read_namespaced_pod(f"prometheus-{PROMETHEUS_NAME}-0", MONITORING_NS)
    return f"http://{pod.status.pod_ip}:9090"


def create_gpu_node(
    core: Any,
    *,
    name: str,
    labels: dict[str, str],
    resource: str,
    gpus: int,
    devices: dict[str, int] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> None:
    """A kwok node advertising `gpus` of `resource` (and `devices`: other device resources, such as
    a mixed-strategy node's nvidia.com/mig-3g.40gb), tainted as the GPU operators taint GPU nodes
    (and with `taints`: a pool of a test's own, which only its releases tolerate)."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok", **labels},
        },
        "spec": {"taints": [{"key": resource, "value": "present", "effect": "NoSchedule"}, *(taints or [])]},
    }
    try:
        core.create_node(node)
    except ApiException as e:
        if e.status != 409:
            raise
    alloc = {"cpu": "192", "memory": "2Ti", "pods": "110", resource: str(gpus), **{k: str(v) for k, v in (devices or {}).items()}}
    core.patch_node_status(name, {"status": {"allocatable": alloc, "capacity": alloc}})


def _pids(state: Path) -> list[tuple[int, str]]:
    f = state / "pids"
    if not f.exists():
        return []
    return [(int(a), b) for a, b in (line.split(" ", 1) for line in f.read_text().split("\n") if line)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid)


def _status(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().split("\n"):
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        return "zombie"
    return ""


def _stop(pid: int, timeout: float = 15) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def leftovers(state: Path = DEFAULT_STATE) -> list[str]:
    """Processes that belong to the cluster: started by it, or a container shim of its containerd, or
    running inside a container it started (cgroup kubepods)."""
    out = []
    recorded = {pid for pid, _ in _pids(state)}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        pid = int(p.name)
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = (p / "cgroup").read_text()
        except OSError:
            continue
        if not _alive(pid):
            continue
        if pid in recorded or str(SOCK) in cmd or str(state) in cmd or "/kubepods" in cgroup:
            out.append(f"{pid} {cmd[:120]}")
    return out


def _drain_pods(state: Path) -> None:
    """Ask the kubelet to stop every Pod on the real node (it runs CNI DEL and unmounts volumes)."""
    kc = state / "kubeconfig"
    if not kc.exists():
        return
    try:
        config.load_kube_config(config_file=str(kc))
        core = client.CoreV1Api()
        pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}", _request_timeout=5).items
        for p in pods:
            core.delete_namespaced_pod(p.metadata.name, p.metadata.namespace, grace_period_seconds=0, _request_timeout=5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}", _request_timeout=5).items:
                break
            time.sleep(1)
        # The kubelet tears sandboxes down after the API objects are gone: give it a moment.
        ctr = ["ctr", "--address", str(SOCK), "-n", "k8s.io", "tasks", "ls", "-q"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = sh(ctr)
            if r.returncode != 0 or not r.stdout.strip():
                break
            time.sleep(1)
    except Exception as e:  # teardown goes on; what is left is killed below
        print(f"   (draining pods through the API failed: {e}; stopping containers directly)", flush=True)


def owner() -> Path | None:
    """The state directory of the cluster running on this machine, if any."""
    try:
        return Path(OWNER.read_text().strip())
    except OSError:
        return None


def down(state: Path = DEFAULT_STATE, *, quiet: bool = False) -> list[str]:
    running = owner()
    if running is not None and running != state.resolve():
        # Another state directory's cluster runs here (e.g. `make cluster-up` while a test brings up
        # its own, which fails): stop only what this state recorded, touch nothing machine-wide.
        for pid, _ in _pids(state):
            _stop(pid)
        (state / "pids").unlink(missing_ok=True)
        if not quiet:
            log(f"the running cluster belongs to {running}; only {state}'s own processes were stopped")
        return []
    if not quiet:
        log("stopping Pods on the real node")
    pids = _pids(state)
    names = {n: p for p, n in pids}
    # Without a scheduler, the Pods that controllers recreate while the node drains (Deployments,
    # the Prometheus StatefulSet) stay Pending instead of landing on the node again.
    if "kube-scheduler" in names:
        _stop(names["kube-scheduler"])
    if "kubelet" in names and _alive(names["kubelet"]):
        _drain_pods(state)
    order = ["kube-proxy", "kubelet", "kwok", "kube-scheduler", "kube-controller-manager"]
    for name in order:
        if name in names:
            _stop(names[name])
    # Containers the kubelet did not stop: kill their tasks through containerd, then containerd.
    if "containerd" in names and _alive(names["containerd"]):
        ctr = ["ctr", "--address", str(SOCK), "-n", "k8s.io"]
        r = sh([*ctr, "tasks", "ls", "-q"])
        for task in r.stdout.split():
            sh([*ctr, "tasks", "kill", "-s", "SIGKILL", task])
        time.sleep(1)
        # The image store outlives the cluster: leave no container record (or its snapshot) in it.
        _delete_containers()
        _stop(names["containerd"])
    for pid, name in pids:
        if name not in order and name != "containerd":
            _stop(pid)
    # Shims and container processes outlive containerd by design: find and kill what is left.
    for line in leftovers(state):
        pid = int(line.split(" ", 1)[0])
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    ours = (str(state), str(RUN), str(IMAGE_STORE))
    for mnt in sorted(
        (ln.split()[1] for ln in Path("/proc/mounts").read_text().split("\n") if ln and any(d in ln for d in ours)),
        key=len,
        reverse=True,
    ):
        sh(["umount", "-l", mnt])
    sh(["ip", "link", "delete", BRIDGE])
    sh([str(K8S / "kube-proxy"), "--cleanup"])
    _delete_cni_chains()
    _remove_cgroups()
    shutil.rmtree(RUN, ignore_errors=True)
    OWNER.unlink(missing_ok=True)
    (state / "pids").unlink(missing_ok=True)
    left = [line for line in leftovers(state) if int(line.split(" ", 1)[0]) != os.getpid()]
    if not quiet:
        log("cluster down" + (f"; still running: {left}" if left else ": no process left"))
    return left


def _delete_cni_chains() -> None:
    """The bridge plugin's masquerade chains (CNI-<hash>, commented with our network's name), in
    case a sandbox was killed without CNI DEL."""
    r = sh(["iptables-save", "-t", "nat"])
    chains = set()
    for line in r.stdout.split("\n"):
        if 'name: "aim-engine"' in line or "name: aim-engine" in line:
            parts = line.split()
            if "-A" in parts:
                chain = parts[parts.index("-A") + 1]
                if chain.startswith("CNI-"):
                    chains.add(chain)
                elif "-j" in parts and parts[parts.index("-j") + 1].startswith("CNI-"):
                    sh(["iptables", "-t", "nat", "-D", *parts[1:]])
                    chains.add(parts[parts.index("-j") + 1])
    for chain in chains:
        sh(["iptables", "-t", "nat", "-F", chain])
        sh(["iptables", "-t", "nat", "-X", chain])


def _remove_cgroups() -> None:
    """The kubelet's QoS hierarchy (kubepods) in every cgroup v1 controller, deepest first."""
    base = Path("/sys/fs/cgroup")
    for ctl in base.iterdir() if base.exists() else []:
        top = ctl / "kubepods"
        if not top.is_dir():
            continue
        dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True)
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE)
    ap.add_argument("--no-monitoring", action="store_true", help="up without prometheus-operator and Prometheus")
    a = ap.parse_args(argv)
    if a.action == "up":
        c = up(a.state, monitoring=False if a.no_monitoring else None)
        print(f"export KUBECONFIG={c.kubeconfig}\nTear down with: make cluster-down")
        return 0
    if a.action == "down":
        return 1 if down(a.state) else 0
    left = leftovers(a.state)
    print("\n".join(left) or "no cluster process running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
