"""The types of every pod field the injector reads, checked before it reads them.

A manifest is user input, and YAML makes wrong types easy (``env: x``, ``mountPath: []``,
``containers: 5``). The conflict checks, placing and stripping compare, hash and append to
these fields; a wrong type there would surface as a TypeError deep in the core (and, through
the webhook, as an internal error). Checking them all here, in one place, turns each into an
error that names the field's full path and what it must be, before anything is changed.

Only the fields the injector reads are checked; the API server validates the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sidecarkit import errors

__all__ = ["check"]

_CONTAINER_LISTS: Final = ("containers", "initContainers", "ephemeralContainers")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, str):
        return f"the string {str(value)[:40]!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"a {type(value).__name__}"


class _Checker:
    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        self.target = target

    def fail(self, path: str, expected: str, value: object) -> errors.ManifestError:
        return errors.ManifestError(
            f"{self.target}: {path} must be {expected}, got {_kind(value)}; fix the manifest"
        )

    def items(self, node: Mapping[str, Any], key: str, path: str) -> list[Mapping[str, Any]]:
        """``node[key]`` as a list of mappings (absent or null: empty)."""
        value = node.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{path}.{key}", "a list", value)
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{path}.{key}[{index}]", "a mapping", item)
        return value

    def string(self, node: Mapping[str, Any], key: str, path: str, *, required: bool) -> None:
        value = node.get(key)
        if value is None and not required:
            return
        if not isinstance(value, str) or (required and not value):
            raise self.fail(f"{path}.{key}", "a non-empty string", value)

    def container(self, c: Mapping[str, Any], path: str) -> None:
        self.string(c, "name", path, required=True)
        self.string(c, "restartPolicy", path, required=False)
        for index, port in enumerate(self.items(c, "ports", path)):
            where = f"{path}.ports[{index}]"
            number = port.get("containerPort")
            if not isinstance(number, int) or isinstance(number, bool):
                raise self.fail(f"{where}.containerPort", "a port number", number)
            self.string(port, "protocol", where, required=False)
        for index, mount in enumerate(self.items(c, "volumeMounts", path)):
            self.string(mount, "name", f"{path}.volumeMounts[{index}]", required=True)
            self.string(mount, "mountPath", f"{path}.volumeMounts[{index}]", required=True)
        for index, env in enumerate(self.items(c, "env", path)):
            self.string(env, "name", f"{path}.env[{index}]", required=True)
        command = c.get("command")
        if command is not None:
            if not isinstance(command, list):
                raise self.fail(f"{path}.command", "a list of strings", command)
            for index, arg in enumerate(command):
                if not isinstance(arg, str):
                    raise self.fail(f"{path}.command[{index}]", "a string", arg)


def check(template: Mapping[str, Any], *, path: str, target: str) -> None:
    """Raise ManifestError naming the first field of ``template`` of the wrong type.

    ``path`` is where the template sits in its object (``spec.template``, or empty for a
    Pod), so that the error gives the full path the user sees in the manifest. A pod must
    have at least one container: injecting into one that has none would produce a pod the
    API server rejects, with sidecars but no app.
    """
    checker = _Checker(target)
    prefix = f"{path}." if path else ""
    metadata = template.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise checker.fail(f"{prefix}metadata", "a mapping", metadata)
        for key in ("labels", "annotations"):
            value = metadata.get(key)
            if value is not None and not isinstance(value, dict):
                raise checker.fail(f"{prefix}metadata.{key}", "a mapping of strings", value)
    spec = template["spec"]
    where = f"{prefix}spec"
    host_network = spec.get("hostNetwork")
    if host_network is not None and not isinstance(host_network, bool):
        raise checker.fail(f"{where}.hostNetwork", "true or false", host_network)
    checker.string(spec, "restartPolicy", where, required=False)
    for key in _CONTAINER_LISTS:
        for index, c in enumerate(checker.items(spec, key, where)):
            checker.container(c, f"{where}.{key}[{index}]")
    if not spec.get("containers"):
        raise errors.ManifestError(
            f"{target}: {where}.containers must list at least one container, got "
            f"{_kind(spec.get('containers'))}; a pod without containers is invalid, so add "
            "the app's container"
        )
    for index, volume in enumerate(checker.items(spec, "volumes", where)):
        checker.string(volume, "name", f"{where}.volumes[{index}]", required=True)
