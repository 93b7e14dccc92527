#!/usr/bin/env python3
"""Where `make test` spends its time: every stage records its seconds and whether it was built,
taken from the cache, or run; the session prints the table at its end (docs/cluster.md keeps one).

    stages.py session [--title T] -- CMD...   run CMD as one session and print its table, even when it fails
    stages.py run STAGE -- CMD...             run CMD, record it as STAGE (ran or failed), exit with its status
    stages.py record STAGE SECONDS HOW        record a stage measured elsewhere (HOW: built, cached, ran, failed)
    stages.py table [FILE]                    print a session's table

The records go to $AIM_STAGES; a session started without it sets it to a new file, so that every
make, script and test underneath records into the same table (CI's `make setup` and `make test`
share one: .ci/run sets it). Without a session, records go to .tools/stages.tsv."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / ".tools" / "stages.tsv"
LAST_TABLE = ROOT / ".tools" / "stages-last.md"
HOWS = ("built", "cached", "ran", "failed")


@dataclass(frozen=True)
class Stage:
    name: str
    started: float  # epoch seconds
    seconds: float
    how: str


def _file() -> Path:
    return Path(os.environ.get("AIM_STAGES") or DEFAULT)


def record(name: str, seconds: float, how: str, *, started: float | None = None) -> None:
    if how not in HOWS:
        raise ValueError(f"how must be one of {', '.join(HOWS)}, not {how!r}")
    f = _file()
    f.parent.mkdir(parents=True, exist_ok=True)
    start = time.time() - seconds if started is None else started
    clean = name.replace("\t", " ").replace("\n", " ")
    # one short append per record: whole lines even when stages running side by side record together
    with f.open("a") as out:
        out.write(f"{clean}\t{start:.3f}\t{seconds:.3f}\t{how}\n")


def read(path: Path) -> list[Stage]:
    found: list[Stage] = []
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) != 4:
            continue
        try:
            found.append(Stage(parts[0], float(parts[1]), float(parts[2]), parts[3]))
        except ValueError:
            continue
    return found


def table(path: Path, *, title: str = "make test", wall: float | None = None) -> str:
    rows = read(path)
    if not rows:
        return f"{title}: no stages recorded in {path}\n"
    t0 = min(r.started for r in rows)
    end = max(r.started + r.seconds for r in rows)
    width = max(len(r.name) for r in rows)
    lines = [f"{'stage':<{width}}  {'start':>7}  {'seconds':>8}  how", f"{'-' * width}  {'-' * 7}  {'-' * 8}  ------"]
    for r in sorted(rows, key=lambda r: r.started):
        lines.append(f"{r.name:<{width}}  {r.started - t0:>7.0f}  {r.seconds:>8.1f}  {r.how}")
    total = wall if wall is not None else end - t0
    summed = sum(r.seconds for r in rows)
    counts = {h: sum(r.how == h for r in rows) for h in HOWS}
    lines.append(f"{'-' * width}  {'-' * 7}  {'-' * 8}  ------")
    lines.append(
        f"{'total (wall clock)':<{width}}  {'':>7}  {total:>8.1f}  {total / 60:.1f} min; stages add up to {summed:.0f} s "
        f"(some overlap); {counts['built']} built, {counts['cached']} cached, {counts['ran']} ran, {counts['failed']} failed"
    )
    return f"== {title}: stages ({path})\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="stages.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("session")
    s.add_argument("--title", default="make test")
    r = sub.add_parser("run")
    r.add_argument("stage")
    rec = sub.add_parser("record")
    rec.add_argument("stage")
    rec.add_argument("seconds", type=float)
    rec.add_argument("how", choices=HOWS)
    t = sub.add_parser("table")
    t.add_argument("file", nargs="?", type=Path)
    args = p.parse_args(argv)
    if args.cmd in ("session", "run") and not command:
        p.error(f"{args.cmd} needs a command after --")
    if args.cmd == "record":
        record(args.stage, args.seconds, args.how)
        return 0
    if args.cmd == "table":
        print(table(args.file or _file()), end="")
        return 0
    if args.cmd == "run":
        t0, start = time.monotonic(), time.time()
        rc = subprocess.run(command, check=False).returncode
        record(args.stage, time.monotonic() - t0, "ran" if rc == 0 else "failed", started=start)
        return rc
    # session
    inherited = bool(os.environ.get("AIM_STAGES"))
    if not inherited:
        runs = ROOT / ".tools" / "stages"
        runs.mkdir(parents=True, exist_ok=True)
        os.environ["AIM_STAGES"] = str(runs / time.strftime("%Y%m%d-%H%M%S.tsv"))
    t0 = time.monotonic()
    try:
        rc = subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        rc = 130
    path = _file()
    rows = read(path)
    wall = (time.time() - min(r.started for r in rows)) if rows else time.monotonic() - t0
    text = table(path, title=args.title, wall=wall)
    verdict = "passed" if rc == 0 else f"FAILED (exit {rc})"
    text += f"{args.title}: {verdict}\n"
    print("\n" + text, end="", flush=True)
    LAST_TABLE.parent.mkdir(parents=True, exist_ok=True)
    LAST_TABLE.write_text(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
