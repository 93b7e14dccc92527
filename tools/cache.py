#!/usr/bin/env python3
"""The build cache outside the clone: what `make setup` and `make images` build once per machine.

    cache.py root                                   the cache's directory
    cache.py build NAME --key TEXT... [--key-file F]... [--link DEST[=PATH]]... [--stage S] -- CMD...
    cache.py path [--quick] NAME --key ...          the entry's directory if it is complete and intact (exit 1 if not)
    cache.py verify [NAME]                          check every entry (or NAME's) against its manifest
    cache.py list                                   entries, sizes, keys
    cache.py clean                                  remove the whole cache (make clean-cache)

Where: `$AIM_ENGINE_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/aim-engine`.

An entry is `<root>/<NAME>/<KEY>/`: KEY is a hash of the pinned inputs given with --key (texts: a
version, a Go toolchain, a platform) and --key-file (files: a lock, a Dockerfile), so a changed pin
names a new entry and rebuilds only what it pins. `build` runs CMD with `{out}` (and
$AIM_CACHE_OUT) standing for the entry's directory, in place (a venv's paths are absolute), under a
lock (two clones building the same entry wait for each other). The entry counts only once its
manifest is written, last and atomically (a temporary file renamed): it lists every file with its
size and SHA-256 and every symbolic link with its target. An entry without a manifest (a build
interrupted) or whose listed files disagree with it (a corrupt, truncated or missing file) is removed and rebuilt,
never used. `build` verifies an entry in full (every checksum) when a clone first links it, and by
size once the clone's links already point at it; `path` in full (`--quick`: by size). The two
newest entries of a name are kept, older ones removed.

`--link DEST=PATH` makes DEST a symbolic link to PATH inside the entry (DEST alone: to the entry);
make's targets are those links, so a clone verifies an entry once, when it first links it.
`--stage` records the step's seconds and whether it was built or cached (tools/stages.py)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stages

MANIFEST = ".aim-cache-manifest.json"
# Directories the cache holds that are not keyed entries: dockerd's data root (its layer cache) and
# the cluster's containerd image store (tools/cluster/build-images.sh, tools/realcluster.py).
STORES = frozenset({"docker", "containerd"})
KEEP = 2  # entries kept per name (the newest)
CHUNK = 1 << 20


class CacheError(Exception):
    """A cache entry that cannot be built or linked: the message says what to do."""


def root() -> Path:
    explicit = os.environ.get("AIM_ENGINE_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base).expanduser() / "aim-engine").resolve()


def key_of(name: str, texts: list[str], files: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(f"aim-engine-cache 1\0{name}\0".encode())
    for t in texts:
        h.update(b"text\0" + t.encode() + b"\0")
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as e:
            raise CacheError(f"key file {f} cannot be read: {e.strerror}") from e
        h.update(b"file\0" + f.name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:20]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _walk(entry: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(entry):
        d = Path(dirpath)
        for n in sorted(dirnames):
            if (d / n).is_symlink():
                yield d / n
        for n in sorted(filenames):
            if d == entry and n == MANIFEST:
                continue
            yield d / n


def write_manifest(entry: Path) -> dict[str, object]:
    files: dict[str, list[object]] = {}
    links: dict[str, str] = {}
    for p in _walk(entry):
        rel = p.relative_to(entry).as_posix()
        if p.is_symlink():
            links[rel] = os.readlink(p)
        elif p.is_file():
            files[rel] = [p.stat().st_size, _sha256(p)]
    manifest: dict[str, object] = {"created": time.time(), "files": files, "links": links}
    tmp = entry / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, sort_keys=True))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.rename(entry / MANIFEST)
    return manifest


def problems(entry: Path, *, quick: bool = False) -> list[str]:
    """Why the entry may not be used; empty when it is complete and every file matches its manifest
    (quick: in size only, for a caller that has just had the entry verified by `build`)."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        files: dict[str, list[object]] = manifest["files"]
        links: dict[str, str] = manifest["links"]
    except FileNotFoundError:
        return ["no manifest (its build did not finish)"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"unreadable manifest ({e})"]
    found: list[str] = []
    for rel, (size, digest) in files.items():
        p = entry / rel
        if p.is_symlink() or not p.is_file():
            found.append(f"{rel}: missing")
        elif p.stat().st_size != size:
            found.append(f"{rel}: {p.stat().st_size} bytes, the manifest says {size}")
        elif not quick and _sha256(p) != digest:
            found.append(f"{rel}: SHA-256 differs from the manifest's")
        if len(found) >= 5:
            return found
    for rel, target in links.items():
        p = entry / rel
        if not p.is_symlink() or os.readlink(p) != target:
            found.append(f"{rel}: link changed or missing")
    # Files added after the manifest (bytecode Python writes into a venv) are not checked.
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        # read-only trees (Go's module copies) need write permission to be removed
        for dirpath, _dirs, _files in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(dirpath, 0o755)
        shutil.rmtree(path)


def _prune(name_dir: Path, keep: Path) -> None:
    entries = [p for p in name_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep]
    entries.sort(key=lambda p: (p / MANIFEST).stat().st_mtime if (p / MANIFEST).exists() else 0, reverse=True)
    for old in entries[KEEP - 1 :]:
        with _locked(name_dir / f".{old.name}.lock"):
            _remove(old)
        (name_dir / f".{old.name}.lock").unlink(missing_ok=True)


def _points_to(spec: str, entry: Path) -> bool:
    dest_s, _, rel = spec.partition("=")
    dest = Path(dest_s)
    return dest.is_symlink() and os.readlink(dest) == str(entry / rel if rel else entry)


def _link(entry: Path, spec: str) -> None:
    dest_s, _, rel = spec.partition("=")
    dest = Path(dest_s)
    target = entry / rel if rel else entry
    if not (target.exists() or target.is_symlink()):
        raise CacheError(f"{target} is not in the cache entry: the build command did not write it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        _remove(dest)
    tmp = dest.with_name(dest.name + ".link-tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.rename(dest)


def _run_logged(cmd: list[str], env: dict[str, str], log: Path | None) -> int:
    if log is None:
        return subprocess.run(cmd, env=env, check=False).returncode
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def build(
    name: str,
    *,
    texts: list[str],
    files: list[Path],
    links: list[str],
    command: list[str],
    stage: str | None,
    quiet: bool,
    log: Path | None = None,
    hint: str | None = None,
) -> Path:
    t0 = time.monotonic()
    key = key_of(name, texts, files)
    name_dir = root() / name
    entry = name_dir / key
    status = "cached"
    with _locked(name_dir / f".{key}.lock"):
        if entry.exists():
            # verified in full when a clone links it first; once its links point at it, by size
            linked = bool(links) and all(_points_to(spec, entry) for spec in links)
            bad = problems(entry, quick=linked)
            if bad:
                print(f">> cache: {name} ({key}) is not usable: {'; '.join(bad)}; rebuilding it", file=sys.stderr)
                _remove(entry)
        if not entry.exists():
            status = "built"
            entry.mkdir(parents=True)
            out = str(entry)
            cmd = [c.replace("{out}", out) for c in command]
            env = {**os.environ, "AIM_CACHE_OUT": out}
            if not quiet:
                print(f">> building {name} ({stage or key}){f'; log: {log}' if log else ''}", file=sys.stderr, flush=True)
            rc = _run_logged(cmd, env, log)
            if rc != 0:
                _remove(entry)
                if stage:
                    stages.record(stage, time.monotonic() - t0, "failed")
                shown = f"\n--- the last lines of {log}:\n{_tail(log)}\n---" if log else ""
                what = f"\nwhat to do: {hint}" if hint else ""
                raise CacheError(f"building {name} failed (exit {rc}): {' '.join(command)}{shown}{what}")
            write_manifest(entry)
            _prune(name_dir, entry)
    for spec in links:
        _link(entry, spec)
    seconds = time.monotonic() - t0
    if stage:
        stages.record(stage, seconds, status)
    if not quiet:
        print(f">> {name}: {status} ({seconds:.0f} s, {entry})", file=sys.stderr)
    return entry


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="cache.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("root")
    sub.add_parser("list")
    sub.add_parser("clean")
    v = sub.add_parser("verify")
    v.add_argument("name", nargs="?")
    for cmd in ("build", "path"):
        b = sub.add_parser(cmd)
        b.add_argument("name")
        b.add_argument("--key", action="append", default=[], help="a pinned input (text)")
        b.add_argument("--key-file", action="append", default=[], type=Path, help="a pinned input (file)")
        if cmd == "build":
            b.add_argument("--link", action="append", default=[], help="DEST[=PATH in the entry]: a symbolic link")
            b.add_argument("--stage", help="the stage name to record (tools/stages.py)")
            b.add_argument("--quiet", action="store_true")
        else:
            b.add_argument("--quick", action="store_true", help="check sizes, not checksums")
        if cmd == "build":
            b.add_argument("--log", type=Path, help="the build's output goes here (its tail is shown if it fails)")
            b.add_argument("--hint", help="what to do when the build fails")
    args = p.parse_args(argv)
    try:
        if args.cmd == "root":
            print(root())
        elif args.cmd == "clean":
            r = root()
            _remove(r)
            print(f"removed {r}")
        elif args.cmd == "list":
            r = root()
            for name_dir in sorted(r.iterdir()) if r.exists() else []:
                if name_dir.name in STORES:
                    size = sum(f.stat().st_size for f in name_dir.rglob("*") if f.is_file() and not f.is_symlink())
                    print(f"{name_dir.name:<24} {'(a store, not an entry)':<20}  {size / 2**20:>9.1f} MiB")
                    continue
                for e in sorted(x for x in name_dir.iterdir() if x.is_dir() and not x.name.startswith(".")):
                    size = sum(f.stat().st_size for f in e.rglob("*") if f.is_file() and not f.is_symlink())
                    state = "complete" if (e / MANIFEST).exists() else "INCOMPLETE"
                    print(f"{name_dir.name:<24} {e.name}  {size / 2**20:>9.1f} MiB  {state}")
        elif args.cmd == "verify":
            r = root()
            bad = 0
            for name_dir in sorted(r.iterdir()) if r.exists() else []:
                if (args.name and name_dir.name != args.name) or name_dir.name in STORES:
                    continue
                for e in sorted(x for x in name_dir.iterdir() if x.is_dir() and not x.name.startswith(".")):
                    found = problems(e)
                    bad += bool(found)
                    print(f"{name_dir.name}/{e.name}: {'; '.join(found) if found else 'intact'}")
            return 1 if bad else 0
        elif args.cmd == "path":
            entry = root() / args.name / key_of(args.name, args.key, args.key_file)
            if not entry.exists() or problems(entry, quick=args.quick):
                return 1
            print(entry)
        else:
            if not command:
                p.error("build needs a command after --")
            build(
                args.name,
                texts=args.key,
                files=args.key_file,
                links=args.link,
                command=command,
                stage=args.stage,
                quiet=args.quiet,
                log=args.log,
                hint=args.hint,
            )
    except CacheError as e:
        print(f"cache: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
