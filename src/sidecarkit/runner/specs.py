"""A Pod spec as the local runner understands it: typed, checked, before anything starts.

``read_pod`` takes the pod template of a manifest (a Pod, or any workload's template) and
returns frozen specs, or raises ``SpecError`` listing every problem with its field path, so a
bad manifest fails at once and completely rather than one container into the run. The rules
are the API server's for what a local run can observe (``../shared`` lifecycle research R1-R3):

- a sidecar is an init container with ``restartPolicy: Always``; ``restartPolicy`` on a main
  container is refused;
- probes and lifecycle hooks on a regular init container are refused;
- container names are unique across init and main containers;
- every volume mount names a volume of the pod;
- ports declared twice in the pod are refused (they share one network namespace here);
- a probe or hook has exactly one handler.

The specs are ``NamedTuple`` records, not the frozen slots dataclasses used elsewhere: on
Python 3.11 ``dataclass`` compiles six generated methods per frozen class at import, some 10 ms
of CPU for these seven classes (more on a busy machine), and this import is start-up time
before a pod's first container. A NamedTuple is as immutable and has no per-instance dict;
``_replace`` is its ``dataclasses.replace``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from sidecarkit import errors
from sidecarkit.runner import podschema

__all__ = [
    "NOTHING",
    "ContainerSpec",
    "EnvVar",
    "Handler",
    "Mount",
    "PodSpec",
    "Probe",
    "SpecError",
    "Volume",
    "read_pod",
]

_PROBE_DEFAULTS: Final = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}
_HANDLERS: Final = ("exec", "httpGet", "tcpSocket", "grpc", "sleep")
NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})
"""The default of a mapping field: empty, read-only and shared."""


class SpecError(errors.InputError):
    """A pod spec the runner cannot run; the message lists every problem by field path."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("the pod spec cannot run:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = tuple(problems)


class Handler(NamedTuple):
    """One probe or hook action: exec, httpGet, tcpSocket, grpc or sleep."""

    kind: str
    command: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int | str = 0
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    service: str = ""
    seconds: float = 0.0


class Probe(NamedTuple):
    """A container probe as the kubelet runs it: its action, timing and thresholds (seconds)."""

    handler: Handler
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None


class EnvVar(NamedTuple):
    """One ``env`` entry: a literal value or where to read it from."""

    name: str
    value: str | None = None
    source: Mapping[str, Any] | None = None
    """``valueFrom`` as written: fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef."""


class Mount(NamedTuple):
    """One ``volumeMounts`` entry of a container."""

    name: str
    path: str
    read_only: bool = False
    sub_path: str = ""


class ContainerSpec(NamedTuple):
    """What the runner needs of one container (init, sidecar or main), read and checked."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[Mapping[str, Any], ...] = ()
    working_dir: str = ""
    ports: tuple[tuple[int, str], ...] = ()
    """(containerPort, protocol) pairs."""
    port_names: Mapping[str, int] = NOTHING
    """Named ports, for probes and hooks that name theirs."""
    mounts: tuple[Mount, ...] = ()
    sidecar: bool = False
    """An init container with ``restartPolicy: Always``."""
    startup: Probe | None = None
    liveness: Probe | None = None
    readiness: Probe | None = None
    post_start: Handler | None = None
    pre_stop: Handler | None = None
    resources: Mapping[str, Any] = NOTHING


class Volume(NamedTuple):
    """One pod volume, by kind, with its source as written."""

    name: str
    kind: str
    """emptyDir, hostPath, configMap, secret, downwardAPI or projected."""
    source: Mapping[str, Any] = NOTHING


class PodSpec(NamedTuple):
    """The pod as the runner runs it, read and checked once before anything starts."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    restart_policy: str
    termination_grace: float
    init_containers: tuple[ContainerSpec, ...]
    containers: tuple[ContainerSpec, ...]
    volumes: tuple[Volume, ...]
    node_name: str = ""
    service_account: str = "default"
    ignored: tuple[str, ...] = ()
    """Unknown fields let through by ``lenient``, each with its path, to warn about."""

    @property
    def sidecars(self) -> tuple[ContainerSpec, ...]:
        return tuple(c for c in self.init_containers if c.sidecar)


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(path, "must be a list of strings")
            return ()
        return tuple(value)

    def number(self, data: Mapping[str, Any], key: str, path: str, default: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.fail(f"{path}.{key}", f"must be a non-negative number, got {value!r}")
            return default
        return float(value)

    def handler(self, data: Any, path: str, *, allow: Sequence[str]) -> Handler | None:
        if not isinstance(data, dict):
            self.fail(path, "must be an object")
            return None
        kinds = [k for k in _HANDLERS if k in data]
        if len(kinds) != 1:
            self.fail(
                path, f"needs exactly one of {', '.join(allow)}, found {', '.join(kinds) or 'none'}"
            )
            return None
        kind = kinds[0]
        if kind not in allow:
            self.fail(f"{path}.{kind}", f"is not allowed here; use one of {', '.join(allow)}")
            return None
        body = data[kind]
        where = f"{path}.{kind}"
        if not isinstance(body, dict):
            self.fail(where, "must be an object")
            return None
        if kind == "exec":
            command = self.strings(body.get("command"), f"{where}.command")
            if not command:
                self.fail(f"{where}.command", "must name a command to run")
            return Handler("exec", command=command)
        if kind == "sleep":
            return Handler("sleep", seconds=self.number(body, "seconds", where, 0))
        port = body.get("port")
        if not (isinstance(port, int) and 1 <= port <= 65535) and not (
            isinstance(port, str) and port
        ):
            self.fail(f"{where}.port", "must be a port number or a named port")
            port = 0
        if kind == "httpGet":
            headers = tuple(
                (str(h.get("name")), str(h.get("value")))
                for h in body.get("httpHeaders") or ()
                if isinstance(h, dict)
            )
            return Handler(
                "httpGet",
                host=str(body.get("host") or "127.0.0.1"),
                port=port,
                path=str(body.get("path") or "/"),
                scheme=str(body.get("scheme") or "HTTP").upper(),
                headers=headers,
            )
        if kind == "grpc":
            return Handler("grpc", port=port, service=str(body.get("service") or ""))
        return Handler("tcpSocket", host=str(body.get("host") or "127.0.0.1"), port=port)

    def probe(self, data: Any, path: str) -> Probe | None:
        handler = self.handler(data, path, allow=("exec", "httpGet", "tcpSocket", "grpc"))
        if handler is None:
            return None
        d = _PROBE_DEFAULTS
        grace = data.get("terminationGracePeriodSeconds")
        return Probe(
            handler,
            initial_delay=self.number(data, "initialDelaySeconds", path, d["initialDelaySeconds"]),
            period=max(1.0, self.number(data, "periodSeconds", path, d["periodSeconds"])),
            timeout=max(1.0, self.number(data, "timeoutSeconds", path, d["timeoutSeconds"])),
            success_threshold=int(
                self.number(data, "successThreshold", path, d["successThreshold"])
            )
            or 1,
            failure_threshold=int(
                self.number(data, "failureThreshold", path, d["failureThreshold"])
            )
            or 1,
            termination_grace=None if grace is None else float(grace),
        )

    def container(self, data: Any, path: str, *, init: bool) -> ContainerSpec | None:
        if not isinstance(data, dict):
            self.fail(path, "must be an object")
            return None
        name = data.get("name")
        if not isinstance(name, str) or not name:
            self.fail(f"{path}.name", "every container needs a name")
            name = f"<unnamed {path}>"
        policy = data.get("restartPolicy")
        sidecar = False
        if policy is not None:
            if not init:
                self.fail(
                    f"{path}.restartPolicy",
                    "may only be set on init containers (Always makes a sidecar)",
                )
            elif policy != "Always":
                self.fail(f"{path}.restartPolicy", f"must be Always (a sidecar), got {policy!r}")
            else:
                sidecar = True
        if init and not sidecar:
            for key in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if key in data:
                    self.fail(
                        f"{path}.{key}",
                        "is only allowed on sidecars (init containers with restartPolicy: Always)",
                    )
        env = []
        for i, e in enumerate(data.get("env") or ()):
            where = f"{path}.env[{i}]"
            if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
                self.fail(f"{where}.name", "every env entry needs a name")
                continue
            if "valueFrom" in e and "value" in e:
                self.fail(where, "has both value and valueFrom; keep one")
            value = e.get("value")
            env.append(EnvVar(e["name"], None if value is None else str(value), e.get("valueFrom")))
        ports = []
        port_names: dict[str, int] = {}
        for i, p in enumerate(data.get("ports") or ()):
            number = p.get("containerPort") if isinstance(p, dict) else None
            if not isinstance(number, int) or not 1 <= number <= 65535:
                self.fail(f"{path}.ports[{i}].containerPort", "must be a port from 1 to 65535")
                continue
            ports.append((number, str(p.get("protocol") or "TCP")))
            if p.get("name"):
                port_names[str(p["name"])] = number
        mounts = []
        for i, m in enumerate(data.get("volumeMounts") or ()):
            if not isinstance(m, dict) or not m.get("name") or not m.get("mountPath"):
                self.fail(f"{path}.volumeMounts[{i}]", "needs a name and a mountPath")
                continue
            mounts.append(
                Mount(
                    str(m["name"]),
                    str(m["mountPath"]),
                    bool(m.get("readOnly")),
                    str(m.get("subPath") or ""),
                )
            )
        lifecycle = data.get("lifecycle") or {}
        probes = {
            key: self.probe(data[key], f"{path}.{key}") if key in data else None
            for key in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        hooks = {
            key: self.handler(
                lifecycle[key], f"{path}.lifecycle.{key}", allow=("exec", "httpGet", "sleep")
            )
            if isinstance(lifecycle, dict) and key in lifecycle
            else None
            for key in ("postStart", "preStop")
        }
        return ContainerSpec(
            name=name,
            image=str(data.get("image") or ""),
            command=self.strings(data.get("command"), f"{path}.command"),
            args=self.strings(data.get("args"), f"{path}.args"),
            env=tuple(env),
            env_from=tuple(e for e in data.get("envFrom") or () if isinstance(e, dict)),
            working_dir=str(data.get("workingDir") or ""),
            ports=tuple(ports),
            port_names=port_names,
            mounts=tuple(mounts),
            sidecar=sidecar,
            startup=probes["startupProbe"],
            liveness=probes["livenessProbe"],
            readiness=probes["readinessProbe"],
            post_start=hooks["postStart"],
            pre_stop=hooks["preStop"],
            resources=data.get("resources") or {},
        )


def read_pod(
    template: Mapping[str, Any],
    *,
    where: str = "spec",
    explain: str = "pod",
    lenient: bool = False,
) -> PodSpec:
    """The runnable spec of a pod template (``metadata`` and ``spec``); SpecError if not.

    Field types and names are checked against the Kubernetes schema first (``podschema``);
    an unknown field is an error, as with kubectl's strict field validation, unless
    ``lenient``, when it is ignored and listed in ``PodSpec.ignored``.
    """
    r = _Reader()
    metadata = template.get("metadata") or {}
    spec = template.get("spec")
    if not isinstance(spec, dict):
        raise SpecError([f"{where}: the pod template has no spec"])
    findings = podschema.check_template(
        metadata,
        spec,
        metadata_path=where[: -len("spec")] + "metadata",
        spec_path=where,
        explain=explain,
    )
    problems = findings.errors + ([] if lenient else findings.unknown)
    if problems:
        if findings.unknown and not lenient:
            problems.append("unknown fields are errors, as with kubectl; --lenient ignores them")
        raise SpecError(problems)
    inits = [
        r.container(c, f"{where}.initContainers[{i}]", init=True)
        for i, c in enumerate(spec.get("initContainers") or ())
    ]
    mains = [
        r.container(c, f"{where}.containers[{i}]", init=False)
        for i, c in enumerate(spec.get("containers") or ())
    ]
    if not mains:
        r.fail(f"{where}.containers", "a pod needs at least one container")
    volumes = []
    for i, v in enumerate(spec.get("volumes") or ()):
        if not isinstance(v, dict) or not v.get("name"):
            r.fail(f"{where}.volumes[{i}]", "every volume needs a name")
            continue
        kinds = [k for k in v if k != "name"]
        volumes.append(
            Volume(
                str(v["name"]),
                kinds[0] if kinds else "emptyDir",
                v.get(kinds[0]) or {} if kinds else {},
            )
        )
    volume_names = {v.name for v in volumes}
    seen: dict[str, str] = {}
    ports: dict[tuple[int, str], str] = {}
    for key, group in (("initContainers", inits), ("containers", mains)):
        for i, c in enumerate(group):
            if c is None:
                continue
            path = f"{where}.{key}[{i}]"
            if c.name in seen:
                r.fail(f"{path}.name", f"{c.name!r} is already the name of {seen[c.name]}")
            seen[c.name] = path
            for j, m in enumerate(c.mounts):
                if m.name not in volume_names:
                    r.fail(
                        f"{path}.volumeMounts[{j}].name", f"no volume {m.name!r} in {where}.volumes"
                    )
            if key == "initContainers" and not c.sidecar:
                continue
            for port in c.ports:
                if port in ports:
                    r.fail(
                        f"{path}.ports",
                        f"port {port[0]}/{port[1]} is also declared by "
                        f"{ports[port]}; containers share one network here",
                    )
                ports[port] = path
    policy = spec.get("restartPolicy") or "Always"
    if policy not in ("Always", "OnFailure", "Never"):
        r.fail(f"{where}.restartPolicy", f"must be Always, OnFailure or Never, got {policy!r}")
    if r.problems:
        raise SpecError(r.problems)
    return PodSpec(
        name=str(metadata.get("name") or metadata.get("generateName") or "pod"),
        namespace=str(metadata.get("namespace") or "default"),
        labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
        annotations={str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()},
        restart_policy=str(policy),
        termination_grace=float(spec.get("terminationGracePeriodSeconds", 30)),
        init_containers=tuple(c for c in inits if c is not None),
        containers=tuple(c for c in mains if c is not None),
        volumes=tuple(volumes),
        node_name=str(spec.get("nodeName") or ""),
        service_account=str(spec.get("serviceAccountName") or "default"),
        ignored=tuple(findings.unknown),
    )
