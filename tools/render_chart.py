#!/usr/bin/env python3
"""Render every scenario in chart/ci/ with Helm 3 and Helm 4 and validate the output strictly:
Kubernetes kinds with kubernetes-validate (--strict, bundled schemas), prometheus-operator kinds
and cert-manager kinds with their CRD schemas (tools/validate_crds.mjs). Also checks that the two multi-model releases of
seed 004 (aim-engine-qwen, aim-engine-llama) render no two objects with the same name.

    .tools/venv/bin/python tools/render_chart.py      (make chart-render)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
HELMS = {"helm3": TOOLS / "bin" / "helm", "helm4": TOOLS / "bin" / "helm4"}
KUBE_SCORE = TOOLS / "bin" / "kube-score"
# Chart-wide kube-score opinions not taken (docs/chart.md, "Linting"); per-object exceptions are
# kube-score/ignore annotations in the templates.
KUBE_SCORE_IGNORED = [
    "container-image-pull-policy",  # IfNotPresent + image digests pin what runs; Always adds a registry round trip
    "pod-networkpolicy",  # hook Jobs run before the release's NetworkPolicies exist (pre-install)
    "networkpolicy-targets-pod",  # the hook-Job policy targets pods that exist only during hooks
]
K8S_VERSION = "1.34.0"
API_VERSIONS = [
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "leaderworkerset.x-k8s.io/v1/LeaderWorkerSet",
    "keda.sh/v1alpha1/ScaledObject",
]
# CRDs validated here from their own structural schema (fetched by make setup from the project's Go
# module), strictly: unknown fields are errors, as the API server would prune them.
CRD_FILES = {"LeaderWorkerSet": TOOLS / "crds" / "leaderworkerset.x-k8s.io_leaderworkersets.yaml"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer", "ScaledObject"}
# kubernetes-validate bundles no schema for these (CRDs the chart may reference).
SKIP_KINDS: set[str] = set()


def release_for(values: Path) -> str:
    name = values.name.removesuffix("-values.yaml")
    if name.endswith("multi-model-qwen"):
        return "aim-engine-qwen"
    if name.endswith("multi-model-llama"):
        return "aim-engine-llama"
    return "aim-engine"


def render(helm: Path, release: str, values: Path) -> list[dict]:
    cmd = [str(helm), "template", release, str(ROOT / "chart"), "-n", "aim-engine", "-f", str(values)]
    for api in API_VERSIONS:
        cmd += ["--api-versions", api]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{helm.name} template {values.name}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _strict(schema: object) -> object:
    """An OpenAPI v3 structural schema as JSON Schema that refuses unknown fields."""
    if isinstance(schema, list):
        return [_strict(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_errors(doc: dict, where: str) -> list[str]:
    path = CRD_FILES[doc["kind"]]
    if not path.exists():
        return [f"{path} missing: run make setup"]
    crd = yaml.safe_load(path.read_text())
    version = doc["apiVersion"].split("/")[-1]
    schemas = [v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version]
    if not schemas:
        return [f"{where}: {doc['kind']}: no version {version} in {path.name}"]
    validator = jsonschema.Draft7Validator(_strict(schemas[0]))
    return [
        f"{where}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {'.'.join(map(str, e.path))}"
        for e in validator.iter_errors(doc)
    ]


def validate(docs: list[dict], where: str) -> list[str]:
    errors = []
    crds = []
    for d in docs:
        kind = d.get("kind")
        if kind in CRD_FILES:
            errors += crd_errors(d, where)
            continue
        if kind in CRD_KINDS:
            crds.append(d)
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: {kind}/{d['metadata']['name']}: {e.message} at {'.'.join(map(str, e.path))}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{where}: {kind}: no schema ({e})")
    if crds:
        # ES modules resolve packages from the script's own folder: run a copy inside .tools/node.
        script = TOOLS / "node" / "validate_crds.mjs"
        shutil.copyfile(ROOT / "tools" / "validate_crds.mjs", script)
        node = subprocess.run(["node", str(script)], input=json.dumps(crds), text=True, capture_output=True, check=False)
        if node.returncode != 0:
            errors += [f"{where}: {line}" for line in (node.stdout + node.stderr).splitlines() if line.strip()]
    return errors


def kube_score(scenarios: list[Path]) -> list[str]:
    """kube-score on every scenario's Helm 3 render; CRITICAL findings fail (WARNINGs are printed)."""
    if not KUBE_SCORE.exists():
        return [f"{KUBE_SCORE} missing: run make setup"]
    out: list[str] = []
    for values in scenarios:
        cmd = [str(HELMS["helm3"]), "template", release_for(values), str(ROOT / "chart"), "-n", "aim-engine", "-f", str(values)]
        for api in API_VERSIONS:
            cmd += ["--api-versions", api]
        rendered = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        args = [str(KUBE_SCORE), "score", "-", "--output-format", "ci"]
        for test in KUBE_SCORE_IGNORED:
            args += ["--ignore-test", test]
        res = subprocess.run(args, input=rendered, capture_output=True, text=True, check=False)
        out += [f"kube-score {values.name}: {line}" for line in res.stdout.splitlines() if line.startswith("[CRITICAL]")]
    return out


def pod_specs(doc: dict) -> list[dict]:
    """The pod specs an object runs (a Pod's own, a workload's template, a CronJob's, a LWS's)."""
    spec = doc.get("spec") or {}
    if doc["kind"] == "Pod":
        return [spec]
    if doc["kind"] == "LeaderWorkerSet":
        lws = spec.get("leaderWorkerTemplate", {})
        return [t["spec"] for t in (lws.get("leaderTemplate"), lws.get("workerTemplate")) if t]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    template = spec.get("template")
    return [template["spec"]] if isinstance(template, dict) and "spec" in template else []


def convention_errors(docs: list[dict], values: Path, where: str) -> list[str]:
    """With common_labels, global.imageRegistry, image_pull_secrets and bring-your-own accounts
    (service_account.create false) set: every object, pod and image follows them."""
    v = yaml.safe_load(values.read_text()) or {}
    errors: list[str] = []
    labels = v.get("common_labels") or {}
    mirror = ((v.get("global") or {}).get("imageRegistry") or "").rstrip("/")
    secrets = v.get("image_pull_secrets") or []
    sa = v.get("service_account") or {}
    for d in docs:
        name = f"{where}: {d['kind']}/{d['metadata']['name']}"
        have = d["metadata"].get("labels") or {}
        errors += [f"{name}: label {k}={val!r} missing" for k, val in labels.items() if have.get(k) != str(val)]
        if sa.get("create") is False and d["kind"] == "ServiceAccount":
            errors.append(f"{name}: created with service_account.create false")
        for pod in pod_specs(d):
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                if mirror and not c["image"].startswith(mirror + "/"):
                    errors.append(f"{name}: container {c['name']} image {c['image']} not from the mirror {mirror}")
            if secrets and pod.get("imagePullSecrets") != secrets:
                errors.append(f"{name}: imagePullSecrets {pod.get('imagePullSecrets')} (want {secrets})")
            if sa.get("create") is False:
                want = set((sa.get("names") or {}).values()) | {sa.get("name")}
                if pod.get("serviceAccountName") not in want:
                    errors.append(f"{name}: serviceAccountName {pod.get('serviceAccountName')!r} not one brought")
        if sa.get("create") is False and d["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            want = set((sa.get("names") or {}).values()) | {sa.get("name")}
            errors += [f"{name}: binds {s['name']!r}, not one brought" for s in d.get("subjects", []) if s["name"] not in want]
    return errors


def prewarm_errors(helm: Path) -> list[str]:
    """The model pre-warm Job is named after its pod template: a change to the template (here a
    pull secret) is a new Job, never a patch of an immutable one (an upgrade would fail)."""
    base = ROOT / "chart" / "ci" / "autoscaling-values.yaml"
    apis = [a for api in API_VERSIONS for a in ("--api-versions", api)]
    cmd = [str(helm), "template", "aim-engine", str(ROOT / "chart"), "-n", "aim-engine", "-f", str(base),
           "-s", "templates/workload/model-prewarm-job.yaml", *apis]  # fmt: skip
    names = []
    for extra in ([], ["--set", "image_pull_secrets[0].name=regcred"], ["--set", "aim_engine.model_id=Qwen/Qwen3-32B"]):
        out = subprocess.run(cmd + extra, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            return [f"{helm.name} prewarm Job render: {out.stderr.strip()}"]
        names.append(yaml.safe_load(out.stdout)["metadata"]["name"])
    return [] if len(set(names)) == 3 else [f"{helm.name}: the prewarm Job keeps its name across template changes: {names}"]


def main() -> int:
    errors: list[str] = []
    scenarios = sorted((ROOT / "chart" / "ci").glob("*-values.yaml"))
    counts = {}
    for label, helm in HELMS.items():
        if not helm.exists():
            errors.append(f"{helm} missing: run make setup")
            continue
        for values in scenarios:
            try:
                docs = render(helm, release_for(values), values)
            except RuntimeError as e:
                errors.append(str(e))
                continue
            counts[(label, values.name)] = len(docs)
            errors += validate(docs, f"{label} {values.name}")
            errors += convention_errors(docs, values, f"{label} {values.name}")
        errors += prewarm_errors(helm)
        # Two releases side by side: no object may collide (cluster-scoped ones included).
        seen: dict[tuple[str, str, str], str] = {}
        for values in (ROOT / "chart/ci/seed-multi-model-qwen-values.yaml", ROOT / "chart/ci/seed-multi-model-llama-values.yaml"):
            for d in render(helm, release_for(values), values):
                key = (d["kind"], d["metadata"].get("namespace", "aim-engine"), d["metadata"]["name"])
                if key in seen:
                    errors.append(f"{label}: {key} rendered by both {seen[key]} and {release_for(values)}")
                seen[key] = release_for(values)
    errors += kube_score(scenarios)
    for (label, name), n in sorted(counts.items()):
        print(f"{label:6} {name:55} {n:3} objects")
    for e in errors:
        print(f"ERROR {e}")
    print(
        f"{len(counts)} renders validated against Kubernetes {K8S_VERSION} (strict) and the prometheus-operator, cert-manager "
        f"and KEDA CRD schemas: {len(errors)} error(s)"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
