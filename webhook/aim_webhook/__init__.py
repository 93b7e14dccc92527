"""aim-webhook: the admission webhook that validates workloads against their recipe and injects
the recipe into them. The rules live in aim_engine (shared with the selector); this package is the
admission protocol, the HTTP server, TLS and metrics around them."""
