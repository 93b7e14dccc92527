"""Kubernetes I/O for the selector: read nodes, pods and custom-recipe ConfigMaps, write the
selection ConfigMap, record an Event. A thin layer over the official client; everything it returns
is plain JSON as the API server serialises it, so the pure core never sees client objects."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aim_engine.domain.errors import AimError, InputError

log = logging.getLogger(__name__)
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
PAGE = 500


class KubeError(AimError):
    """The API server could not be reached or refused a request."""


class Forbidden(KubeError):
    """RBAC does not let this service account read it (403)."""


def _api_exception() -> Any:
    from kubernetes.client.exceptions import ApiException

    return ApiException


def _transport_errors() -> tuple[type[BaseException], ...]:
    from urllib3.exceptions import HTTPError

    return (OSError, HTTPError)


class NoCredentials(InputError):
    """Neither a service account nor a kubeconfig gives access to a cluster."""

    def __init__(self, detail: str, *, hint: str = "") -> None:
        self.detail = detail
        super().__init__(
            f"no cluster credentials found ({detail}): run in a pod with a service account, or set KUBECONFIG "
            f"(default ~/.kube/config){hint}"
        )


def load_credentials(*, kubeconfig: str | None = None, context: str | None = None) -> None:
    """The one place credentials are loaded, for the selector, its hook and the webhook: the pod's
    service account when running in a pod and no kubeconfig or context is named, else the
    kubeconfig (the given file, $KUBECONFIG or ~/.kube/config)."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig is None and context is None and (SA_NAMESPACE.exists() or os.environ.get("KUBERNETES_SERVICE_HOST")):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, TypeError, ValueError) as e:
        raise NoCredentials(" ".join(str(e).split())) from e


class Kube:
    def __init__(self, core: Any) -> None:
        self.core = core

    @classmethod
    def connect(cls, *, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        from kubernetes import client

        try:
            load_credentials(kubeconfig=kubeconfig, context=context)
        except NoCredentials as e:
            hint = "; or pass --cluster FILE with the output of `kubectl get nodes,pods -A -o json`"
            raise NoCredentials(e.detail, hint=hint) from e
        return cls(client.CoreV1Api())

    def configmaps(self, *, namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
        """ConfigMaps with these labels in one namespace, or in all (namespace None)."""
        if namespace:
            return self._list(
                "list configmaps", self.core.list_namespaced_config_map, namespace=namespace, label_selector=label_selector
            )
        return self._list("list configmaps", self.core.list_config_map_for_all_namespaces, label_selector=label_selector)

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        api_exc = _api_exception()
        try:
            return fn(**kwargs)
        except api_exc as e:
            raise KubeError(f"{what}: the API server answered {e.status} {e.reason}: {_message(e.body)}") from e
        except _transport_errors() as e:  # connection refused, DNS, TLS
            raise KubeError(f"{what}: cannot reach the API server ({e})") from e

    def _list(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            resp = self._call(what, fn, limit=PAGE, _continue=token, _preload_content=False, **kwargs)
            body = json.loads(resp.data)
            items.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return items

    def nodes(self) -> list[dict[str, Any]]:
        return self._list("list nodes", self.core.list_node)

    def pods(self) -> list[dict[str, Any]]:
        return self._list(
            "list pods", self.core.list_pod_for_all_namespaces, field_selector="status.phase!=Succeeded,status.phase!=Failed"
        )

    def namespaced_pods(self, namespace: str, *, label_selector: str) -> list[dict[str, Any]]:
        return self._list("list pods", self.core.list_namespaced_pod, namespace=namespace, label_selector=label_selector)

    def _read(self, what: str, fn: Callable[..., Any], namespace: str, name: str) -> dict[str, Any] | None:
        """One object by name, or None when it does not exist; 403 is Forbidden, the rest KubeError."""
        api_exc = _api_exception()
        try:
            resp = fn(name, namespace, _preload_content=False)
        except api_exc as e:
            if e.status == 404:
                return None
            error = Forbidden if e.status == 403 else KubeError
            raise error(f"read {what} {namespace}/{name}: {e.status} {e.reason}: {_message(e.body)}") from e
        except _transport_errors() as e:
            raise KubeError(f"read {what} {namespace}/{name}: cannot reach the API server ({e})") from e
        return json.loads(resp.data)  # type: ignore[no-any-return]

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read("configmap", self.core.read_namespaced_config_map, namespace, name)

    def write_configmap(
        self,
        namespace: str,
        name: str,
        *,
        data: Mapping[str, str],
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        update: Callable[[dict[str, Any] | None], dict[str, str]] | None = None,
        remove: Sequence[str] = (),
    ) -> None:
        """Create or update, retrying on a write conflict; `update(current)` merges with what is there.
        `remove`: label and annotation keys an earlier write left that no longer hold."""
        api_exc = _api_exception()
        for attempt in range(5):
            current = self.configmap(namespace, name)
            merged = dict(update(current) if update else data)
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "annotations": dict(annotations)},
                "data": merged,
            }
            try:
                if current is None:
                    self.core.create_namespaced_config_map(namespace, body)
                else:
                    meta = current.get("metadata") or {}
                    body["metadata"]["resourceVersion"] = meta.get("resourceVersion")
                    kept_labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in remove}
                    kept_annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in remove}
                    body["metadata"]["labels"] = {**kept_labels, **labels}
                    body["metadata"]["annotations"] = {**kept_annotations, **annotations}
                    self.core.replace_namespaced_config_map(name, namespace, body)
                return
            except api_exc as e:
                if e.status in (409,) and attempt < 4:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise KubeError(f"write configmap {namespace}/{name}: {e.status} {e.reason}: {_message(e.body)}") from e
            except _transport_errors() as e:
                raise KubeError(f"write configmap {namespace}/{name}: cannot reach the API server ({e})") from e

    def pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The PersistentVolumeClaim, or None when it does not exist."""
        return self._read("persistentvolumeclaim", self.core.read_namespaced_persistent_volume_claim, namespace, name)

    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.core.api_client)

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment, or None when it does not exist (a first install)."""
        return self._read("deployment", self._apps().read_namespaced_deployment, namespace, name)

    def patch_deployment(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """A strategic merge patch (null clears a field)."""
        self._call(
            f"patch deployment {namespace}/{name}",
            self._apps().patch_namespaced_deployment,
            name=name,
            namespace=namespace,
            body=dict(patch),
        )

    def pod_log(self, namespace: str, name: str, *, previous: bool = False, tail: int = 50) -> str:
        """A container's last lines ('' when there are none to read)."""
        api_exc = _api_exception()
        try:
            text = self.core.read_namespaced_pod_log(name, namespace, previous=previous, tail_lines=tail)
        except api_exc:
            return ""
        except _transport_errors() as e:
            raise KubeError(f"read log of pod {namespace}/{name}: cannot reach the API server ({e})") from e
        return str(text or "")

    def delete_configmap(self, namespace: str, name: str) -> None:
        """Delete it; one already gone is fine."""
        api_exc = _api_exception()
        try:
            self.core.delete_namespaced_config_map(name, namespace)
        except api_exc as e:
            if e.status != 404:
                raise KubeError(f"delete configmap {namespace}/{name}: {e.status} {e.reason}: {_message(e.body)}") from e
        except _transport_errors() as e:
            raise KubeError(f"delete configmap {namespace}/{name}: cannot reach the API server ({e})") from e

    def event(self, namespace: str, *, configmap: str, reason: str, message: str, warning: bool) -> None:
        """Record an Event on the selection ConfigMap (best effort: a failure is logged, not fatal)."""
        self.event_on(
            namespace, kind="ConfigMap", api_version="v1", name=configmap, reason=reason, message=message, warning=warning
        )

    def owner_job(self, namespace: str, pod_name: str) -> tuple[str, str] | None:
        """The (name, uid) of the Job that owns this pod, or None (best effort)."""
        try:
            pod = self.core.read_namespaced_pod(pod_name, namespace)
        except Exception as e:
            log.warning("could not read pod %s/%s: %s", namespace, pod_name, e)
            return None
        for ref in pod.metadata.owner_references or []:
            if ref.kind == "Job":
                return str(ref.name), str(ref.uid)
        return None

    def event_on(
        self,
        namespace: str,
        *,
        kind: str,
        api_version: str,
        name: str,
        reason: str,
        message: str,
        warning: bool,
        uid: str | None = None,
    ) -> None:
        """Record an Event on any namespaced object, e.g. the hook Job, so `kubectl describe` shows it
        (best effort: a failure is logged, not fatal)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": api_version,
                "kind": kind,
                "name": name,
                "namespace": namespace,
                **({"uid": uid} if uid else {}),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "aim-recipe-selector"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(namespace, body)
        except Exception as e:
            log.warning("could not record event %s on %s %s/%s: %s", reason, kind, namespace, name, e)


def _message(body: object) -> str:
    try:
        return str(json.loads(body).get("message", body))  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError):
        return str(body)[:300]


def own_namespace() -> str | None:
    try:
        return SA_NAMESPACE.read_text().strip() or None
    except OSError:
        return None
