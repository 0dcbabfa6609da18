"""Profiles: named sets of sidecars, and the ones that ship with sidecarkit.

A profile turns resolved settings into :class:`Parts`: the containers, volumes, and the mounts
and env it adds to the app's containers. It does not decide where they go in the pod; placing
them, checking conflicts and recording them is the same for every profile (``placing.py``).

The built-in ``logs``, ``metrics`` and ``proxy`` profiles (and ``mtls`` and ``auth``, in
``meshing``) run ``sidecarkit agent ROLE`` from one
image. A
profile from the config file is a template of Kubernetes objects in which ``${setting}`` is
replaced by the setting's value.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sidecarkit.injection import settings as _settings

__all__ = [
    "ADMIN_READY_PATH",
    "COMMON_SETTINGS",
    "DEFAULT_IMAGE",
    "PROXY_POLICY_DIR",
    "PROXY_SECRET_DIR",
    "Context",
    "Mode",
    "Parts",
    "Profile",
    "builtin_profiles",
    "placeholders",
    "policy_parts",
    "policy_setting",
    "secret_setting",
    "template_profile",
]

DEFAULT_IMAGE: Final = "ghcr.io/sidecarkit/sidecarkit:0.1.0"
ADMIN_READY_PATH: Final = "/ready"
PODINFO_DIR: Final = "/etc/sidecarkit/podinfo"

Json = Any


class Mode(enum.StrEnum):
    """How sidecars are placed in the pod."""

    NATIVE = "native"
    """Init containers with ``restartPolicy: Always`` (Kubernetes >= 1.29)."""
    LEGACY = "legacy"
    """Regular containers placed first and holding the app until they are ready."""
    AUTO = "auto"
    """Native when the cluster is known to be >= 1.29, legacy when known to be older."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a profile may know about the pod it renders for."""

    mode: Mode
    """The mode this profile resolved to for this pod: NATIVE or LEGACY, never AUTO."""
    run_to_completion: bool
    """True for pods whose restartPolicy is Never or OnFailure (Jobs, CronJobs, one-off Pods)."""


NETWORK_SETUP: Final = (
    "istio-init",
    "istio-validation",
    "linkerd-init",
    "linkerd-network-validator",
)
"""Init containers of Istio and Linkerd that set up (or check) the pod's traffic redirection.
Sidecars go after them, so they start with the network as the pod will have it."""


@dataclass(frozen=True, slots=True)
class Parts:
    """What one profile adds to one pod, as Kubernetes JSON."""

    init_containers: tuple[Json, ...] = ()
    """Run-to-completion init containers, placed before this profile's sidecars."""
    sidecars: tuple[Json, ...] = ()
    """Long-running containers: native sidecars or, in legacy mode, leading app containers."""
    volumes: tuple[Json, ...] = ()
    """Pod volumes; two profiles may declare the same volume if they declare it identically."""
    app_mounts: tuple[Json, ...] = ()
    """volumeMounts added to every container of ``spec.containers``."""
    app_env: tuple[Json, ...] = ()
    """env entries added to every container of ``spec.containers``."""
    after_init_containers: tuple[str, ...] = NETWORK_SETUP
    """The pod's own init containers that this profile's containers must come after."""


Renderer = Callable[[Mapping[str, str], Context], Parts]


@dataclass(frozen=True, slots=True)
class Profile:
    """A named set of sidecars that a pod asks for with ``sidecarkit.io/profiles``."""

    name: str
    description: str
    settings: tuple[_settings.Setting, ...]
    """Every key a ``sidecarkit.io/<name>.<key>`` annotation may set, common ones included."""
    render: Renderer = field(compare=False)
    allow_host_network: bool = False
    """Whether the profile works in a hostNetwork pod; if not, such pods skip it with a reason."""
    builtin: bool = False

    def setting(self, key: str) -> _settings.Setting | None:
        """The setting called ``key``, or None."""
        for s in self.settings:
            if s.name == key:
                return s
        return None


_MODE_CHOICES: Final = tuple(m.value for m in Mode)

#: Settings every profile has, whether built in or from the config file.
COMMON_SETTINGS: Final = (
    _settings.Setting(
        "mode",
        _settings.Kind.CHOICE,
        None,
        "How this profile's sidecars are placed; unset means the pod's or the config's mode.",
        _MODE_CHOICES,
    ),
)


def _resource_settings(cpu: str, memory: str, memory_limit: str) -> tuple[_settings.Setting, ...]:
    Q = _settings.Kind.QUANTITY
    return (
        _settings.Setting("cpu", Q, cpu, "CPU request of the sidecar."),
        _settings.Setting("memory", Q, memory, "Memory request of the sidecar."),
        _settings.Setting("cpu-limit", Q, None, "CPU limit of the sidecar; unset means none."),
        _settings.Setting("memory-limit", Q, memory_limit, "Memory limit of the sidecar."),
    )


def _image_setting(image: str) -> _settings.Setting:
    return _settings.Setting("image", _settings.Kind.IMAGE, image, "Image of the sidecar.")


def _resources(values: Mapping[str, str]) -> Json:
    limits: dict[str, str] = {}
    if values.get("cpu-limit"):
        limits["cpu"] = values["cpu-limit"]
    if values.get("memory-limit"):
        limits["memory"] = values["memory-limit"]
    out: dict[str, Json] = {"requests": {"cpu": values["cpu"], "memory": values["memory"]}}
    if limits:
        out["limits"] = limits
    return out


#: Passes the Pod Security Standards "restricted" profile on its own, whatever the pod sets.
RESTRICTED_SECURITY_CONTEXT: Final[Json] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}

_PODINFO_VOLUME: Final[Json] = {
    "name": "sidecarkit-podinfo",
    "downwardAPI": {
        "items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]
    },
}


def _identity_env() -> list[Json]:
    """The pod's identity from the Downward API; labels come from the podinfo volume."""

    def field_env(name: str, path: str) -> Json:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    return [
        field_env("SIDECARKIT_POD_NAME", "metadata.name"),
        field_env("SIDECARKIT_POD_NAMESPACE", "metadata.namespace"),
        field_env("SIDECARKIT_NODE_NAME", "spec.nodeName"),
        field_env("SIDECARKIT_POD_IP", "status.podIP"),
        {"name": "SIDECARKIT_PODINFO_DIR", "value": PODINFO_DIR},
    ]


def _agent_container(
    role: str,
    values: Mapping[str, str],
    ctx: Context,
    *,
    env: list[Json],
    ports: list[Json],
    mounts: list[Json],
) -> Json:
    admin = int(values["admin-port"])
    probe_action = {"httpGet": {"path": ADMIN_READY_PATH, "port": admin}}
    container: dict[str, Json] = {
        "name": f"sidecarkit-{role}",
        "image": values["image"],
        "command": ["sidecarkit", "agent", role],
        "env": [*_identity_env(), {"name": "SIDECARKIT_ADMIN_PORT", "value": str(admin)}, *env],
        "ports": [{"name": f"sk-{role}", "containerPort": admin, "protocol": "TCP"}, *ports],
        "resources": _resources(values),
        "volumeMounts": [
            *mounts,
            {"name": "sidecarkit-podinfo", "mountPath": PODINFO_DIR, "readOnly": True},
        ],
        "startupProbe": {**probe_action, "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": {**probe_action, "periodSeconds": 5},
        "securityContext": RESTRICTED_SECURITY_CONTEXT,
    }
    if ctx.mode is Mode.LEGACY:
        # The kubelet starts regular containers in order and waits for each postStart hook, so
        # blocking here holds every later container (the app) until this agent is ready.
        container["lifecycle"] = {
            "postStart": {
                "exec": {
                    "command": [
                        "sidecarkit",
                        "await",
                        f"http://127.0.0.1:{admin}{ADMIN_READY_PATH}",
                        "--timeout",
                        "120s",
                    ]
                }
            }
        }
    return container


def _render_logs(values: Mapping[str, str], ctx: Context) -> Parts:
    log_dir = values["dir"].rstrip("/") or "/"
    mount = {"name": "sidecarkit-logs", "mountPath": log_dir}
    env = [
        {"name": "SIDECARKIT_LOGS_PATHS", "value": f"{log_dir.rstrip('/')}/{values['files']}"},
        {"name": "SIDECARKIT_LOGS_SINK", "value": values["sink"]},
        {"name": "SIDECARKIT_LOGS_OFFSETS_DIR", "value": f"{log_dir.rstrip('/')}/.sidecarkit"},
    ]
    if values.get("endpoint"):
        env.append({"name": "SIDECARKIT_LOGS_ENDPOINT", "value": values["endpoint"]})
    if values.get("parser", "raw") != "raw":
        env.append({"name": "SIDECARKIT_LOGS_PARSER", "value": values["parser"]})
    if values.get("multiline", "none") != "none":
        env.append({"name": "SIDECARKIT_LOGS_MULTILINE", "value": values["multiline"]})
    container = _agent_container("logs", values, ctx, env=env, ports=[], mounts=[mount])
    return Parts(
        sidecars=(container,),
        volumes=({"name": "sidecarkit-logs", "emptyDir": {}}, _PODINFO_VOLUME),
        app_mounts=(mount,),
    )


def _render_metrics(values: Mapping[str, str], ctx: Context) -> Parts:
    scrape = values.get("scrape", "true") == "true"
    env = [
        {
            "name": "SIDECARKIT_METRICS_TARGETS",
            "value": f"http://127.0.0.1:{values['port']}{values['path']}" if scrape else "",
        },
        {"name": "SIDECARKIT_METRICS_INTERVAL", "value": values["interval"]},
        # The pod's annotations as they are now, not as they were at injection: the agent
        # follows prometheus.io/scrape|port|path|scheme changes, and reads the scheme.
        {"name": "SIDECARKIT_METRICS_ANNOTATIONS_FILE", "value": f"{PODINFO_DIR}/annotations"},
    ]
    ports: list[Json] = []
    if values["statsd"] == "true":
        env.append({"name": "SIDECARKIT_METRICS_STATSD_PORT", "value": values["statsd-port"]})
        ports.append(
            {"name": "sk-statsd", "containerPort": int(values["statsd-port"]), "protocol": "UDP"}
        )
    container = _agent_container("metrics", values, ctx, env=env, ports=ports, mounts=[])
    return Parts(sidecars=(container,), volumes=(_PODINFO_VOLUME,))


PROXY_CONFIG_DIR: Final = "/etc/sidecarkit/proxy"
PROXY_POLICY_DIR: Final = "/etc/sidecarkit/policy"
PROXY_SECRET_DIR: Final = "/etc/sidecarkit/auth"
"""Where a proxy profile's ``secret`` is mounted; the policy file names its keys here."""


def policy_parts(values: Mapping[str, str]) -> tuple[list[Json], list[Json], list[Json]]:
    """(env, mounts, volumes) for a proxy profile's ``policy`` and ``secret`` settings: the
    ConfigMap whose ``policy.yaml`` holds authentication, authorization and rate limits, and the
    Secret holding what it names (API key hashes, a JWKS). Both are mounted as directories so
    that the proxy sees their updates (a subPath mount would not)."""
    env: list[Json] = []
    mounts: list[Json] = []
    volumes: list[Json] = []
    if name := values.get("policy"):
        env.append({"name": "SIDECARKIT_PROXY_POLICY", "value": f"{PROXY_POLICY_DIR}/policy.yaml"})
        mounts.append(
            {"name": "sidecarkit-proxy-policy", "mountPath": PROXY_POLICY_DIR, "readOnly": True}
        )
        volumes.append({"name": "sidecarkit-proxy-policy", "configMap": {"name": name}})
    if secret := values.get("secret"):
        mounts.append(
            {"name": "sidecarkit-proxy-secret", "mountPath": PROXY_SECRET_DIR, "readOnly": True}
        )
        volumes.append({"name": "sidecarkit-proxy-secret", "secret": {"secretName": secret}})
    return env, mounts, volumes


def secret_setting() -> _settings.Setting:
    return _settings.Setting(
        "secret",
        _settings.Kind.NAME,
        None,
        f"Secret mounted read-only at {PROXY_SECRET_DIR} for the policy's files (api_keys.file, "
        "jwks_file); the app never sees it.",
    )


def policy_setting() -> _settings.Setting:
    return _settings.Setting(
        "policy",
        _settings.Kind.NAME,
        None,
        "ConfigMap whose policy.yaml holds JWT/API-key checks, allow/deny rules and rate limits "
        "for inbound requests (docs/policy.md); reloaded on change.",
    )


def _render_proxy(values: Mapping[str, str], ctx: Context) -> Parts:
    """Explicit-port mode: clients (the Service's targetPort) reach the proxy's inbound port,
    the proxy forwards to the app on loopback; no capability, no iptables."""
    inbound = int(values["inbound-port"])
    env = [
        {"name": "SIDECARKIT_PROXY_INBOUND", "value": f"0.0.0.0:{inbound}"},
        {"name": "SIDECARKIT_PROXY_APP", "value": f"127.0.0.1:{values['port']}"},
    ]
    mounts: list[Json] = []
    volumes: list[Json] = [_PODINFO_VOLUME]
    if values.get("config-map"):
        env.append({"name": "SIDECARKIT_PROXY_CONFIG", "value": f"{PROXY_CONFIG_DIR}/proxy.yaml"})
        mounts.append(
            {"name": "sidecarkit-proxy-config", "mountPath": PROXY_CONFIG_DIR, "readOnly": True}
        )
        volumes.append(
            {"name": "sidecarkit-proxy-config", "configMap": {"name": values["config-map"]}}
        )
    policy_env, policy_mounts, policy_volumes = policy_parts(values)
    env += policy_env
    mounts += policy_mounts
    volumes += policy_volumes
    ports = [{"name": "sk-proxy-in", "containerPort": inbound, "protocol": "TCP"}]
    init: tuple[Json, ...] = ()
    if values.get("transparent") in ("outbound", "all"):
        env.append(
            {"name": "SIDECARKIT_PROXY_TRANSPARENT", "value": f"127.0.0.1:{TRANSPARENT_PORT}"}
        )
        init = (_proxy_init(values),)
    container = _agent_container("proxy", values, ctx, env=env, ports=ports, mounts=mounts)
    return Parts(init_containers=init, sidecars=(container,), volumes=tuple(volumes))


TRANSPARENT_PORT: Final = 15001
"""Where the app's redirected outbound TCP reaches the proxy (Istio's outbound capture port)."""


def _proxy_init(values: Mapping[str, str]) -> Json:
    """Transparent mode's init container: writes the iptables rules (``agent proxy-init``) in
    the pod's network namespace, as root with NET_ADMIN and NET_RAW, as ``istio-init`` does;
    the proxy's own user (the restricted context's) is left alone by them."""
    command = ["sidecarkit", "agent", "proxy-init", "--redirect-to", str(TRANSPARENT_PORT),
               "--proxy-uid", str(RESTRICTED_SECURITY_CONTEXT["runAsUser"])]  # fmt: skip
    for cidr in (values.get("transparent-include") or "").split(","):
        if cidr.strip():
            command += ["--include", cidr.strip()]
    if values.get("transparent") == "all":  # the app's port, reached from outside, too
        command += ["--inbound-port", values["port"], "--inbound-redirect-to",
                    values["inbound-port"]]  # fmt: skip
    return {
        "name": "sidecarkit-proxy-init",
        "image": values["image"],
        "command": command,
        "resources": _resources(values),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": False,  # iptables takes a lock file under /run
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
        },
    }


def _proxy_profile(image: str) -> Profile:
    K = _settings.Kind
    return Profile(
        name="proxy",
        description="Fronts the app's port with the HTTP proxy; upstreams from a ConfigMap.",
        settings=(
            *COMMON_SETTINGS,
            _image_setting(image),
            _settings.Setting("port", K.PORT, "8080", "Port the app listens on (loopback)."),
            _settings.Setting(
                "inbound-port",
                K.PORT,
                "15006",
                "Port the proxy listens on for the app's clients; point the Service here.",
            ),
            _settings.Setting(
                "config-map",
                K.NAME,
                None,
                "ConfigMap whose proxy.yaml holds upstreams and limits; reloaded on change.",
            ),
            policy_setting(),
            secret_setting(),
            _settings.Setting(
                "admin-port", K.PORT, "15102", "Port of /healthz, /ready and /metrics."
            ),
            _settings.Setting(
                "transparent",
                K.CHOICE,
                "off",
                "outbound: an init container (NET_ADMIN) redirects the app's outbound TCP to the "
                "proxy with iptables, upstreams chosen by their addresses: (docs/proxy.md); all: "
                "also connections to the app's port from outside, to the inbound port.",
                ("off", "outbound", "all"),
            ),
            _settings.Setting(
                "transparent-include",
                K.STRING,
                None,
                "Comma-separated CIDRs redirected in transparent mode (e.g. the Service range); "
                "default: every IPv4 destination.",
            ),
            *_resource_settings("50m", "32Mi", "128Mi"),
        ),
        render=_render_proxy,
        builtin=True,
    )


def builtin_profiles(image: str = DEFAULT_IMAGE) -> dict[str, Profile]:
    """The ``logs``, ``metrics``, ``proxy``, ``mtls`` and ``auth`` profiles, running
    ``sidecarkit agent`` from ``image``."""
    K = _settings.Kind
    logs = Profile(
        name="logs",
        description="Ships the app's log files from a shared emptyDir volume.",
        settings=(
            *COMMON_SETTINGS,
            _image_setting(image),
            _settings.Setting(
                "dir",
                K.PATH,
                "/var/log/app",
                "Directory the app writes logs to; becomes a shared volume.",
            ),
            _settings.Setting(
                "files", K.STRING, "*.log", "Glob of files to ship in that directory."
            ),
            _settings.Setting(
                "sink",
                K.CHOICE,
                "stdout",
                "Where records go.",
                ("stdout", "loki", "elasticsearch", "otlp", "syslog", "http"),
            ),
            _settings.Setting("endpoint", K.STRING, None, "URL or address of the sink."),
            _settings.Setting(
                "parser",
                K.CHOICE,
                "raw",
                "How lines are read: as they are, JSON, or container runtime formats.",
                ("raw", "json", "cri", "docker", "container"),
            ),
            _settings.Setting(
                "multiline",
                K.CHOICE,
                "none",
                "Join multi-line records such as stack traces.",
                ("none", "java", "python", "go", "ruby", "backslash"),
            ),
            _settings.Setting(
                "admin-port", K.PORT, "15100", "Port of /healthz, /ready and /metrics of the agent."
            ),
            *_resource_settings("10m", "32Mi", "128Mi"),
        ),
        render=_render_logs,
        builtin=True,
    )
    metrics = Profile(
        name="metrics",
        description="Scrapes the app's metrics, receives StatsD, serves one merged endpoint.",
        settings=(
            *COMMON_SETTINGS,
            _image_setting(image),
            _settings.Setting("port", K.PORT, "8080", "Port of the app's metrics endpoint."),
            _settings.Setting("path", K.PATH, "/metrics", "Path of the app's metrics endpoint."),
            _settings.Setting("interval", K.DURATION, "15s", "How often the app is scraped."),
            _settings.Setting(
                "scrape",
                K.BOOL,
                "true",
                "Whether to scrape the app at all (false: StatsD only).",
            ),
            _settings.Setting("statsd", K.BOOL, "true", "Whether to receive StatsD on UDP."),
            _settings.Setting("statsd-port", K.PORT, "8125", "UDP port of the StatsD receiver."),
            _settings.Setting(
                "admin-port",
                K.PORT,
                "15101",
                "Port of the merged /metrics and of /healthz and /ready.",
            ),
            *_resource_settings("10m", "32Mi", "128Mi"),
        ),
        render=_render_metrics,
        builtin=True,
    )
    proxy = _proxy_profile(image)
    from sidecarkit.injection import meshing  # noqa: PLC0415 - it builds on this module

    mtls = meshing.mtls_profile(image)
    auth = meshing.auth_profile(image)
    return {each.name: each for each in (logs, metrics, proxy, mtls, auth)}


_PLACEHOLDER: Final = re.compile(r"\$\$\{|\$\{([^}]*)\}")


def placeholders(obj: Json) -> set[str]:
    """Every ``${name}`` used in the strings of ``obj``."""
    found: set[str] = set()
    if isinstance(obj, str):
        found.update(m.group(1) for m in _PLACEHOLDER.finditer(obj) if m.group(1) is not None)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            found |= placeholders(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            found |= placeholders(value)
    return found


_WHOLE: Final = re.compile(r"^\$\{([^}]*)\}$")
_TYPED: Final[dict[_settings.Kind, Callable[[str], object]]] = {
    _settings.Kind.INT: int,
    _settings.Kind.PORT: int,
    _settings.Kind.BOOL: "true".__eq__,
}


def _substitute(obj: Json, values: Mapping[str, str], kinds: Mapping[str, _settings.Kind]) -> Json:
    """Replace placeholders; a string that is one int, port or bool placeholder becomes one.

    That lets ``containerPort: ${port}`` render as the integer Kubernetes requires.
    """
    if isinstance(obj, str):
        whole = _WHOLE.match(obj)
        if whole and (convert := _TYPED.get(kinds.get(whole.group(1), _settings.Kind.STRING))):
            value = values.get(whole.group(1))
            return convert(value) if value is not None else None
        return _PLACEHOLDER.sub(
            lambda m: "${" if m.group(1) is None else values.get(m.group(1)) or "", obj
        )
    if isinstance(obj, Mapping):
        return {str(k): _substitute(v, values, kinds) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_substitute(v, values, kinds) for v in obj]
    return obj


def template_profile(
    name: str,
    *,
    description: str,
    profile_settings: tuple[_settings.Setting, ...],
    template: Parts,
    allow_host_network: bool,
) -> Profile:
    """A profile from the config file: ``template`` with ``${setting}`` replaced per pod."""

    kinds = {s.name: s.kind for s in profile_settings}

    def render(values: Mapping[str, str], ctx: Context) -> Parts:
        del ctx

        def each(items: tuple[Json, ...]) -> tuple[Json, ...]:
            return tuple(_substitute(item, values, kinds) for item in items)

        return Parts(
            init_containers=each(template.init_containers),
            sidecars=each(template.sidecars),
            volumes=each(template.volumes),
            app_mounts=each(template.app_mounts),
            app_env=each(template.app_env),
            after_init_containers=template.after_init_containers,
        )

    return Profile(
        name=name,
        description=description,
        settings=(*COMMON_SETTINGS, *profile_settings),
        render=render,
        allow_host_network=allow_host_network,
    )
