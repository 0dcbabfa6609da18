"""What a container's process gets: its environment and its argv, as the kubelet computes them.

Environment, in order: ``envFrom`` (ConfigMaps and Secrets, with ``prefix``), then ``env``, a
later entry overriding an earlier one. Values may reference earlier variables as ``$(NAME)``;
``command`` and ``args`` may reference any of them. ``$$`` is a literal ``$``; a reference to an
unknown variable is left as written. ``valueFrom`` reads the Downward API (``fieldRef``,
``resourceFieldRef``) and ConfigMaps and Secrets given in the same manifest stream
(``configMapKeyRef``, ``secretKeyRef``); a missing one that is not ``optional`` is an error
naming the field.

Pure: the facts a local run supplies (pod IP, node name, allocatable CPU and memory) come in as
a ``Host``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from sidecarkit.runner import specs

__all__ = ["Host", "Objects", "command_line", "environment", "expand", "quantity"]

_ENV_NAME: Final = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_SUFFIXES: Final = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


class Host(NamedTuple):
    """Facts about the machine a local pod runs on (a NamedTuple for start-up, as in ``specs``)."""

    pod_ip: str = "127.0.0.1"
    host_ip: str = "127.0.0.1"
    node_name: str = "localhost"
    cpus: float = 1.0
    memory: int = 1 << 30
    uid: str = "00000000-0000-0000-0000-000000000000"


class Objects(NamedTuple):
    """ConfigMaps and Secrets of the manifest stream, by name, as plain strings."""

    config_maps: Mapping[str, Mapping[str, str]] = specs.NOTHING
    secrets: Mapping[str, Mapping[str, str]] = specs.NOTHING

    @classmethod
    def from_documents(cls, documents: Sequence[Any]) -> Objects:
        config_maps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, str]] = {}
        for doc in documents:
            if not isinstance(doc, dict):
                continue
            name = str((doc.get("metadata") or {}).get("name") or "")
            if doc.get("kind") == "ConfigMap":
                config_maps[name] = {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
            elif doc.get("kind") == "Secret":
                data = {}
                for k, v in (doc.get("data") or {}).items():
                    try:
                        data[str(k)] = base64.b64decode(str(v), validate=True).decode()
                    except (binascii.Error, UnicodeDecodeError):
                        data[str(k)] = ""
                data.update({str(k): str(v) for k, v in (doc.get("stringData") or {}).items()})
                secrets[name] = data
        return cls(config_maps, secrets)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion of ``text`` with ``env``."""
    if "$" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "$" or i + 1 >= n:
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def quantity(text: str) -> float:
    """A Kubernetes quantity (``500m``, ``128Mi``, ``1.5``, ``1e3``) as a number."""
    text = text.strip()
    for suffix in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text)


def _field_ref(path: str, pod: specs.PodSpec, host: Host) -> str | None:
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": host.uid,
        "spec.nodeName": pod.node_name or host.node_name,
        "spec.serviceAccountName": pod.service_account,
        "status.podIP": host.pod_ip,
        "status.podIPs": host.pod_ip,
        "status.hostIP": host.host_ip,
        "status.hostIPs": host.host_ip,
    }
    if path in simple:
        return simple[path]
    for prefix, table in (
        ("metadata.labels", pod.labels),
        ("metadata.annotations", pod.annotations),
    ):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return table.get(path[len(prefix) + 2 : -2], "")
    return None


def _resource_ref(ref: Mapping[str, Any], container: specs.ContainerSpec, host: Host) -> str | None:
    resource = str(ref.get("resource") or "")
    kind, _, what = resource.partition(".")
    if kind not in ("limits", "requests") or what not in ("cpu", "memory", "ephemeral-storage"):
        return None
    table = container.resources.get(kind) or {}
    raw = table.get(what) or (container.resources.get("limits") or {}).get(what)
    if raw is None:
        value = host.cpus if what == "cpu" else float(host.memory)
    else:
        value = quantity(str(raw))
    divisor = quantity(str(ref.get("divisor") or "1"))
    return str(math.ceil(value / divisor - 1e-9))


def environment(
    container: specs.ContainerSpec,
    pod: specs.PodSpec,
    *,
    where: str,
    objects: Objects,
    host: Host,
) -> dict[str, str]:
    """The container's environment; SpecError names every reference that cannot be resolved."""
    env: dict[str, str] = {}
    problems: list[str] = []
    for i, source in enumerate(container.env_from):
        prefix = str(source.get("prefix") or "")
        for kind, table in (("configMapRef", objects.config_maps), ("secretRef", objects.secrets)):
            ref = source.get(kind)
            if not isinstance(ref, dict):
                continue
            data = table.get(str(ref.get("name")))
            if data is None:
                if not ref.get("optional"):
                    problems.append(
                        f"{where}.envFrom[{i}].{kind}: no {kind[:-3]} "
                        f"{ref.get('name')!r} in the manifests; add it or mark it "
                        "optional"
                    )
                continue
            for key, text in data.items():
                if _ENV_NAME.fullmatch(prefix + key):
                    env[prefix + key] = text
    for i, var in enumerate(container.env):
        path = f"{where}.env[{i}]"
        if var.source is None:
            env[var.name] = expand(var.value or "", env)
            continue
        source = var.source
        value: str | None = None
        if "fieldRef" in source:
            field_path = str((source["fieldRef"] or {}).get("fieldPath") or "")
            value = _field_ref(field_path, pod, host)
            if value is None:
                problems.append(
                    f"{path}.valueFrom.fieldRef.fieldPath: {field_path!r} is not a "
                    "Downward API field"
                )
        elif "resourceFieldRef" in source:
            value = _resource_ref(source["resourceFieldRef"] or {}, container, host)
            if value is None:
                problems.append(
                    f"{path}.valueFrom.resourceFieldRef.resource: not a "
                    "limits/requests cpu, memory or ephemeral-storage"
                )
        else:
            for kind, table in (
                ("configMapKeyRef", objects.config_maps),
                ("secretKeyRef", objects.secrets),
            ):
                ref = source.get(kind)
                if not isinstance(ref, dict):
                    continue
                found = (table.get(str(ref.get("name"))) or {}).get(str(ref.get("key")))
                if found is None and not ref.get("optional"):
                    problems.append(
                        f"{path}.valueFrom.{kind}: no key {ref.get('key')!r} in "
                        f"{kind[:-6]} {ref.get('name')!r}; add it or mark it optional"
                    )
                value = found
                break
            else:
                problems.append(
                    f"{path}.valueFrom: needs fieldRef, resourceFieldRef, "
                    "configMapKeyRef or secretKeyRef"
                )
        if value is not None:
            env[var.name] = value
    if problems:
        raise specs.SpecError(problems)
    return env


def command_line(
    container: specs.ContainerSpec,
    env: Mapping[str, str],
    *,
    where: str,
    override: Sequence[str] | None = None,
    own_image: bool = False,
    own_command: Sequence[str] = ("sidecarkit",),
) -> list[str]:
    """The argv to run, as the kubelet builds it from ``command`` and ``args``.

    Images are not pulled here, so a container without ``command`` needs ``override`` (from
    ``--command NAME=...``), or to be sidecarkit's own image, which runs this installation.
    """
    command: Sequence[str] = container.command
    if override is not None:
        command = override
    elif not command:
        if own_image:
            command = own_command
        else:
            raise specs.SpecError(
                [
                    f"{where}.command: image {container.image!r} cannot be pulled here, so the "
                    f"container needs a command; give it in the manifest or with "
                    f"--command {container.name}='program args'"
                ]
            )
    return [expand(part, env) for part in (*command, *container.args)]
