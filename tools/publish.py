"""`make publish REGISTRY=host[:port][/path]`: the bundle into an OCI registry, as users' clusters
take it — our image first, then the chart (`helm push`, with its provenance when signed), last, so a
registry that refuses anything leaves no chart pointing at a missing image.

- The image (`<REGISTRY>/aim-engine:<appVersion>`) is pushed from the tarball `make images` built,
  then given the OCI labels `org.opencontainers.image.{source,revision,version,title,licenses}`
  (crane mutate: the pushed manifest gets them, the tag moves to it).
- The chart is packaged (signed when SIGN_KEY and KEYRING are given, as `make package`) and pushed
  to `oci://<REGISTRY>/charts`; its default image, `image.aim_engine.repository`, is
  `ghcr.io/aim-engine/aim-engine`: `make publish REGISTRY=ghcr.io/aim-engine` produces exactly what
  a default install pulls (elsewhere, install with `--set global.imageRegistry=<host>` or the
  repository set).
- PLAIN_HTTP=1 talks plain HTTP (a local or in-cluster registry without TLS).

Bad input: a registry with a scheme or a trailing slash is refused (the ecosystem's form is
`host:port/path`); an unreachable or refusing registry fails with its answer, and nothing after the
failed step is pushed. Prints what it pushed, with digests."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
CRANE = TOOLS / "bin" / "crane"
APP_TAR = TOOLS / "images" / "aim-engine.tar"
SOURCE = "https://github.com/aim-engine/aim-engine"
REGISTRY_FORM = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9]+([._/-][a-z0-9]+)*)?$")


class PublishError(Exception):
    pass


def registry_of(value: str) -> str:
    if "://" in value:
        raise PublishError(f"REGISTRY={value}: give host[:port][/path] without a scheme (e.g. {value.split('://', 1)[1]})")
    if value.endswith("/"):
        raise PublishError(f"REGISTRY={value}: drop the trailing slash ({value.rstrip('/')})")
    if not REGISTRY_FORM.match(value):
        raise PublishError(f"REGISTRY={value}: not host[:port][/path] (e.g. registry.example.com:5000/aim)")
    return value


def run(cmd: list[str], *, what: str, both: bool = False) -> str:
    """stdout (with `both`, stdout and stderr: helm push reports on stderr); a failure raises with
    the tool's last lines, which carry the registry's answer."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        answer = (out.stderr or out.stdout).strip().splitlines()
        raise PublishError(f"{what} failed: {' '.join(answer[-3:]) or f'exit {out.returncode}'}")
    return (out.stdout + ("\n" + out.stderr if both else "")).strip()


def reachable(registry: str, *, plain_http: bool) -> None:
    """The registry's API base answers (200, or 401 asking for credentials crane and helm hold)."""
    host = registry.split("/", 1)[0]
    url = f"{'http' if plain_http else 'https'}://{host}/v2/"
    try:
        with urllib.request.urlopen(url, timeout=10):
            return
    except urllib.error.HTTPError as e:
        if e.code == 401:
            return
        raise PublishError(f"registry {host} answered {e.code} {e.reason} at {url}: nothing pushed") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        hint = "" if plain_http else " (a registry without TLS: PLAIN_HTTP=1)"
        raise PublishError(f"registry {host} cannot be reached at {url}: {reason}{hint}: nothing pushed") from e


def chart_meta() -> dict[str, str]:
    meta: dict[str, str] = {}
    for line in (ROOT / "chart" / "Chart.yaml").read_text().splitlines():
        m = re.match(r"^(version|appVersion|name):\s*\"?([^\"]+)\"?\s*$", line)
        if m:
            meta[m.group(1)] = m.group(2)
    return meta


def revision() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def push_image(registry: str, *, version: str, plain_http: bool) -> str:
    if not APP_TAR.is_file():
        raise PublishError(f"{APP_TAR} is missing: run make images first")
    ref = f"{registry}/aim-engine:{version}"
    insecure = ["--insecure"] if plain_http else []
    run([str(CRANE), "push", *insecure, str(APP_TAR), ref], what=f"crane push {ref}")
    labels = {
        "org.opencontainers.image.source": SOURCE,
        "org.opencontainers.image.revision": revision(),
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.title": "aim-engine",
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    mutate = [str(CRANE), "mutate", *insecure, ref, "-t", ref]
    for k, v in labels.items():
        mutate += ["--label", f"{k}={v}"]
    run(mutate, what=f"crane mutate {ref} (OCI labels)")
    return run([str(CRANE), "digest", *insecure, ref], what=f"crane digest {ref}")


def package(dist: Path, *, sign_key: str, keyring: str) -> Path:
    dist.mkdir(parents=True, exist_ok=True)
    for old in [*dist.glob("aim-engine-*.tgz"), *dist.glob("aim-engine-*.tgz.prov")]:
        old.unlink()
    cmd = [str(HELM), "package", str(ROOT / "chart"), "-d", str(dist)]
    if sign_key:
        if not Path(keyring).is_file():
            raise PublishError(f"SIGN_KEY={sign_key} needs KEYRING=<secret keyring>: {keyring!r} is no file")
        cmd += ["--sign", "--key", sign_key, "--keyring", keyring]
    run(cmd, what="helm package")
    (tgz,) = dist.glob("aim-engine-*.tgz")
    return tgz


def push_chart(registry: str, tgz: Path, *, plain_http: bool) -> str:
    cmd = [str(HELM), "push", str(tgz), f"oci://{registry}/charts"] + (["--plain-http"] if plain_http else [])
    out = run(cmd, what=f"helm push {tgz.name}", both=True)
    digest = re.search(r"Digest:\s*(\S+)", out)
    return digest.group(1) if digest else out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make publish", description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", default=os.environ.get("REGISTRY", ""))
    p.add_argument("--dist", type=Path, default=Path(os.environ.get("DIST") or "dist"))
    args = p.parse_args(argv)
    plain_http = os.environ.get("PLAIN_HTTP", "").lower() in ("1", "true", "yes", "on")
    try:
        if not args.registry:
            raise PublishError("REGISTRY is required: make publish REGISTRY=host[:port][/path]")
        registry = registry_of(args.registry)
        meta = chart_meta()
        reachable(registry, plain_http=plain_http)
        tgz = package(args.dist, sign_key=os.environ.get("SIGN_KEY", ""), keyring=os.environ.get("KEYRING", ""))
        digest = push_image(registry, version=meta["appVersion"], plain_http=plain_http)
        print(f">> pushed {registry}/aim-engine:{meta['appVersion']}@{digest} (OCI labels: source, revision, version)")
        chart_digest = push_chart(registry, tgz, plain_http=plain_http)
        signed = " with its provenance" if tgz.with_suffix(".tgz.prov").is_file() else " (unsigned: SIGN_KEY and KEYRING sign it)"
        print(f">> pushed oci://{registry}/charts/{meta['name']}:{meta['version']}@{chart_digest}{signed}")
        print(
            json.dumps(
                {"image": f"{registry}/aim-engine:{meta['appVersion']}", "chart": f"oci://{registry}/charts/{meta['name']}"}
            )
        )
    except PublishError as e:
        sys.stderr.write(f"make publish: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
