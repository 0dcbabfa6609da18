"""The injector's configuration: which profiles exist, which apply by default, in which mode.

This module holds the data; ``sidecarkit.configfiles`` reads it from YAML with positions for
error messages. A Config is immutable so the webhook can swap it atomically on reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sidecarkit.injection import profiles as _profiles
from sidecarkit.k8s import workloads as _workloads

__all__ = ["Config"]


def _builtins() -> Mapping[str, _profiles.Profile]:
    return MappingProxyType(_profiles.builtin_profiles())


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the injector needs besides the pod and the facts about its cluster."""

    profiles: Mapping[str, _profiles.Profile] = field(default_factory=_builtins)
    """Every profile a pod may ask for, built-in and user-defined, by name."""
    default_profiles: tuple[str, ...] = ("logs", "metrics")
    """Profiles for an opted-in pod without a ``sidecarkit.io/profiles`` annotation."""
    mode: _profiles.Mode = _profiles.Mode.NATIVE
    """Placement when neither the pod nor the profile says: native sidecars, the Kubernetes
    default since 1.29; ``auto`` asks the facts about the cluster version."""
    workloads: _workloads.Kinds = field(default_factory=lambda: _workloads.NO_KINDS)
    """Workload kinds beyond the built-in ones: (API group, kind) -> the path from the object
    to its pod template, e.g. ``("example.com", "WebApp") -> ("spec", "podTemplate")``."""
    source: str = "the built-in config"
    """Where this config came from, for messages."""
