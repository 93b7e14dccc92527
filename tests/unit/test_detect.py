"""GPU detection from every label source real clusters use."""

from __future__ import annotations

import pytest

from aim_engine.cluster.detect import detect_node
from k8s_objects import AMD, GFD


def detect(bundle, labels, **res):
    return detect_node(bundle.hardware, labels, res or {"nvidia.com/gpu": 8})


@pytest.mark.parametrize("product", sorted(GFD))
def test_gpu_feature_discovery_labels(bundle, product):
    d = detect(bundle, GFD[product])
    assert d.product is not None and d.product.name == product
    assert d.source == "nvidia.com/gpu.product"
    assert not d.notes


@pytest.mark.parametrize("product", sorted(AMD))
def test_amd_node_labeller_labels(bundle, product):
    d = detect(bundle, AMD[product], **{"amd.com/gpu": 8})
    assert d.product is not None and d.product.name == product
    assert d.source == "amd.com/gpu.product-name"


def test_amd_device_id_alone_is_enough(bundle):
    d = detect(bundle, {"amd.com/gpu.device-id": "74a1"}, **{"amd.com/gpu": 8})
    assert d.product.name == "MI300X"


def test_old_beta_amd_labels_with_id_in_key(bundle):
    labels = {"beta.amd.com/gpu.device-id.74a5": "8", "beta.amd.com/gpu.family.AI": "8", "beta.amd.com/gpu.vram.256G": "8"}
    d = detect(bundle, labels, **{"amd.com/gpu": 8})
    assert d.product.name == "MI325X"
    assert d.source == "beta.amd.com/gpu.device-id.74a5"


def test_beta_amd_product_name_value(bundle):
    d = detect(bundle, {"beta.amd.com/gpu.product-name": "AMD_Instinct_MI250X_MI250"}, **{"amd.com/gpu": 8})
    assert d.product.name == "MI250X"


@pytest.mark.parametrize(
    ("key", "product"),
    [
        ("feature.node.kubernetes.io/pci-10de_2330.present", "H100"),
        ("feature.node.kubernetes.io/pci-0302_10de_2335.present", "H200"),
        ("feature.node.kubernetes.io/pci-1002_74a1.present", "MI300X"),
        ("feature.node.kubernetes.io/pci-0300_1002_75a3.present", "MI355X"),
    ],
)
def test_node_feature_discovery_pci_labels(bundle, key, product):
    resource = "amd.com/gpu" if "1002" in key else "nvidia.com/gpu"
    d = detect(bundle, {key: "true"}, **{resource: 8})
    assert d.product.name == product


def test_nfd_vendor_only_label_names_no_product_and_says_what_to_do(bundle):
    d = detect(bundle, {"feature.node.kubernetes.io/pci-0302_10de.present": "true"})
    assert d.product is None and d.vendor == "nvidia"
    assert any("GPU Feature Discovery" in n for n in d.notes)


@pytest.mark.parametrize(
    ("labels", "product"),
    [
        ({"node.kubernetes.io/instance-type": "p5.48xlarge"}, "H100"),
        ({"node.kubernetes.io/instance-type": "p4de.24xlarge"}, "A100"),
        ({"node.kubernetes.io/instance-type": "p4d.24xlarge"}, "A100-40GB"),
        ({"beta.kubernetes.io/instance-type": "Standard_ND96isr_MI300X_v5"}, "MI300X"),
        ({"node.kubernetes.io/instance-type": "g6e.12xlarge"}, "L40S"),
        ({"cloud.google.com/gke-accelerator": "nvidia-h200-141gb"}, "H200"),
    ],
)
def test_cloud_instance_types_and_gke_accelerators(bundle, labels, product):
    resource = "amd.com/gpu" if product.startswith("MI") else "nvidia.com/gpu"
    assert detect(bundle, labels, **{resource: 8}).product.name == product


def test_a100_40gb_is_not_mistaken_for_80gb(bundle):
    d = detect(bundle, {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"})
    assert d.product.name == "A100-40GB"


def test_specific_source_wins_and_conflict_is_reported(bundle):
    labels = {**GFD["H100"], "node.kubernetes.io/instance-type": "p4de.24xlarge"}
    d = detect(bundle, labels)
    assert d.product.name == "H100"
    assert any("says A100" in n for n in d.notes)


def test_a_single_strategy_mig_label_names_the_physical_gpu_and_the_profile(bundle):
    d = detect(bundle, {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"})
    assert d.product.name == "A100" and d.mig_profile == "1g.10gb"


def test_memory_label_that_contradicts_the_product_is_reported(bundle):
    d = detect(bundle, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "40960"})
    assert any("does not match" in n for n in d.notes)


def test_labels_of_one_vendor_on_a_node_advertising_the_other_are_reported(bundle):
    d = detect(bundle, GFD["H100"], **{"amd.com/gpu": 8})
    assert any("advertises only amd.com/gpu" in n for n in d.notes)


def test_unknown_product_label_is_reported_not_guessed(bundle):
    d = detect(bundle, {"nvidia.com/gpu.product": "Tesla-T4"})
    assert d.product is None
    assert any("Tesla-T4" in n for n in d.notes)
