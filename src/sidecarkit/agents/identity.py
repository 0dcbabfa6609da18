"""What every agent adds to what it ships: the pod's identity, and labels given by the user."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["IDENTITY_ENV", "identity_labels", "parse_labels"]

IDENTITY_ENV: Final = (
    ("pod", "SIDECARKIT_POD_NAME"),
    ("namespace", "SIDECARKIT_POD_NAMESPACE"),
    ("node", "SIDECARKIT_NODE_NAME"),
    ("container", "SIDECARKIT_APP_CONTAINER"),
)
"""Label -> the Downward API env var the injection profiles set for it."""


def identity_labels(env: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The pod's identity from the Downward API env, as labels."""
    env = os.environ if env is None else env
    return tuple((label, env[var]) for label, var in IDENTITY_ENV if env.get(var))


def parse_labels(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """Static labels from YAML (a mapping) or a flag or env var (``k=v,k=v``)."""
    if isinstance(value, str):
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError(f"{where}: labels are key=value,key=value")
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: labels must be a mapping of names to values")
    return tuple((str(k), str(v)) for k, v in value.items())
