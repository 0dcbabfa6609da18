"""An optional, read-only lookup of namespace labels through the Kubernetes API.

The webhook's selectors already tell it whether the namespace opted in (the URL path says which
webhook matched), so this is off by default. When on, it reads ``GET /api/v1/namespaces/NAME``
with the pod's service-account token, caches each answer for ``ttl`` seconds, and on any
failure logs one clear line and answers None, so admission goes on without it.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

__all__ = ["SERVICE_ACCOUNT", "NamespaceLookup"]

SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
log = logging.getLogger("sidecarkit.webhook.namespaces")


@dataclass(slots=True)
class NamespaceLookup:
    """Namespace labels from the API server, cached."""

    base_url: str
    token_path: Path
    ca_path: Path
    ttl: float = 30.0
    timeout: float = 2.0
    _cache: dict[str, tuple[float, Mapping[str, str]]] = field(default_factory=dict, init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    @classmethod
    def in_cluster(cls, *, ttl: float = 30.0) -> NamespaceLookup:
        """The API server as a pod sees it (KUBERNETES_SERVICE_HOST/PORT, mounted token)."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        return cls(
            base_url=f"https://{host}:{port}",
            token_path=SERVICE_ACCOUNT / "token",
            ca_path=SERVICE_ACCOUNT / "ca.crt",
            ttl=ttl,
        )

    async def labels(self, namespace: str) -> Mapping[str, str] | None:
        """The labels of ``namespace``, or None when they could not be had."""
        now = time.monotonic()
        cached = self._cache.get(namespace)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            labels = await self._fetch(namespace)
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError, ssl.SSLError) as exc:
            log.warning(
                "namespace lookup of %r failed (%s: %s); admitting with the selectors' facts only",
                namespace,
                type(exc).__name__,
                exc,
            )
            return None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[namespace] = (now, labels)
        return labels

    async def _fetch(self, namespace: str) -> Mapping[str, str]:
        if self._session is None:
            context = ssl.create_default_context(cafile=str(self.ca_path))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context, limit=4),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        token = self.token_path.read_text().strip()
        url = f"{self.base_url}/api/v1/namespaces/{namespace}"
        async with self._session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 200:
                raise ValueError(f"API server answered HTTP {resp.status}")
            body = await resp.json()
        labels = (body.get("metadata") or {}).get("labels") or {}
        if not isinstance(labels, dict):
            raise ValueError("metadata.labels is not an object")
        return {str(k): str(v) for k, v in labels.items()}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
