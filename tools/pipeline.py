#!/usr/bin/env python3
"""`make test` after `make setup`: the stages in order, with `make images` in the background from
the start (debootstrap, image layers and the Go builds of the monitoring and KEDA images go on
while lint, the catalog, the chart and the test tiers run), then the e2e suite once the images are
there. Each stage is a make target, timed into the stage table (tools/stages.py); the first one that
fails ends the run (the background build is stopped) and says which it was.

    pipeline.py [--no-e2e]"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import stages  # noqa: E402

FOREGROUND = ["lint", "validate", "rules", "chart", "unit", "integration"]


def make(target: str) -> list[str]:
    return ["make", "--no-print-directory", "-C", str(ROOT), target]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pipeline.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--no-e2e", action="store_true", help="stop after the integration tier (no images, no cluster)")
    args = p.parse_args(argv)
    logs = ROOT / ".tools" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    images: subprocess.Popen[bytes] | None = None
    images_log = logs / "images.log"
    if not args.no_e2e:
        print(f">> make images in the background (log: {images_log})", flush=True)
        with images_log.open("wb") as out:
            images = subprocess.Popen(make("images"), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for target in FOREGROUND:
            print(f"\n== make {target}", flush=True)
            t0, start = time.monotonic(), time.time()
            rc = subprocess.run(make(target), check=False).returncode
            stages.record(target, time.monotonic() - t0, "ran" if rc == 0 else "failed", started=start)
            if rc != 0:
                print(f">> make {target} failed (exit {rc}): the stages after it did not run", file=sys.stderr)
                return rc
        if images is None:
            return 0
        print("\n== waiting for make images", flush=True)
        t0, start = time.monotonic(), time.time()
        rc = images.wait()
        if time.monotonic() - t0 > 1:
            stages.record(
                "images: waited for (after the test tiers)", time.monotonic() - t0, "ran" if rc == 0 else "failed", started=start
            )
        sys.stdout.write(images_log.read_text(errors="replace")[-4000:])
        if rc != 0:
            print(f">> make images failed (exit {rc}; its log: {images_log}): the e2e suite did not run", file=sys.stderr)
            return rc
        print("\n== make e2e", flush=True)
        rc = subprocess.run(make("e2e"), check=False).returncode
        if rc != 0:
            print(f">> make e2e failed (exit {rc})", file=sys.stderr)
        return rc
    finally:
        if images is not None and images.poll() is None:
            os.killpg(images.pid, 15)
            images.wait()


if __name__ == "__main__":
    sys.exit(main())
