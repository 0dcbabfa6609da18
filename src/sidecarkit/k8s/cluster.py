"""Access to a cluster's API server: the one place that loads kubeconfig and makes clients.

Everything in sidecarkit that talks to a cluster gets its client here, so the rules for finding
credentials are the same everywhere and match kubectl's: an explicit ``--kubeconfig`` first, then
``$KUBECONFIG``, then ``~/.kube/config``, and only when none of those exists the pod's own service
account. The client library is lightkube (docs/architecture.md says why); its errors are turned
into :class:`sidecarkit.errors.ConfigError` with the file, the context and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx2  # lightkube's HTTP library: its timeouts are this library's
import lightkube
from lightkube.config import kubeconfig
from lightkube.core import exceptions as lightkube_errors
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from sidecarkit import errors

__all__ = ["FIELD_MANAGER", "Target", "async_client", "client", "load"]

FIELD_MANAGER: Final = "sidecarkit"
DEFAULT_KUBECONFIG: Final = Path("~/.kube/config")


@dataclass(frozen=True, slots=True)
class Target:
    """Which cluster to talk to; the CLI maps ``--kubeconfig`` and ``--context`` onto these."""

    kubeconfig: Path | None = None
    """The kubeconfig file; None looks where kubectl looks (``$KUBECONFIG``, ``~/.kube/config``)."""
    context: str | None = None
    """The context in it; None means its ``current-context``."""
    timeout: float = 10.0
    """Seconds for one request; the API server answers reads in milliseconds."""
    flag: bool = True
    """Whether the command has a ``--kubeconfig`` option to suggest when no kubeconfig is found
    (an agent reads only ``$KUBECONFIG`` and the pod's service account)."""


def _candidates(target: Target) -> list[Path]:
    if target.kubeconfig is not None:
        return [target.kubeconfig]
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        # kubectl merges a list; we take the first file that exists, which is where kubectl
        # finds current-context in the common case of one file per cluster.
        return [Path(part) for part in listed.split(os.pathsep) if part]
    return [DEFAULT_KUBECONFIG]


def load(target: Target) -> kubeconfig.SingleConfig:
    """The cluster, user and namespace of ``target``'s context, checked before any request."""
    paths = [path.expanduser() for path in _candidates(target)]
    found = next((path for path in paths if path.is_file()), None)
    if found is None:
        if target.kubeconfig is None and target.context is None:
            try:
                config = kubeconfig.KubeConfig.from_service_account()
            except (lightkube_errors.ConfigError, KeyError):
                pass
            else:
                single = config.get()
                assert single is not None  # from_one always sets current-context
                return single
        where = " or ".join(str(path) for path in paths)
        raise errors.ConfigError(
            f"no kubeconfig at {where}; {'give --kubeconfig FILE, ' if target.flag else ''}"
            "set KUBECONFIG, "
            "or run inside a pod with a service account"
        )
    try:
        document = YAML(typ="safe").load(found.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"cannot read kubeconfig {found}: {exc}") from exc
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise errors.ConfigError(
            f"{found}{where}: not YAML ({getattr(exc, 'problem', None) or exc}); "
            "check it with `kubectl config view --kubeconfig FILE`"
        ) from exc
    if not isinstance(document, dict) or not isinstance(document.get("contexts"), list):
        raise errors.ConfigError(
            f"{found}: not a kubeconfig (no `contexts:` list); "
            "check it with `kubectl config view --kubeconfig FILE`"
        )
    try:
        single = kubeconfig.KubeConfig.from_dict(document, fname=found).get(target.context)
    except lightkube_errors.ConfigError as exc:
        raise errors.ConfigError(f"{found}: {exc}; pick one with --context NAME") from exc
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise errors.ConfigError(
            f"{found}: not a kubeconfig ({type(exc).__name__}: {exc}); "
            "check it with `kubectl config view --kubeconfig FILE`"
        ) from exc
    assert single is not None  # get() without a default raises instead of answering None
    return single


def client(target: Target, *, dry_run: bool = False) -> lightkube.Client:
    """A blocking client for ``target``, for the CLI's one-shot reads and writes."""
    return lightkube.Client(
        load(target),
        field_manager=FIELD_MANAGER,
        dry_run=dry_run,
        timeout=_timeout(target),
    )


def async_client(target: Target, *, dry_run: bool = False) -> lightkube.AsyncClient:
    """An asyncio client for ``target``, for the long-running shells (webhook, controllers)."""
    return lightkube.AsyncClient(
        load(target),
        field_manager=FIELD_MANAGER,
        dry_run=dry_run,
        timeout=_timeout(target),
    )


def _timeout(target: Target) -> httpx2.Timeout:
    return httpx2.Timeout(target.timeout)
