"""The ``sidecarkit.io/status`` annotation: a record of exactly what injection added.

It makes injection idempotent and reversible. Before injecting, the injector strips what the
record lists, renders afresh, and compares content hashes: the same hash means nothing to do
(even if the API server has since defaulted fields of our containers); a new hash means the old
parts are replaced. ``uninject`` strips and stops there. Nothing the record does not list is
ever removed, so a user's own containers, volumes, mounts and env are safe.

The annotation value is compact JSON::

    {"version": 1, "hash": "<sha256 prefix>",
     "profiles": [{"name": "logs", "mode": "native",
                   "initContainers": ["sidecarkit-logs"], "containers": [],
                   "volumes": ["sidecarkit-logs", "sidecarkit-podinfo"],
                   "revision": "<digest of the profile's parts>"}],
     "app": {"web": {"mounts": ["/var/log/app"], "env": [], "wrapped": false}},
     "annotations": [], "created": ["spec.initContainers", "spec.containers[web].volumeMounts"]}

``created`` lists the collections injection had to create, so stripping can delete them again
when they end up empty and ``uninject(inject(pod))`` equals the pod.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from sidecarkit import errors
from sidecarkit.injection import policy

__all__ = [
    "VERSION",
    "AppRecord",
    "ProfileRecord",
    "Status",
    "decode",
    "encode",
    "same",
    "strip",
]

VERSION: Final = 1

#: The wrapper put around an app container's command in legacy mode for run-to-completion pods.
#: ``$0`` is the container name. The app runs in the background so that the shell, which is the
#: container's PID 1 and would ignore SIGTERM, can forward signals; ``<&0`` keeps its stdin.
#: When the app exits, its exit code is written where the sidecars wait for it, and passed on.
WRAP_SCRIPT: Final = (
    '"$@" <&0 & pid=$!; '
    "trap 'kill -TERM \"$pid\" 2>/dev/null' TERM INT; "
    'while :; do wait "$pid"; rc=$?; kill -0 "$pid" 2>/dev/null || break; done; '
    'echo "$rc" > "/run/sidecarkit/$0.done"; exit "$rc"'
)


def wrapper(container_name: str) -> list[str]:
    """The command prefix that wraps an app container in a run-to-completion legacy pod."""
    return ["/bin/sh", "-c", WRAP_SCRIPT, container_name]


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    name: str
    mode: str
    init_containers: tuple[str, ...]
    containers: tuple[str, ...]
    volumes: tuple[str, ...]
    revision: str = ""
    """A digest of what the profile inserted (its parts, as rendered for this pod, and its
    mode): a profile or setting change shows as a new revision. Empty in older records."""


@dataclass(frozen=True, slots=True)
class AppRecord:
    """What injection added to one of the user's containers."""

    mounts: tuple[str, ...]
    """mountPaths of the volumeMounts added."""
    env: tuple[str, ...]
    """Names of the env entries added."""
    wrapped: bool
    """Whether the command was wrapped (legacy mode, run-to-completion pods)."""


@dataclass(frozen=True, slots=True)
class Status:
    hash: str
    profiles: tuple[ProfileRecord, ...]
    app: tuple[tuple[str, AppRecord], ...]
    annotations: tuple[str, ...]
    """Annotations other than the status itself that injection added."""
    created: tuple[str, ...]


def same(old: Status, new: Status) -> bool:
    """Whether re-injecting would change nothing: the same parts, given to the same containers.

    The content hash covers what is inserted, not which app containers get the mounts and env.
    A webhook called again (``reinvocationPolicy: IfNeeded``) after another one added a
    container must give that container what the others got, so the app records count too.
    """
    return old.hash == new.hash and old.app == new.app


def encode(status: Status) -> str:
    data = {
        "version": VERSION,
        "hash": status.hash,
        "profiles": [
            {
                "name": p.name,
                "mode": p.mode,
                "initContainers": list(p.init_containers),
                "containers": list(p.containers),
                "volumes": list(p.volumes),
            }
            | ({"revision": p.revision} if p.revision else {})
            for p in status.profiles
        ],
        "app": {
            name: {"mounts": list(r.mounts), "env": list(r.env), "wrapped": r.wrapped}
            for name, r in status.app
        },
        "annotations": list(status.annotations),
        "created": list(status.created),
    }
    return orjson.dumps(data).decode()


def decode(value: object, *, target: str) -> Status:
    """Read the annotation, or explain why it cannot be trusted."""
    fix = (
        "; it is written by sidecarkit and must not be edited: restore it, or remove it "
        "together with the sidecars it lists"
    )
    try:
        # str() because YAML loaders hand over str subclasses, which orjson refuses.
        data = orjson.loads(str(value) if isinstance(value, str) else b"")
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r} is not {VERSION}")
        profiles = tuple(
            ProfileRecord(
                name=_str(p["name"]),
                mode=_str(p["mode"]),
                init_containers=_strs(p["initContainers"]),
                containers=_strs(p["containers"]),
                volumes=_strs(p["volumes"]),
                revision=_str(p.get("revision", "")),
            )
            for p in data["profiles"]
        )
        app = tuple(
            (
                _str(name),
                AppRecord(_strs(r["mounts"]), _strs(r["env"]), bool(r["wrapped"])),
            )
            for name, r in data["app"].items()
        )
        return Status(
            hash=_str(data["hash"]),
            profiles=profiles,
            app=app,
            annotations=_strs(data["annotations"]),
            created=_strs(data["created"]),
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise errors.AnnotationError(
            f"{target}: annotation {policy.STATUS_ANNOTATION} is not valid ({exc}){fix}"
        ) from exc


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return tuple(_str(v) for v in value)


def strip(template: MutableMapping[str, Any], status: Status) -> None:
    """Remove from ``template`` (in place) exactly what ``status`` records, and the record."""
    spec = template["spec"]
    injected_containers = {n for p in status.profiles for n in (*p.init_containers, *p.containers)}
    volumes = {v for p in status.profiles for v in p.volumes}
    for key in ("initContainers", "containers"):
        _remove_named(spec.get(key), injected_containers)
    _remove_named(spec.get("volumes"), volumes)

    records = dict(status.app)
    for container in _containers(spec.get("containers")):
        record = records.get(str(container.get("name")))
        if record is None:
            continue
        mounts = container.get("volumeMounts")
        if isinstance(mounts, list):
            mounts[:] = [
                m
                for m in mounts
                if not (isinstance(m, dict) and m.get("mountPath") in record.mounts)
            ]
        _remove_named(container.get("env"), set(record.env))
        command = container.get("command")
        if record.wrapped and isinstance(command, list):
            prefix = wrapper(container["name"])
            if list(command[: len(prefix)]) == prefix:
                del command[: len(prefix)]

    metadata = template.get("metadata") or {}
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        for key in (*status.annotations, policy.STATUS_ANNOTATION):
            annotations.pop(key, None)
    _drop_created(template, status.created)


def _containers(items: object) -> Iterable[MutableMapping[str, Any]]:
    if isinstance(items, list):
        yield from (c for c in items if isinstance(c, dict))


def _remove_named(items: object, names: set[str]) -> None:
    if isinstance(items, list) and names:
        items[:] = [i for i in items if not (isinstance(i, dict) and i.get("name") in names)]


def _drop_created(template: MutableMapping[str, Any], created: Iterable[str]) -> None:
    """Delete the collections injection created, where they are empty again.

    Paths are ``spec.X``, ``metadata``, ``metadata.annotations`` or ``spec.containers[NAME].X``;
    deeper paths go first so that a created ``metadata`` is judged after its annotations.
    """
    for path in sorted(created, key=lambda p: -p.count(".")):
        parent: Any
        if path.startswith("spec.containers["):
            name, _, key = path[len("spec.containers[") :].partition("].")
            parent = next(
                (
                    c
                    for c in _containers(template["spec"].get("containers"))
                    if c.get("name") == name
                ),
                None,
            )
        else:
            head, _, key = path.rpartition(".")
            parent = template.get(head) if head else template
        if isinstance(parent, dict) and key in parent and not parent[key]:
            del parent[key]
