"""Reading benchmark records (what `helm test` measured, aim_engine.domain.benchmark) for the
selector: from files (`--benchmarks FILE`) and from ConfigMaps named in the live cluster
(`--benchmarks-configmap NAME`, what the chart's selector hook passes: its release's own
`<release>-recipe-benchmarks`, read by name, so it needs no right to list ConfigMaps)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aim_engine.adapters.catalog import parse_yaml_documents, read_document_text
from aim_engine.contract import BENCHMARKS_KEY
from aim_engine.domain.benchmark import BenchmarkResult, parse_history
from aim_engine.domain.errors import InputError
from aim_engine.rules.evidence import Measurement

log = logging.getLogger(__name__)


def _records(doc: Any, *, where: str) -> Iterator[Measurement]:
    """Records inside one parsed document: a list of records (benchmarks.json, `aim-recipes bench
    show -o json`), a ConfigMap with a benchmarks.json key, or a v1 List of such ConfigMaps."""
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            if not isinstance(item, Mapping):
                raise InputError(f"{where}[{i}]: expected a benchmark record (a mapping)")
            yield Measurement(result=_record(item, where=f"{where}[{i}]"), origin=where)
        return
    if not isinstance(doc, Mapping):
        raise InputError(f"{where}: expected a list of benchmark records or a ConfigMap with {BENCHMARKS_KEY}")
    kind = doc.get("kind")
    if kind == "List":
        for item in doc.get("items") or []:
            yield from _records(item, where=where)
        return
    if kind == "ConfigMap":
        yield from configmap_records(doc, where=where)
        return
    if "outcome" in doc and "provenance" in doc:
        yield Measurement(result=_record(doc, where=where), origin=where)
        return
    raise InputError(f"{where}: not a benchmark record, a list of them, or a ConfigMap with a {BENCHMARKS_KEY} key")


def _record(doc: Mapping[str, Any], *, where: str) -> BenchmarkResult:
    try:
        return BenchmarkResult.from_json(doc)
    except InputError as e:
        raise InputError(f"{where}: {e}") from e


def configmap_records(cm: Mapping[str, Any], *, where: str = "") -> list[Measurement]:
    meta = cm.get("metadata") or {}
    name = f"ConfigMap {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    origin = f"{where} ({name})" if where else name
    data = cm.get("data") or {}
    if BENCHMARKS_KEY not in data:
        raise InputError(f"{origin} has no {BENCHMARKS_KEY} key (keys: {', '.join(sorted(data)) or 'none'})")
    try:
        history = parse_history(str(data[BENCHMARKS_KEY]))
    except InputError as e:
        raise InputError(f"{origin}: {e}") from e
    return [Measurement(result=r, origin=origin) for r in history]


def read_benchmark_files(paths: Sequence[Path]) -> list[Measurement]:
    out: list[Measurement] = []
    for path in paths:
        for doc in parse_yaml_documents(read_document_text(path), where=str(path)):
            out.extend(_records(doc, where=str(path)))
    return out


def read_benchmark_configmaps(kube: Any, namespace: str, names: Sequence[str]) -> list[Measurement]:
    """The records of each named ConfigMap; one that does not exist yet (no `helm test` has run)
    holds none. An unreadable one is an error: a history the selection cannot read must be fixed,
    not silently ignored."""
    out: list[Measurement] = []
    for name in dict.fromkeys(names):
        cm = kube.configmap(namespace, name)
        if cm is None:
            log.info("no benchmark ConfigMap %s/%s yet (run helm test to measure)", namespace, name)
            continue
        if not ((cm.get("data") or {}).get(BENCHMARKS_KEY) or "").strip():
            continue  # created empty by the chart: nothing measured yet
        out.extend(configmap_records(cm))
    return out


def describe(measurements: Sequence[Measurement]) -> str:
    """One line for logs: how many records from where."""
    origins: dict[str, int] = {}
    for m in measurements:
        origins[m.origin] = origins.get(m.origin, 0) + 1
    return json.dumps(origins)
