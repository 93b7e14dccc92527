from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from aim_engine.adapters.catalog import load_bundle
from aim_webhook.app import Settings, create_app
from aim_webhook.recipes import RecipeResolver

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="session")
def wbundle():
    return load_bundle(ROOT / "recipes")


@pytest.fixture
def configmaps():
    return {}


@pytest.fixture
def app(wbundle, configmaps):
    resolver = RecipeResolver(wbundle, read_configmap=lambda ns, name: configmaps.get((ns, name)), ttl_seconds=0)
    return create_app(
        bundle=wbundle, resolver=resolver, settings=Settings(exempt_namespaces=frozenset({"kube-system", "aim-system"}))
    )


@pytest.fixture
def client(app):
    return app.test_client()
