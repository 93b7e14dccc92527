"""Fixtures for every tier, and the tiers themselves. Shared helpers live in tests/support (import
`from support import ...`).

Tiers (markers, given here by where a test lives unless it carries one):
- pure (no marker): the core and the webhook's rules in-process; rootless, no built tools (`make unit`);
- integration: built tools or loopback servers (Helm, promtool/Prometheus, a control plane on
  loopback, gunicorn over TLS, the vLLM venv) (`make integration`);
- e2e: root and the local cluster (`make e2e`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from aim_engine.adapters.catalog import Bundle, load_bundle
from support import ROOT

TESTS = Path(__file__).parent
INTEGRATION = (
    "edge/",
    "monitoring/",
    "apiserver/",
    "integration/",
    "webhook/test_server.py",
    "webhook/test_http.py",
    "webhook/test_availability.py",
    "unit/test_crd_validation.py",
)
E2E = ("e2e/",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        where = Path(str(item.path)).resolve().relative_to(TESTS).as_posix()
        if item.get_closest_marker("integration") or item.get_closest_marker("e2e"):
            continue
        if where.startswith(E2E):
            item.add_marker(pytest.mark.e2e)
        elif where.startswith(INTEGRATION):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle(ROOT / "recipes")
