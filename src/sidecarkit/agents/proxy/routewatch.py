"""HTTPRoutes followed through the API server: list the namespace's routes, then watch.

With ``kubernetes_routes: NAMESPACE`` the proxy reads the Gateway API ``HTTPRoute`` objects of
that namespace (``gateway.networking.k8s.io/v1``) as Linkerd's and Istio's proxies do, besides
the ``routes:`` of its settings file. A route's ``parentRefs`` and ``backendRefs`` name Services;
each is matched to an upstream of the settings: the one whose ``kubernetes:`` is that Service
(namespace and name), else the one named as the Service. A route whose parent is no upstream
does not concern this proxy; a backend that is no upstream gets its share of requests answered
500, as the Gateway API says for a backend that cannot be resolved.

A route the proxy cannot carry out (an unsupported filter, say) is skipped whole and logged
with the field and the reason, once per version of the object, and counted in
``routes_refused``: it is better to route as before than half of what a route says.

Failures (API server unreachable, watch cut, the CRD not installed, RBAC) keep the routes of
the last good list in force, are logged once per distinct message, counted in
``routes_watch_errors_total`` and shown by ``routes_watch_stale``; the task lists again after a
backoff from 0.5 s to 30 s. RBAC: ``list`` and ``watch`` on httproutes.gateway.networking.k8s.io
in the namespace.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource

from sidecarkit import errors
from sidecarkit.agents.proxy import httproutes, telemetry
from sidecarkit.agents.proxy import settings as proxy_settings
from sidecarkit.k8s import cluster

__all__ = ["RouteWatch", "translate"]

log = logging.getLogger("sidecarkit.agent.proxy")

HTTPRoute = create_namespaced_resource(
    "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", verbs=["list", "watch"]
)
WATCH_SECONDS = 240
BACKOFF = (0.5, 30.0)
_UNKNOWN = "\x00unresolved:"
"""Prefix of a backend name that is no upstream: never a valid upstream name."""


def _upstream(
    ref: Mapping[str, Any], namespace: str, upstreams: tuple[proxy_settings.Upstream, ...]
) -> str | None:
    if (
        str(ref.get("group", "") or "") not in ("", "core")
        or ref.get("kind", "Service") != "Service"
    ):
        return None
    name = str(ref.get("name", ""))
    where = str(ref.get("namespace") or namespace)
    for up in upstreams:
        if up.kubernetes is not None and up.kubernetes[:2] == (name, where):
            return up.name
    for up in upstreams:
        if up.name == name and up.protocol == "http":
            return up.name
    return None


def translate(
    objects: Mapping[str, dict[str, Any]],
    upstreams: tuple[proxy_settings.Upstream, ...],
    *,
    refused: Callable[[str, str], None],
) -> list[httproutes.HTTPRoute]:
    """The routes that attach to an upstream, their Service references put in upstream
    names; ``refused(key, reason)`` for each one that cannot be carried out."""
    out = []
    for key, obj in sorted(objects.items()):
        data = copy.deepcopy(obj)
        meta = data.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        spec = data.get("spec") or {}
        parents = []
        for ref in spec.get("parentRefs") or []:
            if isinstance(ref, dict) and (name := _upstream(ref, namespace, upstreams)):
                parents.append({"kind": "Service", "name": name})
        if not parents:
            continue  # not about a service this proxy calls
        spec["parentRefs"] = parents
        for rule in spec.get("rules") or []:
            for ref in (rule or {}).get("backendRefs") or []:
                if isinstance(ref, dict):
                    found = _upstream(ref, namespace, upstreams)
                    ref["name"] = found or _UNKNOWN + str(ref.get("name"))
                    for drop in ("namespace", "group", "kind", "port"):
                        ref.pop(drop, None)
        for drop in ("status",):
            data.pop(drop, None)
        meta = {k: v for k, v in meta.items() if k in ("name", "namespace", "creationTimestamp")}
        data["metadata"] = meta
        try:
            out.append(httproutes.from_mapping(data, f"HTTPRoute {key}"))
        except ValueError as exc:
            refused(key, str(exc))
    return out


def _plain(obj: Any) -> dict[str, Any]:
    """A generic resource (a dict whose metadata may be an ``ObjectMeta``) as plain data."""
    data = dict(obj)
    meta = data.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        data["metadata"] = meta.to_dict()
    return data


class RouteWatch:
    """The HTTPRoutes of one namespace, as of the last good list+watch."""

    def __init__(
        self, namespace: str, *, metrics: telemetry.Registry, publish: Callable[[], None]
    ) -> None:
        self.namespace = namespace
        self.metrics = metrics
        self.publish = publish
        self.path = f"kubernetes:httproutes.{namespace}"
        self.objects: dict[str, dict[str, Any]] = {}
        self.last: dict[str, dict[str, Any]] | None = None
        """None until the first list."""
        self.errors = 0
        self._last_error = ""
        self._told: set[tuple[str, str]] = set()
        self._refused: set[str] = set()

    def routes(self, settings: proxy_settings.Settings) -> list[httproutes.HTTPRoute]:
        """The routes in force, for the running settings' upstreams."""
        self._refused = set()
        routes = translate(self.objects, settings.upstreams, refused=self._refuse)
        labels = {"source": self.path}
        self.metrics.set_gauge(
            "routes_refused", "HTTPRoutes skipped: the proxy cannot carry them out.", labels,
            len(self._refused),
        )  # fmt: skip
        self.metrics.set_gauge(
            "routes_from_cluster", "HTTPRoutes from the cluster in force.", labels, len(routes)
        )
        return routes

    def _refuse(self, key: str, reason: str) -> None:
        self._refused.add(key)
        version = str((self.objects.get(key, {}).get("metadata") or {}).get("resourceVersion"))
        if (key, version) not in self._told:
            self._told.add((key, version))
            log.warning("%s skipped: %s", key, reason)

    async def run(self) -> None:
        delay = BACKOFF[0]
        client: AsyncClient | None = None
        self._stale(True)
        while True:
            try:
                if client is None:
                    client = cluster.async_client(cluster.Target())
                await self._list_and_watch(client)
                delay = BACKOFF[0]
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                self._fail(f"the API server refused: {exc.status.code} {exc.status.message}")
            except httpx2.HTTPError as exc:
                self._fail(f"cannot reach the API server: {exc or type(exc).__name__}")
            except (errors.SidecarkitError, ValueError, OSError) as exc:
                self._fail(str(exc))
            else:
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF[1])

    async def _list_and_watch(self, client: AsyncClient) -> None:
        listing = client.list(HTTPRoute, namespace=self.namespace)
        objects = {}
        async for item in listing:
            data = _plain(item)
            name = (data.get("metadata") or {}).get("name")
            if name:
                objects[f"{self.namespace}/{name}"] = data
        version = listing.resourceVersion
        self.objects = objects
        self.last = objects
        self.publish()
        if self._last_error:
            log.info("%s: listed again; routes are current", self.path)
            self._last_error = ""
        self._stale(False)
        async for kind, obj in client.watch(
            HTTPRoute, namespace=self.namespace, resource_version=version,
            server_timeout=WATCH_SECONDS,
        ):  # fmt: skip
            data = _plain(obj)
            name = (data.get("metadata") or {}).get("name")
            if not name:
                continue
            key = f"{self.namespace}/{name}"
            if kind == "DELETED":
                self.objects.pop(key, None)
            elif kind in ("ADDED", "MODIFIED"):
                self.objects[key] = data
            else:
                continue
            self.publish()

    def _stale(self, stale: bool) -> None:
        self.metrics.set_gauge(
            "routes_watch_stale",
            "1 while the HTTPRoute watch fails and the last good routes are kept.",
            {"source": self.path}, int(stale),
        )  # fmt: skip

    def _fail(self, message: str) -> None:
        self.errors += 1
        self._stale(True)
        self.metrics.add_counter(
            "routes_watch_errors_total", "Failed lists or watches of HTTPRoutes.",
            {"source": self.path}, 1,
        )  # fmt: skip
        text = f"{self.path}: {message}; keeping the last routes ({len(self.objects)})"
        if text != self._last_error:
            log.warning("%s", text)
            self._last_error = text
