"""Metrics and structured logs of the webhook.

Under gunicorn with several workers, metrics are kept in prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `aim-webhook serve` to a private temporary directory) so
/metrics reports every worker, not just the one that answered the scrape."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "aim_webhook_requests",
    "Admission reviews answered, by endpoint, kind, operation, outcome and reason",
    ["endpoint", "kind", "operation", "outcome", "reason"],
)
DURATION = Histogram("aim_webhook_request_duration_seconds", "Time to answer an admission review", ["endpoint"], buckets=BUCKETS)
HTTP_ERRORS = Counter("aim_webhook_http_errors", "Requests refused before review (bad body, size, type, method)", ["status"])
DROPPED = Counter(
    "aim_webhook_connections_dropped",
    "Connections the server closed before a complete request: slow clients (handshake_timeout, header_timeout, "
    "body_timeout), failed TLS handshakes (handshake_failed), request heads above the limit (headers_too_large), "
    "connections that never sent a request closed to make room (idle_evicted)",
    ["reason"],
)
OFFLOADED = Counter(
    "aim_webhook_offloaded_requests",
    "Requests the event loop began and moved to a thread because they had to wait for the API server "
    "(reading a recipe ConfigMap); every other request is answered in the event loop",
)
CERT_EXPIRY = Gauge(
    "aim_webhook_certificate_expiry_timestamp_seconds", "notAfter of the serving certificate (Unix time)", multiprocess_mode="max"
)


def render_metrics(*extras: CollectorRegistry | None) -> bytes:
    """The exposition for /metrics: every worker's metrics (multiprocess mode) or this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        out = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        out = generate_latest(REGISTRY)
    for extra in extras:
        if extra is not None:
            out += generate_latest(extra)
    return out


class JsonFormatter(logging.Formatter):
    FIELDS = (
        "uid",
        "kind",
        "namespace",
        "object_name",
        "user",
        "operation",
        "endpoint",
        "outcome",
        "reason",
        "duration_ms",
        "status",
        "peer",
    )

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in self.FIELDS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def now() -> float:
    return time.perf_counter()
