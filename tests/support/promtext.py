"""The series of a Prometheus text-format page (a /metrics scrape), as Prometheus stores them."""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"([^{ ]+)(?:\{([^}]*)\})? ")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def series(text: str) -> dict[str, dict[str, set[str]]]:
    """Series name (`vllm:prompt_tokens_total`, `vllm:time_to_first_token_seconds_bucket`) -> its
    label names ("labels") and its buckets' bounds ("buckets", for `_bucket` series)."""
    found: dict[str, dict[str, set[str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"not a sample line: {line!r}")
        labels = dict(_LABEL.findall(m.group(2) or ""))
        entry = found.setdefault(m.group(1), {"labels": set(), "buckets": set()})
        entry["labels"] |= set(labels) - {"le"}
        if "le" in labels:
            entry["buckets"].add(labels["le"])
    return found


def conformance_problems(simulated: dict[str, dict[str, set[str]]], real: dict[str, dict[str, set[str]]]) -> list[str]:
    """Where the `vllm:` series of `simulated` are not the real engine's: an unknown series, a label
    the real engine does not set, buckets other than its."""
    problems = []
    for name, mine in sorted(simulated.items()):
        if not name.startswith("vllm:"):
            continue
        theirs = real.get(name)
        if theirs is None:
            problems.append(f"{name}: not a series of the real engine")
            continue
        if not mine["labels"] <= theirs["labels"]:
            problems.append(f"{name}: labels {sorted(mine['labels'] - theirs['labels'])} the real engine does not set")
        if mine["buckets"] != theirs["buckets"]:
            problems.append(f"{name}: buckets {sorted(mine['buckets'] ^ theirs['buckets'])} differ from the real engine's")
    return problems
