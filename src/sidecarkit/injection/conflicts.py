"""Conflicts between what profiles add and what the pod already has, or between profiles.

A conflict is always an error: overwriting a user's container, port, volume, mount or env var
silently is the one thing an injector must never do. Two profiles may declare the same volume,
app mount or app env var if they declare it identically (they share it); anything else with the
same name is a conflict. Every conflict found is reported at once, so one run shows them all.

Most pods conflict with nothing. ``summarize`` turns what a set of rendered profiles adds into
sets once, and ``clashes`` then tells in one pass over the pod whether ``check`` can find
anything; only then does the full check run, to name every conflict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecarkit import errors
from sidecarkit.injection import profiles

__all__ = ["Added", "Rendered", "check", "clashes", "summarize"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """One profile's parts, rendered for one pod in one mode."""

    profile: str
    mode: profiles.Mode
    parts: profiles.Parts


def _items(value: object) -> list[Mapping[str, Any]]:
    # dict and list, not the ABCs: ruamel's round-trip types subclass them, and this is hot.
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def _values(value: object, key: str) -> list[object]:
    """``item.get(key)`` of each mapping in ``value`` if it is a list, in one pass (a list
    comprehension: resuming a generator for each of a fat pod's env vars cost twice as much)."""
    if isinstance(value, list):
        return [item.get(key) for item in value if isinstance(item, dict)]
    return []


def _running(spec: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Containers of the pod that run at the same time as sidecars: they share ports."""
    yield from _items(spec.get("containers"))
    yield from (c for c in _items(spec.get("initContainers")) if c.get("restartPolicy") == "Always")


def check(spec: Mapping[str, Any], rendered: Sequence[Rendered], *, target: str) -> None:
    """Raise ConflictError listing every conflict, or return."""
    problems: list[str] = []
    pod_names = {
        c.get("name")
        for key in ("containers", "initContainers", "ephemeralContainers")
        for c in _items(spec.get(key))
    }
    pod_ports = {
        (p.get("containerPort"), p.get("protocol") or "TCP"): c.get("name")
        for c in _running(spec)
        for p in _items(c.get("ports"))
    }
    pod_volumes = {v.get("name") for v in _items(spec.get("volumes"))}

    names: dict[str, str] = {}
    ports: dict[tuple[object, object], str] = {}
    volumes: dict[str, tuple[str, Any]] = {}
    for r in rendered:
        for c in (*r.parts.init_containers, *r.parts.sidecars):
            name = c.get("name")
            if name in pod_names:
                problems.append(f"profile {r.profile} adds container {name!r}, which the pod has")
            elif name in names:
                problems.append(
                    f"profiles {names[name]} and {r.profile} both add container {name!r}"
                    + _one_proxy_hint(names[name], r.profile)
                )
            names[name] = r.profile
        for c in r.parts.sidecars:
            for p in _items(c.get("ports")):
                port = (p.get("containerPort"), p.get("protocol") or "TCP")
                what = f"port {port[0]}/{port[1]}"
                if port in pod_ports:
                    problems.append(
                        f"profile {r.profile} listens on {what}, which container "
                        f"{pod_ports[port]!r} declares"
                    )
                elif port in ports:
                    problems.append(f"profiles {ports[port]} and {r.profile} both use {what}")
                ports[port] = r.profile
        for v in r.parts.volumes:
            name = v.get("name")
            if name in pod_volumes:
                problems.append(f"profile {r.profile} adds volume {name!r}, which the pod has")
            elif name in volumes and volumes[name][1] != v:
                problems.append(
                    f"profiles {volumes[name][0]} and {r.profile} define volume {name!r} "
                    "differently"
                )
            volumes.setdefault(name, (r.profile, v))
        known = pod_volumes | set(volumes)
        for c in (*r.parts.init_containers, *r.parts.sidecars):
            for m in _items(c.get("volumeMounts")):
                if m.get("name") not in known:
                    problems.append(
                        f"profile {r.profile} mounts volume {m.get('name')!r} into "
                        f"{c.get('name')!r}, but neither the profile nor the pod defines it"
                    )

    problems += _app_conflicts(
        spec, rendered, "app_mounts", "volumeMounts", "mountPath", "mount at"
    )
    problems += _app_conflicts(spec, rendered, "app_env", "env", "name", "env var")
    if problems:
        raise errors.ConflictError(
            f"{target}: injection would overwrite what is there: "
            + "; ".join(problems)
            + ". Rename the pod's item, or change the profile's setting with a "
            "sidecarkit.io/<profile>.<key> annotation"
        )


def _one_proxy_hint(first: str, second: str) -> str:
    """``auth`` is the proxy with a policy; ``mtls`` and ``proxy`` take the same ``policy`` and
    ``secret`` settings, so a pod that wants both says so on the other profile."""
    if "auth" not in (first, second) or {first, second} - {"auth", "mtls", "proxy"}:
        return ""
    other = second if first == "auth" else first
    return (
        f" (one proxy per pod: drop auth and give sidecarkit.io/{other}.policy and "
        f"sidecarkit.io/{other}.secret, which do what auth does)"
    )


def _app_conflicts(
    spec: Mapping[str, Any],
    rendered: Sequence[Rendered],
    part: str,
    field: str,
    key: str,
    noun: str,
) -> list[str]:
    problems: list[str] = []
    added: dict[object, tuple[str, Mapping[str, Any]]] = {}
    for r in rendered:
        for item in getattr(r.parts, part):
            ident = item.get(key)
            if ident in added and added[ident][1] != item:
                problems.append(
                    f"profiles {added[ident][0]} and {r.profile} both add {noun} {ident!r}"
                )
            added.setdefault(ident, (r.profile, item))
    for c in _items(spec.get("containers")):
        have = {i.get(key) for i in _items(c.get(field))}
        for ident in sorted(added.keys() & have, key=str):
            problems.append(
                f"profile {added[ident][0]} adds {noun} {ident!r} to container "
                f"{c.get('name')!r}, which has one"
            )
    return problems


@dataclass(frozen=True, slots=True)
class Added:
    """What rendered profiles add that a pod could already have, by identifying value.

    Mappings rather than sets: ``x in set`` quietly accepts a set ``x``, which ``check``
    cannot hash, and the two must agree on every pod.
    """

    names: Mapping[object, None]
    """Names of the containers added, init and sidecar."""
    ports: Mapping[tuple[object, object], None]
    """(containerPort, protocol) of the sidecars."""
    volumes: Mapping[object, None]
    """Names of the volumes added."""
    mounts: Mapping[object, None]
    """mountPaths of the volumeMounts added to the app's containers."""
    env: Mapping[object, None]
    """Names of the env entries added to the app's containers."""


def summarize(rendered: Sequence[Rendered]) -> Added | None:
    """The sets ``clashes`` checks pods against, or None when every pod needs the full check.

    That is when the profiles conflict among themselves, or mount a volume that none of them
    defines (only the pod can tell whether it has it): then ``check`` finds problems that do
    not show as an overlap of two sets.
    """
    try:
        check({}, rendered, target="")
        return Added(
            names=dict.fromkeys(
                c.get("name")
                for r in rendered
                for c in (*r.parts.init_containers, *r.parts.sidecars)
            ),
            ports=dict.fromkeys(
                (p.get("containerPort"), p.get("protocol") or "TCP")
                for r in rendered
                for c in r.parts.sidecars
                for p in _items(c.get("ports"))
            ),
            volumes=dict.fromkeys(v.get("name") for r in rendered for v in r.parts.volumes),
            mounts=dict.fromkeys(m.get("mountPath") for r in rendered for m in r.parts.app_mounts),
            env=dict.fromkeys(e.get("name") for r in rendered for e in r.parts.app_env),
        )
    except Exception:  # whatever it is, the full check meets it again and says it
        return None


def clashes(spec: Mapping[str, Any], added: Added) -> bool:
    """Whether ``check`` on ``spec`` may find a conflict with the profiles ``added`` sums up.

    False means it finds none. The pod's values are hashed here as ``check`` hashes them, so a
    pod whose values ``check`` cannot handle is sent to it too (True), and fails there as it
    always has. Each collection is one ``isdisjoint`` over the pod's values: a fat pod has
    hundreds of env vars and mounts, and this runs for every pod the webhook sees. The app's
    mounts and env vars are read only when the profiles add some: ``check`` compares them with
    nothing else, and ``shapes.check`` has already made them strings.
    """
    try:
        containers = _items(spec.get("containers"))
        init_containers = _items(spec.get("initContainers"))
        everyone = (*containers, *init_containers, *_items(spec.get("ephemeralContainers")))
        if not added.names.keys().isdisjoint(c.get("name") for c in everyone):
            return True
        running = (*containers, *(c for c in init_containers if c.get("restartPolicy") == "Always"))
        if not added.ports.keys().isdisjoint(
            (p.get("containerPort"), p.get("protocol") or "TCP")
            for c in running
            for p in _items(c.get("ports"))
        ):
            return True
        if not added.volumes.keys().isdisjoint(v.get("name") for v in _items(spec.get("volumes"))):
            return True
        mounts, env = added.mounts.keys(), added.env.keys()
        for c in containers if mounts or env else ():
            if mounts and not mounts.isdisjoint(_values(c.get("volumeMounts"), "mountPath")):
                return True
            if env and not env.isdisjoint(_values(c.get("env"), "name")):
                return True
    except TypeError:  # an unhashable value: let check meet it
        return True
    return False
