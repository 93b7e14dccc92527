"""Accelerator detection from one node's labels and resources, from every source real clusters use.

Sources, most specific first (the first that names a product wins; later ones that disagree are
reported as conflicts, never silently ignored):

1. NVIDIA GPU Feature Discovery:  nvidia.com/gpu.product, nvidia.com/gpu.memory, nvidia.com/gpu.count
2. AMD GPU node labeller:         amd.com/gpu.product-name, amd.com/gpu.device-id, amd.com/gpu.vram
   and the older forms           beta.amd.com/gpu.product-name, beta.amd.com/gpu.device-id.<id>=<n>
3. Node Feature Discovery PCI:    feature.node.kubernetes.io/pci-[<class>_]<vendor>_<device>.present
4. GKE accelerator label:         cloud.google.com/gke-accelerator
5. Cloud instance type:           node.kubernetes.io/instance-type (and the beta form)

The GPU resource (nvidia.com/gpu, amd.com/gpu) in the node's allocatable says the vendor and count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aim_engine.domain.hardware import GpuProduct, HardwareCatalog

_NFD_PCI = re.compile(r"^feature\.node\.kubernetes\.io/pci-([0-9a-f_]+)\.present$")
_BETA_DEVICE = re.compile(r"^beta\.amd\.com/gpu\.device-id\.([0-9a-fA-F]{4})$")
_BETA_PRODUCT = re.compile(r"^beta\.amd\.com/gpu\.product-name\.(.+)$")
# GPU Feature Discovery under the "single" MIG strategy: the product label names the profile.
# AMD GPU node labeller (-compute-memory-partition): the GPUs' compute and memory partition modes
# as "<compute>_<memory>" in lower case (spx_nps1, cpx_nps4), on nodes whose GPUs all share them.
AMD_PARTITION_LABEL = "amd.com/gpu.compute-memory-partition"
# AMD device plugin, resource_naming_strategy "mixed": amd.com/<compute>_<memory> (amd.com/cpx_nps4).
AMD_MIXED_RESOURCE = re.compile(r"^amd\.com/(?P<compute>[a-z]+px)_(?P<memory>nps[0-9])$")
# NVIDIA device plugin, "mixed" MIG strategy: one resource per MIG profile.
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
_MIG = re.compile(r"^(?P<parent>.+?)-MIG-(?P<profile>.+)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Detection:
    product: GpuProduct | None
    vendor: str | None
    source: str  # which label source decided, or "none"
    notes: tuple[str, ...] = ()
    # The MIG profile the product label names (GFD's "single" strategy: every device of the node is
    # one such instance, advertised as nvidia.com/gpu); the product is then the physical GPU.
    mig_profile: str = ""


def _norm(value: str) -> str:
    return re.sub(r"[\s_-]", "", value)


def _by_name(catalog: HardwareCatalog, value: str) -> GpuProduct | None:
    return catalog.by_label_value(value)


def _by_pci(catalog: HardwareCatalog, device: str) -> GpuProduct | None:
    device = device.lower()
    for product in catalog.products:
        if device in product.detection.pci_device_ids:
            return product
    return None


def _by_list(catalog: HardwareCatalog, value: str, attr: str) -> GpuProduct | None:
    for product in catalog.products:
        if value in getattr(product.detection, attr):
            return product
    return None


def detect_node(catalog: HardwareCatalog, labels: Mapping[str, str], gpu_resources: Mapping[str, int]) -> Detection:
    """Which GPU product a node carries. `gpu_resources` maps vendor resource name -> allocatable."""
    found: list[tuple[str, GpuProduct]] = []
    notes: list[str] = []
    mig_profile = ""

    gfd = labels.get("nvidia.com/gpu.product")
    if gfd:
        m = _MIG.match(gfd)
        if m:
            gfd, mig_profile = m.group("parent"), m.group("profile").lower()
        product = _by_name(catalog, gfd)
        if product:
            found.append(("nvidia.com/gpu.product", product))
        else:
            notes.append(f"nvidia.com/gpu.product={gfd} is not a product aim-engine knows")

    for key in ("amd.com/gpu.product-name", "beta.amd.com/gpu.product-name"):
        value = labels.get(key)
        if value:
            product = _by_name(catalog, value)
            if product:
                found.append((key, product))
            else:
                notes.append(f"{key}={value} is not a product aim-engine knows")
    for key in ("amd.com/gpu.device-id", "beta.amd.com/gpu.device-id"):
        value = labels.get(key)
        if value:
            product = _by_pci(catalog, value)
            if product:
                found.append((key, product))
    for key in labels:
        if not key.startswith("beta.amd.com/"):
            continue
        m = _BETA_DEVICE.match(key)
        if m:
            product = _by_pci(catalog, m.group(1))
            if product:
                found.append((key, product))
        m = _BETA_PRODUCT.match(key)
        if m:
            product = _by_name(catalog, m.group(1))
            if product:
                found.append((key, product))

    for key, value in labels.items():
        if not key.startswith("feature.node.kubernetes.io/pci-"):
            continue
        m = _NFD_PCI.match(key)
        if not m or str(value).lower() != "true":
            continue
        groups = m.group(1).split("_")
        for i, group in enumerate(groups[:-1]):
            if group in catalog.vendor_pci_ids:
                product = _by_pci(catalog, groups[i + 1])
                if product:
                    found.append((key, product))

    gke = labels.get("cloud.google.com/gke-accelerator")
    if gke:
        product = _by_list(catalog, gke, "gke_accelerators")
        if product:
            found.append(("cloud.google.com/gke-accelerator", product))

    for key in ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"):
        value = labels.get(key)
        if value:
            product = _by_list(catalog, value, "instance_types")
            if product:
                found.append((key, product))
                break

    vendors_with_gpus = [vendor for vendor, res in catalog.vendor_resources.items() if gpu_resources.get(res, 0) > 0]
    if not found:
        vendor = vendors_with_gpus[0] if vendors_with_gpus else None
        if vendor:
            notes.append(
                f"{catalog.vendor_resources[vendor]} is allocatable but no label names the product; deploy "
                + ("GPU Feature Discovery" if vendor == "nvidia" else "the AMD GPU node labeller")
                + " or label the node (e.g. nvidia.com/gpu.product / amd.com/gpu.product-name)"
            )
        return Detection(product=None, vendor=vendor, source="none", notes=tuple(notes), mig_profile=mig_profile)

    source, product = found[0]
    for other_source, other in found[1:]:
        if other.name != product.name:
            notes.append(f"{other_source} says {other.name} but {source} says {product.name}; using {source}")
    if vendors_with_gpus and product.vendor not in vendors_with_gpus:
        notes.append(
            f"labels say {product.name} ({product.vendor}) but the node advertises only "
            + ", ".join(catalog.vendor_resources[v] for v in vendors_with_gpus)
        )
    mem = labels.get("nvidia.com/gpu.memory") if product.vendor == "nvidia" and not mig_profile else None
    if mem and mem.isdigit() and abs(int(mem) - product.memory_mib) > product.memory_mib // 10:
        notes.append(f"nvidia.com/gpu.memory={mem} MiB does not match {product.name} ({product.memory_mib} MiB)")
    return Detection(product=product, vendor=product.vendor, source=source, notes=tuple(notes), mig_profile=mig_profile)


ARCH_LABEL = "kubernetes.io/arch"
NFD_CPUID = "feature.node.kubernetes.io/cpu-cpuid."


def detect_cpu(catalog: HardwareCatalog, labels: Mapping[str, str]) -> Detection:
    """Which CPU product a node without GPUs serves on: its kubernetes.io/arch, and, where Node
    Feature Discovery labels the node's CPU features, the features the product's vLLM build needs
    (vLLM's x86 CPU build needs AVX-512; AVX2 machines run it far slower). Without NFD labels the
    features are unknown: the node counts, with a note."""
    arch = labels.get(ARCH_LABEL, "")
    has_nfd = any(k.startswith(NFD_CPUID) for k in labels)
    notes: list[str] = []
    for product in catalog.cpu_products:
        if arch != product.detection.cpu_arch:
            continue
        missing = [f for f in product.detection.cpu_features if labels.get(NFD_CPUID + f) != "true"]
        if has_nfd and missing:
            notes.append(f"{product.name} needs CPU features {', '.join(missing)}, which NFD does not list on this node")
            continue
        if not has_nfd and product.detection.cpu_features:
            notes.append(
                f"no Node Feature Discovery CPU labels: {', '.join(product.detection.cpu_features)} assumed for {product.name}"
            )
        return Detection(product=product, vendor=product.vendor, source=ARCH_LABEL, notes=tuple(notes))
    if not arch:
        notes.append(f"no {ARCH_LABEL} label")
    return Detection(product=None, vendor=None, source="none", notes=tuple(notes))
