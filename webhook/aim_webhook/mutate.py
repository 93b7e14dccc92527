"""Mutation: inject a recipe into a workload's pod templates as an RFC 6902 JSON Patch.

Idempotent: patching the result again yields no operation. A value the user set is never
overwritten: the conflict becomes a warning (and validation decides whether it is fatal).
Pure: dicts in, (patch, warnings) out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jsonpatch

from aim_engine.contract import (
    ANYWHERE,
    GPU_MODEL_LABEL,
    PRECISION_LABEL,
    RECIPE_FINGERPRINT_ANNOTATION,
    RECIPE_LABEL,
    SELECTED,
    TP_LABEL,
    NodeAffinity,
    NodeTerm,
)
from aim_engine.domain.hardware import HardwareCatalog
from aim_engine.domain.recipe import Recipe, serving_fingerprint
from aim_engine.domain.vllm_args import to_cli
from aim_engine.rules.pod import (
    PodTemplate,
    Workload,
    command_tokens,
    container_index,
    parse_flags,
    serving_templates,
    shell_forwards_args,
)

# The weight of the selection's packing preference among a pod's preferred node terms: above the
# vendor-label preference (50), and enough that the scheduler's NodeAffinity score (plugin weight 2)
# outweighs its default spreading (NodeResourcesFit's LeastAllocated, weight 1).
PACKING_WEIGHT = 100
DSHM_VOLUME = "aim-dshm"
DSHM_SIZE = "16Gi"
DSHM_CPU_SIZE = "1Gi"
MAX_WARNING = 120

VENDOR_PREFERENCE = {
    "nvidia": ["nvidia.com/gpu.product", "nvidia.com/gpu.present", "feature.node.kubernetes.io/pci-10de.present"],
    "amd": ["amd.com/gpu.product-name", "amd.com/gpu.device-id", "feature.node.kubernetes.io/pci-1002.present"],
}


def escape(token: str) -> str:
    """RFC 6901: '~' -> '~0', '/' -> '~1'."""
    return token.replace("~", "~0").replace("/", "~1")


def quantity(value: Decimal, resource: str) -> str:
    gib = Decimal(2**30)
    if resource == "memory" and value % gib == 0:
        return f"{int(value / gib)}Gi"
    if value == value.to_integral_value():
        return str(int(value))
    return f"{int(value * 1000)}m"


@dataclass
class Mutation:
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def op(self, path: str, value: Any) -> None:
        self.patch.append({"op": "add", "path": path, "value": value})

    def warn(self, text: str) -> None:
        text = text if len(text) <= MAX_WARNING else text[: MAX_WARNING - 1] + "…"
        if text not in self.warnings:
            self.warnings.append(text)


def mutate(workload: Workload, recipe: Recipe, *, catalog: HardwareCatalog, node_affinity: NodeAffinity = ANYWHERE) -> Mutation:
    m = Mutation()
    product = catalog.get(recipe.hardware)
    if product is None:
        m.warn(f"recipe {recipe.recipe_id}: unknown hardware {recipe.hardware}; nothing injected")
        return m
    labels = {
        RECIPE_LABEL: recipe.recipe_id,
        GPU_MODEL_LABEL: product.name,
        TP_LABEL: str(recipe.tp),
        PRECISION_LABEL: recipe.precision,
    }
    for t in workload.templates:
        _labels(m, t, labels)
        if workload.kind == "Pod":
            _fingerprint(m, t, serving_fingerprint(recipe))
        _template(
            m,
            t,
            workload=workload,
            recipe=recipe,
            resource=product.device_resource(recipe.limits, recipe.requests),
            taint=product.physical.resource,
            vendor=product.vendor,
            catalog=catalog,
            preferred=node_affinity.preferred,
        )
        if node_affinity.terms:
            _required_nodes(m, t, node_affinity, product=product.name)
    return m


def _fingerprint(m: Mutation, t: PodTemplate, value: str) -> None:
    """The recipe a Pod was given, as its fingerprint (replaced if the Pod carries another: a Pod
    copied from an older one is given this recipe, not that one)."""
    path = f"{t.meta_path}/annotations"
    current = t.metadata.get("annotations")
    if not isinstance(current, Mapping):
        m.op(path, {RECIPE_FINGERPRINT_ANNOTATION: value})
    elif current.get(RECIPE_FINGERPRINT_ANNOTATION) != value:
        m.op(f"{path}/{escape(RECIPE_FINGERPRINT_ANNOTATION)}", value)  # JSON Patch add replaces a member


def _labels(m: Mutation, t: PodTemplate, wanted: Mapping[str, str]) -> None:
    current = t.metadata.get("labels")
    if t.metadata == {} and t.role != "pod":
        m.op(t.meta_path, {"labels": dict(wanted)})
        return
    if not isinstance(current, Mapping):
        m.op(f"{t.meta_path}/labels", dict(wanted))
        return
    for key, value in wanted.items():
        have = current.get(key)
        if have is None:
            m.op(f"{t.meta_path}/labels/{escape(key)}", value)
        elif key == RECIPE_LABEL and have == SELECTED:
            m.patch.append({"op": "replace", "path": f"{t.meta_path}/labels/{escape(key)}", "value": value})
        elif have != value:
            m.warn(f"label {key}={have} kept; recipe says {value}")


def _template(
    m: Mutation,
    t: PodTemplate,
    *,
    workload: Workload,
    recipe: Recipe,
    resource: str,
    taint: str,
    vendor: str,
    catalog: HardwareCatalog,
    preferred: tuple[NodeTerm, ...] = (),
) -> None:
    """Inject the recipe into one pod template: the device `resource` (a partition's own name
    where the recipe runs on one), a toleration of the GPU operators' `taint`, the vendor's
    preferred node labels and the selection's `preferred` nodes (dense packing), args, env, shm."""
    idx = container_index(t, workload.annotations, catalog.gpu_resources)
    if idx is None:
        m.warn(f"{t.role}: no containers; nothing injected")
        return
    base = f"{t.spec_path}/containers/{idx}"
    container = t.spec["containers"][idx]
    per_pod = recipe.gpus_per_node
    serving = serving_templates(workload)
    cpu = vendor == "cpu"
    # A CPU recipe's engine runs on the pod's cores: no device resource, taint or vendor affinity;
    # its cores and memory are the recipe's requests and limits.
    _resources(m, base, container, recipe=recipe, resource=None if cpu else resource, per_pod=per_pod)
    if t in serving:
        _args(m, base, container, recipe)
    _env(m, base, container, recipe)
    if not cpu:
        _tolerations(m, t, taint)
        _affinity(m, t, vendor, preferred)
    if recipe.gpu_count > 1 or cpu:  # NCCL between GPUs; vLLM's CPU build shares memory between its processes
        _shm(m, t, base, container, size=DSHM_CPU_SIZE if cpu else DSHM_SIZE)


def _resources(
    m: Mutation, base: str, container: Mapping[str, Any], *, recipe: Recipe, resource: str | None, per_pod: int
) -> None:
    res = container.get("resources")
    device = {resource: Decimal(per_pod)} if resource else {}
    wanted = {"limits": {**recipe.limits, **device}, "requests": {**recipe.requests, **device}}
    if not isinstance(res, Mapping) or not res:
        m.op(f"{base}/resources", {kind: {k: quantity(v, k) for k, v in vals.items()} for kind, vals in wanted.items()})
        return
    for kind, vals in wanted.items():
        have = res.get(kind)
        if not isinstance(have, Mapping):
            m.op(f"{base}/resources/{kind}", {k: quantity(v, k) for k, v in vals.items()})
            continue
        for key, value in vals.items():
            if key not in have:
                m.op(f"{base}/resources/{kind}/{escape(key)}", quantity(value, key))
            elif str(have[key]) != quantity(value, key) and key != resource:
                m.warn(f"{kind}.{key}={have[key]} kept; recipe {recipe.recipe_id} sets {quantity(value, key)}")


def _args(m: Mutation, base: str, container: Mapping[str, Any], recipe: Recipe) -> None:
    tokens, is_shell = command_tokens(container)
    present = parse_flags(tokens)
    missing = {k: v for k, v in recipe.args.items() if k not in present}
    conflicts = [
        k
        for k, v in recipe.args.items()
        if k in present and str(present[k]).lower() != str(v).lower() and not (v is True and present[k] is True)
    ]
    for k in conflicts:
        m.warn(f"--{k.replace('_', '-')} {present[k]} kept; recipe {recipe.recipe_id} sets {recipe.args[k]}")
    if not missing:
        return
    if is_shell and not shell_forwards_args(container):
        m.warn(f"command is a shell script: recipe args not injected ({len(missing)} missing)")
        return
    flags = to_cli(missing)
    args = container.get("args")
    if args is None:
        m.op(f"{base}/args", flags)
    else:
        for flag in flags:
            m.op(f"{base}/args/-", flag)


def _env(m: Mutation, base: str, container: Mapping[str, Any], recipe: Recipe) -> None:
    env = container.get("env")
    names = {e.get("name"): e for e in env if isinstance(e, Mapping)} if isinstance(env, list) else {}
    missing = [{"name": k, "value": v} for k, v in sorted(recipe.env.items()) if k not in names]
    for k, v in sorted(recipe.env.items()):
        have = names.get(k)
        if have is not None and "value" in have and have.get("value") != v:
            m.warn(f"env {k}={have.get('value')} kept; recipe {recipe.recipe_id} sets {v}")
    if not missing:
        return
    if not isinstance(env, list):
        m.op(f"{base}/env", missing)
    else:
        for item in missing:
            m.op(f"{base}/env/-", item)


def _tolerations(m: Mutation, t: PodTemplate, resource: str) -> None:
    wanted = {"key": resource, "operator": "Exists", "effect": "NoSchedule"}
    tol = t.spec.get("tolerations")
    if not isinstance(tol, list):
        m.op(f"{t.spec_path}/tolerations", [wanted])
    elif not any(isinstance(x, Mapping) and x.get("key") == resource for x in tol):
        m.op(f"{t.spec_path}/tolerations/-", wanted)


def _affinity(m: Mutation, t: PodTemplate, vendor: str, preferred: tuple[NodeTerm, ...] = ()) -> None:
    """Prefer nodes that carry the vendor's product labels. Preferred, not required: the GPU
    resource request already limits the pod to nodes advertising the vendor's GPUs, and a required
    term on labels a cluster does not set would leave the pod unschedulable. The selection's
    packing preference (nodes already in use that the recipe still fits) weighs most: the
    scheduler's default scoring spreads pods onto empty nodes, which a dense placement avoids."""
    terms = [{"weight": PACKING_WEIGHT, "preference": term.as_dict()} for term in preferred]
    terms += [
        {"weight": 50, "preference": {"matchExpressions": [{"key": key, "operator": "Exists"}]}}
        for key in VENDOR_PREFERENCE[vendor]
    ]
    affinity = t.spec.get("affinity")
    if not isinstance(affinity, Mapping):
        m.op(f"{t.spec_path}/affinity", {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}})
        return
    node = affinity.get("nodeAffinity")
    if not isinstance(node, Mapping):
        m.op(f"{t.spec_path}/affinity/nodeAffinity", {"preferredDuringSchedulingIgnoredDuringExecution": terms})
        return
    have = node.get("preferredDuringSchedulingIgnoredDuringExecution")
    if have is None:
        m.op(f"{t.spec_path}/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution", terms)
    elif isinstance(have, list):
        for term in terms[: len(preferred)]:
            if term not in have:
                m.op(f"{t.spec_path}/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/-", term)


def _required_nodes(m: Mutation, t: PodTemplate, affinity: NodeAffinity, *, product: str) -> None:
    """Keep the pod on the selected product's nodes: the GPU resource alone does not (an H100 recipe
    would land on an A100 node that also advertises nvidia.com/gpu — found end to end). The terms
    come from the selection (the labels that identified those nodes). A required node affinity the
    user set is kept: it is theirs, and the validating webhook checks their nodeSelector."""
    existing = t.spec.get("affinity")
    node = existing.get("nodeAffinity") if isinstance(existing, Mapping) else None
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution") if isinstance(node, Mapping) else None
    wanted = {"nodeSelectorTerms": affinity.as_terms()}
    if required is not None:
        if required != wanted:
            m.warn(f"required node affinity kept; the selection pins {product} nodes")
        return
    path = f"{t.spec_path}/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution"
    if any(op["path"] in (f"{t.spec_path}/affinity", f"{t.spec_path}/affinity/nodeAffinity") for op in m.patch):
        m.op(path, wanted)  # _affinity, earlier in this patch, created the parents (GPU recipes)
    elif not isinstance(existing, Mapping):
        m.op(f"{t.spec_path}/affinity", {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": wanted}})
    elif not isinstance(node, Mapping):
        m.op(f"{t.spec_path}/affinity/nodeAffinity", {"requiredDuringSchedulingIgnoredDuringExecution": wanted})
    else:
        m.op(path, wanted)


def _shm(m: Mutation, t: PodTemplate, base: str, container: Mapping[str, Any], *, size: str = DSHM_SIZE) -> None:
    """Multi-GPU vLLM exchanges tensors through shared memory: give it a memory-backed /dev/shm."""
    mounts = container.get("volumeMounts")
    if isinstance(mounts, list) and any(isinstance(x, Mapping) and x.get("mountPath") == "/dev/shm" for x in mounts):
        return
    volumes = t.spec.get("volumes")
    volume = {"name": DSHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}
    if not isinstance(volumes, list):
        m.op(f"{t.spec_path}/volumes", [volume])
    elif not any(isinstance(v, Mapping) and v.get("name") == DSHM_VOLUME for v in volumes):
        m.op(f"{t.spec_path}/volumes/-", volume)
    mount = {"name": DSHM_VOLUME, "mountPath": "/dev/shm"}
    if not isinstance(mounts, list):
        m.op(f"{base}/volumeMounts", [mount])
    else:
        m.op(f"{base}/volumeMounts/-", mount)


def apply(doc: Any, patch: list[dict[str, Any]]) -> Any:
    """A copy of the document with the patch applied, by a JSON Patch (RFC 6902) library: what
    the API server will do with the patch this module returns."""
    return jsonpatch.apply_patch(doc, patch, in_place=False)
