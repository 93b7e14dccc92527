"""Fixtures for every tier. Shared helpers live in tests/support (import `from support import ...`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from aim_engine.catalog import Bundle, load_bundle
from support import ROOT


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle(ROOT / "recipes")
