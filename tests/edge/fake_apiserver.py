"""A small stand-in for the Kubernetes API server, over real HTTP, for the selector's edge: the
official client talks to it exactly as to kube-apiserver (paths, pagination with limit/continue,
fieldSelector, labelSelector, 404 and 409 Status bodies, resourceVersion checks on replace).
The e2e suite runs the same code against a real kube-apiserver."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeApiServer:
    def __init__(self, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.nodes = nodes
        self.pods = pods
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        # Other objects by collection path and name (secrets, webhook configurations).
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.conflicts_to_inject = 0
        self.rv = 100
        self.lock = threading.Lock()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path: Any) -> str:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
        }
        path.write_text(json.dumps(cfg))
        return str(path)

    GENERIC = ("/secrets", "/validatingwebhookconfigurations", "/mutatingwebhookconfigurations")

    def _generic_collection(self, path: str) -> bool:
        return path.rstrip("/").endswith(self.GENERIC)

    def _generic_key(self, path: str) -> tuple[str, str] | None:
        collection, _, name = path.rstrip("/").rpartition("/")
        if self._generic_collection(collection) and name:
            return (collection, name)
        return None

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": message,
                        "reason": reason,
                        "code": code,
                    },
                )

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length", "0"))
                return json.loads(self.rfile.read(n)) if n else {}

            def _page(self, items: list[dict[str, Any]], query: dict[str, list[str]]) -> None:
                limit = int(query.get("limit", ["0"])[0]) or len(items) or 1
                start = int(query.get("continue", ["0"])[0] or 0)
                chunk = items[start : start + limit]
                meta: dict[str, Any] = {"resourceVersion": str(server.rv)}
                if start + limit < len(items):
                    meta["continue"] = str(start + limit)
                self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": meta, "items": chunk})

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                parts = url.path.strip("/").split("/")
                server.requests.append(f"GET {self.path}")
                if url.path == "/api/v1/nodes":
                    return self._page(server.nodes, query)
                if url.path == "/api/v1/pods":
                    sel = query.get("fieldSelector", [""])[0]
                    pods = [
                        p
                        for p in server.pods
                        if not ("status.phase!=Succeeded" in sel and p["status"]["phase"] in ("Succeeded", "Failed"))
                    ]
                    return self._page(pods, query)
                if url.path == "/api/v1/configmaps" or (len(parts) == 5 and parts[4] == "configmaps"):
                    label = query.get("labelSelector", [""])[0]
                    key, _, value = label.partition("=")
                    ns = parts[3] if len(parts) == 5 else None
                    items = [
                        cm
                        for (n, _), cm in sorted(server.configmaps.items())
                        if (ns is None or n == ns) and (not key or cm["metadata"].get("labels", {}).get(key) == value)
                    ]
                    return self._page(items, query)
                generic = server._generic_key(url.path)
                if generic is not None:
                    obj = server.objects.get(generic)
                    if obj is None:
                        return self._status(404, "NotFound", f'"{generic[1]}" not found')
                    return self._send(200, obj)
                if len(parts) == 6 and parts[4] == "configmaps":
                    cm = server.configmaps.get((parts[3], parts[5]))
                    if cm is None:
                        return self._status(404, "NotFound", f'configmaps "{parts[5]}" not found')
                    return self._send(200, cm)
                return self._status(404, "NotFound", "no such path")

            def do_POST(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                body = self._body()
                server.requests.append(f"POST {self.path}")
                with server.lock:
                    path = self.path.split("?")[0]
                    if server._generic_collection(path):
                        key = (path.rstrip("/"), body["metadata"]["name"])
                        if key in server.objects:
                            return self._status(409, "AlreadyExists", f'"{key[1]}" already exists')
                        body["metadata"]["resourceVersion"] = server._next_rv()
                        server.objects[key] = body
                        return self._send(201, body)
                    if parts[-1] == "configmaps":
                        key = (parts[3], body["metadata"]["name"])
                        if key in server.configmaps:
                            return self._status(409, "AlreadyExists", f'configmaps "{key[1]}" already exists')
                        body["metadata"]["resourceVersion"] = server._next_rv()
                        server.configmaps[key] = body
                        return self._send(201, body)
                    if parts[-1] == "events":
                        server.events.append(body)
                        return self._send(201, body)
                return self._status(404, "NotFound", "no such path")

            def do_PUT(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                body = self._body()
                server.requests.append(f"PUT {self.path}")
                with server.lock:
                    generic = server._generic_key(self.path.split("?")[0])
                    if generic is not None:
                        existing = server.objects.get(generic)
                        if existing is None:
                            return self._status(404, "NotFound", f'"{generic[1]}" not found')
                        if body["metadata"].get("resourceVersion") != existing["metadata"]["resourceVersion"]:
                            return self._status(409, "Conflict", "the object has been modified")
                        body["metadata"]["resourceVersion"] = server._next_rv()
                        server.objects[generic] = body
                        return self._send(200, body)
                    key = (parts[3], parts[5])
                    current = server.configmaps.get(key)
                    if current is None:
                        return self._status(404, "NotFound", f'configmaps "{key[1]}" not found')
                    if server.conflicts_to_inject:
                        server.conflicts_to_inject -= 1
                        current["metadata"]["resourceVersion"] = server._next_rv()  # someone else wrote
                    if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                        return self._status(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes to the latest version and try again",
                        )
                    body["metadata"]["resourceVersion"] = server._next_rv()
                    server.configmaps[key] = body
                    return self._send(200, body)

        return Handler
