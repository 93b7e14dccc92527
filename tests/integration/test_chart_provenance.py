"""`make package` signs the chart (Helm's provenance: a .prov with the package's SHA-256, signed with
GnuPG, offline) and `helm verify` / `helm template --verify` (as `helm install --verify`) accept it
with the public key, with Helm 3 and Helm 4; a package changed after signing, or another key, is
refused; SIGN_KEY without a keyring is one line and exit 2. A throwaway RSA key in a temporary
GNUPGHOME. Cost: about 5 s."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from support import ROOT

HELMS = [ROOT / ".tools" / "bin" / "helm", ROOT / ".tools" / "bin" / "helm4"]
KEY = "aim-engine test signing key <signing@aim-engine.invalid>"


def gpg(home: Path, *args: str) -> bytes:
    if not shutil.which("gpg"):
        pytest.fail("gpg is missing: make setup installs Debian's gnupg")
    env = {**os.environ, "GNUPGHOME": str(home)}
    return subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
                          env=env, capture_output=True, check=True).stdout  # fmt: skip


def keyrings(tmp: Path, name: str) -> tuple[Path, Path]:
    home = tmp / f"gnupg-{len(list(tmp.glob('gnupg-*')))}"
    home.mkdir(mode=0o700)
    gpg(home, "--quick-gen-key", name, "rsa2048", "sign", "never")
    secret, public = tmp / f"{home.name}-secring.gpg", tmp / f"{home.name}-pubring.gpg"
    secret.write_bytes(gpg(home, "--export-secret-keys", name))
    public.write_bytes(gpg(home, "--export", name))
    # The key is exported: stop the agent gpg started for this home (it would outlive the test).
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, check=False)
    return secret, public


def make_package(dist: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(
        ["make", "-s", "package", f"DIST={dist}", *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )


def helm(helm_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin), *args], check=False, capture_output=True, text=True)


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return keyrings(tmp_path_factory.mktemp("keys"), KEY)


def test_a_signed_package_verifies_and_a_changed_one_does_not(tmp_path: Path, signing: tuple[Path, Path]) -> None:
    secret, public = signing
    dist = tmp_path / "dist"
    made = make_package(dist, f"SIGN_KEY={KEY}", f"KEYRING={secret}")
    assert made.returncode == 0, made.stderr
    (package,) = dist.glob("aim-engine-*.tgz")
    assert (dist / f"{package.name}.prov").is_file()
    for h in HELMS:
        ok = helm(h, "verify", str(package), "--keyring", str(public))
        assert ok.returncode == 0 and "Chart Hash Verified" in ok.stdout, (h.name, ok.stderr)
        rendered = helm(h, "template", "x", str(package), "--verify", "--keyring", str(public))
        assert rendered.returncode == 0 and "kind: Deployment" in rendered.stdout, (h.name, rendered.stderr)
    # Another key: refused.
    _, other = keyrings(tmp_path, "someone else <else@aim-engine.invalid>")
    for h in HELMS:
        assert helm(h, "verify", str(package), "--keyring", str(other)).returncode != 0, h.name
    # The package changed after signing (one value): refused, the .prov no longer matches.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(package) as t:
        t.extractall(unpacked, filter="data")
    values = unpacked / "aim-engine" / "values.yaml"
    values.write_text(values.read_text().replace('tag: "0.1.0"', 'tag: "evil"', 1))
    with tarfile.open(package, "w:gz") as t:
        t.add(unpacked / "aim-engine", arcname="aim-engine")
    for h in HELMS:
        bad = helm(h, "verify", str(package), "--keyring", str(public))
        assert bad.returncode != 0 and "sha256 sum does not match" in bad.stderr, (h.name, bad.stderr)
        assert helm(h, "template", "x", str(package), "--verify", "--keyring", str(public)).returncode != 0, h.name


def test_an_unsigned_package_is_refused_by_verify(tmp_path: Path, signing: tuple[Path, Path]) -> None:
    dist = tmp_path / "dist"
    assert make_package(dist).returncode == 0
    (package,) = dist.glob("aim-engine-*.tgz")
    assert not list(dist.glob("*.prov"))
    _, public = signing
    assert helm(HELMS[0], "verify", str(package), "--keyring", str(public)).returncode != 0


def test_a_sign_key_without_its_keyring_is_one_line_and_exit_2(tmp_path: Path) -> None:
    made = make_package(tmp_path / "dist", "SIGN_KEY=someone", f"KEYRING={tmp_path / 'missing.gpg'}")
    assert made.returncode != 0
    assert "SIGN_KEY=someone needs KEYRING=<secret keyring>" in made.stderr, made.stderr
