"""`make publish` (tools/publish.py) against crane's registry on loopback: the image with its OCI
labels, the chart signed and pushed last, and `helm pull --verify` / `helm template --verify` from
`oci://` accepting it with the public key (Helm 3 and 4); a refusing or unreachable registry, a
scheme or a trailing slash: one line, exit 1, nothing pushed. Cost: about 15 s (one 0.4 GiB push)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_chart_provenance import HELMS, KEY, keyrings

from support import ROOT
from support.loopback import free_port

pytestmark = pytest.mark.integration
CRANE = ROOT / ".tools" / "bin" / "crane"


def publish(registry: str, dist: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "publish.py")],
        env={**os.environ, "REGISTRY": registry, "DIST": str(dist), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def crane(*args: str) -> str:
    return subprocess.run([str(CRANE), *args], capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    if not (ROOT / ".tools" / "images" / "aim-engine.tar").is_file():
        pytest.fail("the aim-engine image is missing: run make images")
    host = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([str(CRANE), "registry", "serve", "--address", host], stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=2):
                return True
        except OSError:
            return False

    for _ in range(100):
        if answers():
            break
        proc.poll()
        __import__("time").sleep(0.1)
    try:
        yield host
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_publish_pushes_a_labelled_image_and_a_signed_chart_that_verifies_from_oci(
    registry: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    secret, public = keyrings(tmp_path_factory.mktemp("keys"), KEY)
    out = publish(f"{registry}/aim", tmp_path / "dist", PLAIN_HTTP="1", SIGN_KEY=KEY, KEYRING=str(secret))
    assert out.returncode == 0, out.stderr
    assert "with its provenance" in out.stdout, out.stdout
    labels = json.loads(crane("config", "--insecure", f"{registry}/aim/aim-engine:0.1.0"))["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0" and labels["org.opencontainers.image.revision"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    chart = f"oci://{registry}/aim/charts/aim-engine"
    for h in HELMS:
        (tmp_path / h.name).mkdir()
        pulled = subprocess.run(
            [str(h), "pull", chart, "--version", "0.1.0", "--plain-http", "--verify", "--keyring", str(public),
             "-d", str(tmp_path / h.name)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert pulled.returncode == 0, (h.name, pulled.stderr)
        assert (tmp_path / h.name / "aim-engine-0.1.0.tgz.prov").is_file(), h.name
    _, other = keyrings(tmp_path_factory.mktemp("other"), "someone else <else@aim-engine.invalid>")
    (tmp_path / "x").mkdir()
    refused = subprocess.run(
        [str(HELMS[0]), "pull", chart, "--version", "0.1.0", "--plain-http", "--verify", "--keyring", str(other),
         "-d", str(tmp_path / "x")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode != 0, "a chart signed by another key verified"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://127.0.0.1:1", "without a scheme"),
        ("127.0.0.1:5000/aim/", "drop the trailing slash"),
        ("127.0.0.1:1", "cannot be reached"),
    ],
)
def test_bad_registries_are_refused_with_one_line_and_nothing_pushed(value: str, says: str, tmp_path: Path) -> None:
    out = publish(value, tmp_path / "dist", PLAIN_HTTP="1")
    assert out.returncode == 1 and says in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not list((tmp_path / "dist").glob("*.tgz")), "packaged though the registry was refused"
