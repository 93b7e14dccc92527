#!/usr/bin/env python3
"""A real single-node Kubernetes cluster from real components, plus simulated GPU nodes.

    python tools/realcluster.py up [--state DIR]     (make cluster-up)
    python tools/realcluster.py down [--state DIR]   (make cluster-down)

- control plane: etcd, kube-apiserver (PodSecurity, Mutating/ValidatingAdmissionWebhook, Node
  authorizer), kube-controller-manager, kube-scheduler (tools/localcluster.py), on this machine's
  address so that Pods reach the API server through the `kubernetes` Service;
- one real node, `aim-engine-node`: containerd (Debian 1.6, CRI plugin, runc, overlayfs) with the
  images built from the repository's Dockerfiles (tools/cluster/build-images.sh) imported, a bridge
  CNI network (containernetworking-plugins), kubelet and kube-proxy (iptables) built from the same
  k8s.io/kubernetes module as the control plane. It runs the webhook, the selector hook Job and the
  certificate Job as real containers;
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

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
K8S = ROOT / ".tools" / "k8s"
IMAGES = ROOT / ".tools" / "images"
DEFAULT_STATE = ROOT / ".tools" / "cluster"

AMD_MI300X = {
    "amd.com/gpu.product-name": "AMD_Instinct_MI300X_OAM",
    "amd.com/gpu.device-id": "74a1",
    "amd.com/gpu.vram": "192G",
    "amd.com/gpu.family": "AI",
}
GFD_H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.count": "8"}
GFD_A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920", "nvidia.com/gpu.count": "8"}
# (name, labels, extended resource, GPUs)
GPU_NODES: list[tuple[str, dict[str, str], str, int]] = [
    ("mi300x-0", AMD_MI300X, "amd.com/gpu", 8),
    ("mi300x-1", AMD_MI300X, "amd.com/gpu", 8),
    ("h100-0", GFD_H100, "nvidia.com/gpu", 8),
    ("h100-1", GFD_H100, "nvidia.com/gpu", 8),
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
root = "{state / "containerd"}"
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
                "shutdownGracePeriod": "0s",
            },
            indent=1,
        )
    )
    return cfg


def up(state: Path = DEFAULT_STATE) -> Cluster:
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
    for tar in ("aim-engine.tar", "pause.tar"):
        if not (IMAGES / tar).exists():
            raise SystemExit(f"{IMAGES / tar} missing: run make images")
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
        log("containerd (CRI, runc, bridge CNI) and the locally built images")
        cfg = _containerd_config(state)
        _spawn(state, "containerd", ["containerd", "--config", str(cfg)])
        ctr = ["ctr", "--address", str(SOCK), "-n", "k8s.io"]
        _wait(
            lambda: sh([*ctr, "version"]).returncode == 0,
            timeout=60,
            what="containerd",
            state=state,
            logname="containerd",
        )
        for tar in ("pause.tar", "aim-engine.tar"):
            subprocess.run([*ctr, "images", "import", "--no-unpack", str(IMAGES / tar)], check=True, capture_output=True)

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
LOCAL_IMAGE_REPOSITORY = "aim-engine.local/aim-engine"
LOCAL_IMAGE_TAG = "dev"


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
                "hostPath": {"path": f"/var/tmp/aim-engine-model-cache-{i}", "type": "DirectoryOrCreate"},
            },
        }
        try:
            core.create_persistent_volume(pv)
        except ApiException as e:
            if e.status != 409:
                raise


def create_gpu_node(core: Any, *, name: str, labels: dict[str, str], resource: str, gpus: int) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok", **labels},
        },
        "spec": {"taints": [{"key": resource, "value": "present", "effect": "NoSchedule"}]},
    }
    try:
        core.create_node(node)
    except ApiException as e:
        if e.status != 409:
            raise
    alloc = {"cpu": "192", "memory": "2Ti", "pods": "110", resource: str(gpus)}
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
    for mnt in sorted(
        (ln.split()[1] for ln in Path("/proc/mounts").read_text().split("\n") if ln and (str(state) in ln or str(RUN) in ln)),
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
    a = ap.parse_args(argv)
    if a.action == "up":
        c = up(a.state)
        print(f"export KUBECONFIG={c.kubeconfig}\nTear down with: make cluster-down")
        return 0
    if a.action == "down":
        return 1 if down(a.state) else 0
    left = leftovers(a.state)
    print("\n".join(left) or "no cluster process running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
