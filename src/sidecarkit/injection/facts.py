"""What the injector knows about the cluster: offline, whatever the user tells it.

The webhook learns these from the request (namespace) and optionally the API server (namespace
labels); the offline CLI from ``--namespace-labels``, ``--kubernetes-version`` or a facts file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from sidecarkit import errors

__all__ = ["NATIVE_SIDECARS_SINCE", "Facts", "parse_version"]

#: Native sidecars are on by default from Kubernetes 1.29 (beta), stable in 1.33.
NATIVE_SIDECARS_SINCE: Final = (1, 29)

_VERSION: Final = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$")


def parse_version(text: str) -> tuple[int, int]:
    """``1.29``, ``v1.29.3`` or ``1.29.3-gke.100`` as ``(1, 29)``."""
    match = _VERSION.match(text.strip())
    if not match:
        raise errors.ConfigError(
            f"kubernetes version {text!r} is not a version; give it as 1.29 or v1.29.3"
        )
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True, slots=True)
class Facts:
    """Facts about the cluster a pod will run in."""

    kubernetes_version: tuple[int, int] | None = None
    """(major, minor) of the kubelets; None when unknown, and then ``auto`` picks native."""
    namespace_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Labels of the pod's namespace; ``sidecarkit.io/inject`` there opts every pod in or out."""
