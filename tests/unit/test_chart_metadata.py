"""chart/Chart.yaml's Artifact Hub annotations: the images it lists are those a default install
runs (values.yaml's aim-engine image and every vendor's vLLM image), so the listing a user reads
before installing is not stale. Cost: milliseconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _ref(image: dict[str, Any]) -> str:
    return f"{image['repository']}@{image['digest']}" if image.get("digest") else f"{image['repository']}:{image['tag']}"


def test_the_artifact_hub_images_are_the_default_installs() -> None:
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text())
    listed = {i["image"] for i in yaml.safe_load(chart["annotations"]["artifacthub.io/images"])}
    defaults = {_ref(values["image"]["aim_engine"])} | {_ref(i) for i in values["image"]["vllm"]["vendor_images"].values()}
    assert listed == defaults, f"Chart.yaml lists {sorted(listed)}; values.yaml runs {sorted(defaults)}"


def test_the_artifact_hub_license_is_the_projects() -> None:
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'license = {{ text = "{chart["annotations"]["artifacthub.io/license"]}" }}' in pyproject
