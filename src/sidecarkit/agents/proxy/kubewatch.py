"""A Service's endpoints followed through the API server: list its EndpointSlices, then watch.

One task per upstream. It lists the slices labelled ``kubernetes.io/service-name=SERVICE`` in the
namespace, reads the Service when the port was given as a number (to learn the port's name), and
watches from the list's resourceVersion, so that no change between the list and the watch is
lost. Every change recomputes the endpoint set with ``endpointslices.select``.

When anything fails (API server unreachable, watch cut, 410 Gone, RBAC, the Service missing)
the last good endpoint set stays in force: a control-plane outage must not take a data plane
down with it. The failure is logged once per distinct message, counted in
``discovery_errors_total`` and shown by ``discovery_stale`` (1 while the endpoints in use may
be out of date); the task lists again after a backoff that grows from 0.5 s to 30 s.

The client is made by ``sidecarkit.k8s.cluster`` as everywhere in sidecarkit: ``$KUBECONFIG``
or ``~/.kube/config`` when present, else the pod's service account (which needs ``get`` on
services and ``list``/``watch`` on endpointslices.discovery.k8s.io in the namespace).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Service
from lightkube.resources.discovery_v1 import EndpointSlice

from sidecarkit import errors
from sidecarkit.agents.proxy import endpointslices
from sidecarkit.k8s import cluster

__all__ = ["KubernetesSource"]

log = logging.getLogger("sidecarkit.agent.proxy")

SERVICE_LABEL = "kubernetes.io/service-name"
WATCH_SECONDS = 240
"""The API server ends each watch after this long and the watch resumes from where it was,
so a connection that died silently is noticed within that time."""
BACKOFF = (0.5, 30.0)


class KubernetesSource:
    """The endpoints of one Service, as of the last good list+watch."""

    def __init__(
        self,
        service: str,
        namespace: str,
        port: str,
        *,
        zone: str | None,
        publish: Callable[[list[tuple[str, int]]], None],
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.port = port
        self.zone = zone
        self.publish = publish
        self.path = f"kubernetes:{service}.{namespace}:{port}"
        """Names the source in logs and metrics."""
        self.errors = 0
        self.reported = 0
        """``errors`` already added to the metric."""
        self.stale = True
        """True until the first list, and while the watch is broken."""
        self.last: list[tuple[str, int]] | None = None
        self._slices: dict[str, dict[str, Any]] = {}
        self._port_name = "" if port.isdigit() else port
        self._last_error = ""

    async def run(self) -> None:
        """List and watch until cancelled, keeping the last good endpoints through failures."""
        delay = BACKOFF[0]
        client: AsyncClient | None = None
        while True:
            try:
                if client is None:
                    client = cluster.async_client(cluster.Target(flag=False))
                await self._list_and_watch(client)
                delay = BACKOFF[0]  # a watch the server ended normally: resume at once
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                self._fail(f"the API server refused: {exc.status.code} {exc.status.message}")
            except httpx2.HTTPError as exc:
                self._fail(f"cannot reach the API server: {exc or type(exc).__name__}")
            except errors.SidecarkitError as exc:
                self._fail(str(exc))
            except (ValueError, OSError) as exc:
                self._fail(str(exc))
            else:
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF[1])

    async def _list_and_watch(self, client: AsyncClient) -> None:
        if self.port.isdigit():
            service = await client.get(Service, self.service, namespace=self.namespace)
            self._port_name = endpointslices.port_name(
                service.to_dict(), self.port, where=f"{self.path} (Service {self.namespace}/"
                f"{self.service})",
            )  # fmt: skip
        labels: dict[str, Any] = {SERVICE_LABEL: self.service}
        listing = client.list(EndpointSlice, namespace=self.namespace, labels=labels)
        slices = {}
        async for item in listing:
            if item.metadata is not None and item.metadata.name is not None:
                slices[item.metadata.name] = item.to_dict()
        version = listing.resourceVersion  # set by every page, an empty one too
        self._slices = slices
        self._recompute()
        if self._last_error:
            log.info("%s: listed again; endpoints are current", self.path)
            self._last_error = ""
        self.stale = False
        async for kind, obj in client.watch(
            EndpointSlice,
            namespace=self.namespace,
            labels=labels,
            resource_version=version,
            server_timeout=WATCH_SECONDS,
        ):
            name = obj.metadata.name if obj.metadata is not None else None
            if name is None:
                continue
            if kind == "DELETED":
                self._slices.pop(name, None)
            elif kind in ("ADDED", "MODIFIED"):
                self._slices[name] = obj.to_dict()
            else:
                continue
            self._recompute()

    def _recompute(self) -> None:
        endpoints = endpointslices.select(self._slices.values(), self._port_name, zone=self.zone)
        if endpoints != self.last:
            self.last = endpoints
            self.publish(endpoints)

    def _fail(self, message: str) -> None:
        self.errors += 1
        self.stale = True
        text = f"{self.path}: {message}; keeping the last endpoints ({len(self.last or [])})"
        if text != self._last_error:
            log.warning("%s", text)
            self._last_error = text
