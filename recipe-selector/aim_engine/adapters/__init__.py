"""Edges: recipe and config files (catalog), the Kubernetes API (kube), Prometheus exposition
(metrics), vLLM's own argument checks in a subprocess (engine_check) and output formats (render)."""
