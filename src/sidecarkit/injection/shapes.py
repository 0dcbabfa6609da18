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


def _is_name(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _mappings(value: object) -> bool:
    """Whether ``value`` is absent or a list of mappings, as ``_Checker.items`` accepts."""
    return value is None or (
        isinstance(value, list) and all(isinstance(item, dict) for item in value)
    )


def _container_fits(c: Mapping[str, Any]) -> bool:
    """Whether ``_Checker.container`` accepts ``c``: the same rules in one quick pass.

    The webhook checks every container of every pod, and a fat pod has hundreds of env vars and
    mounts, so the loops are written out; only when this says no does the checker walk the pod
    again to name the field.
    """
    name, policy = c.get("name"), c.get("restartPolicy")
    if not isinstance(name, str) or not name:
        return False
    if policy is not None and not isinstance(policy, str):
        return False
    ports = c.get("ports")
    if ports is not None:
        if not isinstance(ports, list):
            return False
        for port in ports:
            if not isinstance(port, dict):
                return False
            number, protocol = port.get("containerPort"), port.get("protocol")
            if not isinstance(number, int) or isinstance(number, bool):
                return False
            if protocol is not None and not isinstance(protocol, str):
                return False
    mounts = c.get("volumeMounts")
    if mounts is not None:
        if not isinstance(mounts, list):
            return False
        for mount in mounts:
            if not isinstance(mount, dict):
                return False
            name, path = mount.get("name"), mount.get("mountPath")
            if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
                return False
    env = c.get("env")
    if env is not None:
        if not isinstance(env, list):
            return False
        for item in env:
            if not isinstance(item, dict):
                return False
            name = item.get("name")
            if not isinstance(name, str) or not name:
                return False
    command = c.get("command")
    return command is None or (
        isinstance(command, list) and all(isinstance(arg, str) for arg in command)
    )


def _spec_fits(spec: Mapping[str, Any]) -> bool:
    """Whether the containers and volumes of ``spec`` pass ``check`` (see ``_container_fits``)."""
    for key in _CONTAINER_LISTS:
        containers = spec.get(key)
        if not _mappings(containers):
            return False
        for c in containers or ():
            if not _container_fits(c):
                return False
    volumes = spec.get("volumes")
    return _mappings(volumes) and all(_is_name(v.get("name")) for v in volumes or ())


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
    fits = _spec_fits(spec)
    if not fits:  # find the first field that does not fit, to name it
        for key in _CONTAINER_LISTS:
            for index, c in enumerate(checker.items(spec, key, where)):
                checker.container(c, f"{where}.{key}[{index}]")
    if not spec.get("containers"):
        raise errors.ManifestError(
            f"{target}: {where}.containers must list at least one container, got "
            f"{_kind(spec.get('containers'))}; a pod without containers is invalid, so add "
            "the app's container"
        )
    if not fits:
        for index, volume in enumerate(checker.items(spec, "volumes", where)):
            checker.string(volume, "name", f"{where}.volumes[{index}]", required=True)
