#!/usr/bin/env python3
"""Write an OCI image layout from layers, without a container engine: how `make images` builds the
vLLM CPU image (tools/cluster/build-images.sh), whose 6.5 GB venv a `docker build` would install
again, commit and save (about 13 minutes here) when `make setup` has already installed it.

    oci_image.py layer OUT.tar [--from-tar ROOTFS.tar] [--dir SRC=DEST]... [--file SRC=DEST[:MODE]]...
                 [--symlink DEST=TARGET]... [--mkdir DEST]...
    oci_image.py image LAYOUT_DIR --name REF --layer L.tar... [--env K=V]... [--entrypoint JSON] [--cmd JSON]
                 [--user U] [--port 8000/tcp] [--workdir W] [--label K=V]...

`layer` writes one uncompressed layer tarball (GNU tar does the copying; members are owned by root,
modes and modification times kept: Python's bytecode files check their source's mtime). `image`
puts the layers into an OCI image layout (blobs/sha256, index.json naming the image for containerd
with `io.containerd.image.name`) and prints the manifest's digest. Layers are hard-linked into the
layout when they are on the same file system, so a layout costs no second copy. `ctr images import`
takes the layout as a tar stream (tools/realcluster.py)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_layer(
    out: Path,
    *,
    from_tar: Path | None,
    dirs: list[tuple[Path, str]],
    files: list[tuple[Path, str, int | None]],
    symlinks: list[tuple[str, str]],
    mkdirs: list[str],
) -> None:
    """One GNU tar run, straight into OUT: the root file system tarball's members first (as they
    are), then a staging tree (files, links, directories), then each SRC directory under DEST."""
    tmp = out.with_name(out.name + ".tmp")
    names = [src.name for src, _ in dirs]
    if len(set(names)) != len(names) or any(n in ("", ".", "..") for n in names):
        raise SystemExit("oci_image: each --dir source needs its own directory name")
    with tempfile.TemporaryDirectory(prefix="oci-layer-") as d:
        staging = Path(d)
        for m in mkdirs:
            (staging / m.strip("/")).mkdir(parents=True, exist_ok=True)
        for src, dest, mode in files:
            target = staging / dest.strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            os.chmod(target, mode if mode is not None else (src.stat().st_mode & 0o7777))
        for dest, link_target in symlinks:
            target = staging / dest.strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(link_target)
        # the parent directories of the renamed trees, with sane modes
        for _src, dest in dirs:
            parent = Path(dest.strip("/")).parent
            if str(parent) != ".":
                (staging / parent).mkdir(parents=True, exist_ok=True)
        for p in [staging, *staging.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        if from_tar is not None:
            # the root file system's members as they are; the rest is appended after them
            shutil.copyfile(from_tar, tmp)
        cmd = [
            "tar",
            "-rf" if from_tar is not None else "-cf",
            str(tmp.resolve()),
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
            "--sort=name",
        ]
        for src, dest in dirs:
            # renames SRC's members (and hard-link targets, not symbolic-link targets) to DEST
            cmd.append(f"--transform=s,^{re.escape(src.name)}\\(/\\|$\\),{dest.strip('/')}\\1,S")
        top = sorted(x.name for x in staging.iterdir())
        if top:
            cmd += ["-C", str(staging), *top]
        for src, _dest in dirs:
            if not src.is_dir():
                raise SystemExit(f"oci_image: {src} is not a directory")
            cmd += ["-C", str(src.resolve().parent), src.name]
        subprocess.run(cmd, check=True)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
    tmp.rename(out)


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    p = layout / "blobs" / "sha256" / digest
    p.write_bytes(data)
    return f"sha256:{digest}", len(data)


def write_image(
    layout: Path,
    *,
    name: str,
    layers: list[Path],
    env: list[str],
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    user: str | None,
    ports: list[str],
    workdir: str | None,
    labels: dict[str, str],
) -> str:
    if layout.exists():
        shutil.rmtree(layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_descs, diff_ids, history = [], [], []
    for layer in layers:
        digest = sha256_file(layer)
        target = blobs / digest
        try:
            os.link(layer, target)
        except OSError:
            shutil.copyfile(layer, target)
        layer_descs.append({"mediaType": LAYER_MEDIA, "digest": f"sha256:{digest}", "size": layer.stat().st_size})
        diff_ids.append(f"sha256:{digest}")  # uncompressed: the diff ID is the blob's digest
        history.append({"created_by": f"aim-engine tools/cluster/oci_image.py layer {layer.name}"})
    config: dict[str, object] = {"Env": env}
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    if cmd is not None:
        config["Cmd"] = cmd
    if user:
        config["User"] = user
    if ports:
        config["ExposedPorts"] = {p: {} for p in ports}
    if workdir:
        config["WorkingDir"] = workdir
    if labels:
        config["Labels"] = labels
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    cfg_digest, cfg_size = _blob(layout, json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": {"mediaType": CONFIG_MEDIA, "digest": cfg_digest, "size": cfg_size},
        "layers": layer_descs,
    }
    man_digest, man_size = _blob(layout, json.dumps(manifest, sort_keys=True).encode())
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA,
                "digest": man_digest,
                "size": man_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return man_digest


def _pair(s: str, what: str) -> tuple[str, str]:
    a, sep, b = s.partition("=")
    if not sep or not a or not b:
        raise SystemExit(f"oci_image: {what} must be A=B, not {s!r}")
    return a, b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="oci_image.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    lay = sub.add_parser("layer")
    lay.add_argument("out", type=Path)
    lay.add_argument("--from-tar", type=Path)
    lay.add_argument("--dir", action="append", default=[])
    lay.add_argument("--file", action="append", default=[])
    lay.add_argument("--symlink", action="append", default=[])
    lay.add_argument("--mkdir", action="append", default=[])
    img = sub.add_parser("image")
    img.add_argument("layout", type=Path)
    img.add_argument("--name", required=True)
    img.add_argument("--layer", action="append", type=Path, required=True)
    img.add_argument("--env", action="append", default=[])
    img.add_argument("--entrypoint")
    img.add_argument("--cmd")
    img.add_argument("--user")
    img.add_argument("--port", action="append", default=[])
    img.add_argument("--workdir")
    img.add_argument("--label", action="append", default=[])
    a = p.parse_args(argv)
    if a.cmd == "layer":
        files = []
        for spec in a.file:
            src, dest = _pair(spec, "--file")
            mode = None
            if ":" in dest:
                dest, m = dest.rsplit(":", 1)
                mode = int(m, 8)
            files.append((Path(src), dest, mode))
        write_layer(
            a.out,
            from_tar=a.from_tar,
            dirs=[(Path(s), d) for s, d in (_pair(x, "--dir") for x in a.dir)],
            files=files,
            symlinks=[_pair(x, "--symlink") for x in a.symlink],
            mkdirs=a.mkdir,
        )
        return 0
    digest = write_image(
        a.layout,
        name=a.name,
        layers=a.layer,
        env=a.env,
        entrypoint=json.loads(a.entrypoint) if a.entrypoint else None,
        cmd=json.loads(a.cmd) if a.cmd else None,
        user=a.user,
        ports=a.port,
        workdir=a.workdir,
        labels=dict(_pair(x, "--label") for x in a.label),
    )
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
