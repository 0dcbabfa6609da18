"""Reading the injection config and the facts file from YAML, with errors that point at a line.

A config file looks like this (every key optional)::

    apiVersion: sidecarkit.io/v1alpha1
    kind: InjectionConfig
    image: registry.example.com/sidecarkit:0.1.0   # image of the built-in profiles
    mode: native                                   # native | legacy | auto
    defaultProfiles: [logs, metrics]
    profiles:
      logs:                         # a built-in profile: change its defaults
        settings: {dir: /var/log/nginx}
      vault:                        # a profile of your own
        description: Renders secrets into a shared volume.
        allowHostNetwork: false
        settings:
          role: {kind: name, description: Vault role to log in as}   # no default: required
          mode: legacy                                               # a scalar sets a default
        initContainers: [...]       # Kubernetes containers, ${setting} substituted
        containers: [...]           # the sidecars
        volumes: [...]
        appVolumeMounts: [...]      # added to every app container
        appEnv: [...]
        afterInitContainers: [...]  # init containers to go after (default: Istio, Linkerd)
    workloads:                      # kinds beyond the built-in ones, by API group and kind
      - {group: example.com, kind: WebApp, path: spec.podTemplate}

Errors name the file, line and column, the path of the field and what would be accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final

from sidecarkit import errors
from sidecarkit.injection import configs, facts, profiles, settings
from sidecarkit.k8s import manifests, workloads

__all__ = ["load_config", "load_facts", "load_mapping", "parse_config"]

API_VERSION: Final = "sidecarkit.io/v1alpha1"
_TOP_KEYS: Final = (
    "apiVersion",
    "kind",
    "image",
    "mode",
    "defaultProfiles",
    "profiles",
    "workloads",
)
_WORKLOAD_KEYS: Final = ("group", "kind", "path")
_PROFILE_KEYS: Final = (
    "description",
    "allowHostNetwork",
    "settings",
    "initContainers",
    "containers",
    "volumes",
    "appVolumeMounts",
    "appEnv",
    "afterInitContainers",
)
_SETTING_KEYS: Final = ("kind", "default", "description", "choices")
_FORBIDDEN_CONTAINER_KEYS: Final = ("restartPolicy",)


class _Reader:
    """Walks round-trip YAML data, remembering the path, to raise located errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: Any, key: object, path: str, problem: str) -> errors.ConfigError:
        line: int | None = None
        col = 0
        lc = getattr(node, "lc", None)
        if lc is not None:
            try:
                if isinstance(node, list) and isinstance(key, int):
                    line, col = lc.item(key)
                elif key is not None:
                    line, col = lc.key(key)
                else:
                    line, col = lc.line, lc.col
            except (KeyError, IndexError, TypeError):
                line, col = lc.line, lc.col
        where = f"{self.source}:{line + 1}:{col + 1}" if line is not None else self.source
        return errors.ConfigError(f"{where}: {path or '<top>'}: {problem}")

    def mapping(
        self, node: Any, key: object, path: str, value: Any, allowed: tuple[str, ...]
    ) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(node, key, path, f"must be a mapping, got {_type(value)}")
        for k in value:
            if k not in allowed:
                raise self.fail(
                    value,
                    k,
                    f"{path}.{k}" if path else str(k),
                    f"unknown key; accepted keys: {', '.join(allowed)}",
                )
        return value

    def string(self, node: Any, key: object, path: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(node, key, path, f"must be a non-empty string, got {_type(value)}")
        return str(value)

    def objects(self, node: Any, key: str, path: str) -> tuple[Any, ...]:
        value = node.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(node, key, path, f"must be a list, got {_type(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(value, i, f"{path}[{i}]", f"must be a mapping, got {_type(item)}")
        return tuple(value)


def _scalar_text(value: object) -> str:
    """A YAML scalar as the string an annotation would carry."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _type(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def load_config(path: str) -> configs.Config:
    """Read a config file; ConfigError says what is wrong and where."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    return parse_config(text, source=path)


def parse_config(text: str, *, source: str) -> configs.Config:
    """Build a Config from YAML text (``source`` names it in errors)."""
    try:
        data = manifests.load_data(text, source=source)
    except errors.ManifestError as exc:
        raise errors.ConfigError(str(exc)) from exc
    if data is None:
        return configs.Config(source=source)
    r = _Reader(source)
    top = r.mapping(None, None, "", data, _TOP_KEYS)
    if "apiVersion" in top and top["apiVersion"] != API_VERSION:
        raise r.fail(top, "apiVersion", "apiVersion", f"must be {API_VERSION}")
    if "kind" in top and top["kind"] != "InjectionConfig":
        raise r.fail(top, "kind", "kind", "must be InjectionConfig")
    image = r.string(top, "image", "image", top["image"]) if "image" in top else None
    mode = profiles.Mode.NATIVE
    if "mode" in top:
        if top["mode"] not in tuple(profiles.Mode):
            raise r.fail(top, "mode", "mode", f"must be one of {', '.join(profiles.Mode)}")
        mode = profiles.Mode(top["mode"])

    known: dict[str, profiles.Profile] = dict(
        profiles.builtin_profiles(image) if image else profiles.builtin_profiles()
    )
    raw_profiles = top.get("profiles") or {}
    r.mapping(top, "profiles", "profiles", raw_profiles, tuple(raw_profiles))
    for name, body in raw_profiles.items():
        path = f"profiles.{name}"
        if not settings.is_dns_label(name):
            raise r.fail(raw_profiles, name, path, "a profile name must be a DNS-1123 label")
        if name in known:
            known[name] = _builtin_overrides(r, raw_profiles, name, body, known[name])
        else:
            known[name] = _user_profile(r, raw_profiles, name, body)

    defaults: tuple[str, ...] = ("logs", "metrics")
    if "defaultProfiles" in top:
        value = top["defaultProfiles"]
        if not isinstance(value, list):
            raise r.fail(top, "defaultProfiles", "defaultProfiles", "must be a list of names")
        for i, item in enumerate(value):
            if item not in known:
                raise r.fail(
                    value,
                    i,
                    f"defaultProfiles[{i}]",
                    f"no profile {item!r}; known profiles: {', '.join(known)}",
                )
        defaults = tuple(str(v) for v in value)
    return configs.Config(
        profiles=MappingProxyType(known),
        default_profiles=defaults,
        mode=mode,
        workloads=_workloads(r, top),
        source=source,
    )


def _workloads(r: _Reader, top: Mapping[str, Any]) -> workloads.Kinds:
    """``workloads:``: where custom kinds keep their pod template, by API group and kind."""
    kinds: dict[tuple[str, str], tuple[str, ...]] = {}
    for i, item in enumerate(r.objects(top, "workloads", "workloads")):
        path = f"workloads[{i}]"
        r.mapping(top["workloads"], i, path, item, _WORKLOAD_KEYS)
        group = item.get("group", "")
        if not isinstance(group, str):
            raise r.fail(item, "group", f"{path}.group", 'must be a string ("" for core)')
        kind = r.string(item, "kind", f"{path}.kind", item.get("kind"))
        steps = r.string(item, "path", f"{path}.path", item.get("path"))
        keys = tuple(steps.split("."))
        if not all(keys):
            raise r.fail(
                item, "path", f"{path}.path", "must be keys joined by dots, e.g. spec.template"
            )
        kinds[(group, kind)] = keys
    return MappingProxyType(kinds)


def _builtin_overrides(
    r: _Reader, node: Any, name: str, body: Any, profile: profiles.Profile
) -> profiles.Profile:
    path = f"profiles.{name}"
    body = r.mapping(node, name, path, body or {}, ("settings",))
    raw = body.get("settings") or {}
    raw = r.mapping(
        body, "settings", f"{path}.settings", raw, tuple(s.name for s in profile.settings)
    )
    new = []
    for s in profile.settings:
        if s.name not in raw:
            new.append(s)
            continue
        value = raw[s.name]
        problem = settings.check(s, value)
        if problem is not None:
            raise r.fail(raw, s.name, f"{path}.settings.{s.name}", problem)
        new.append(replace(s, default=_scalar_text(value)))
    return replace(profile, settings=tuple(new))


def _user_profile(r: _Reader, node: Any, name: str, body: Any) -> profiles.Profile:
    path = f"profiles.{name}"
    body = r.mapping(node, name, path, body, _PROFILE_KEYS)
    declared: list[settings.Setting] = []
    raw_settings = body.get("settings") or {}
    r.mapping(body, "settings", f"{path}.settings", raw_settings, tuple(raw_settings))
    common = {s.name: s for s in profiles.COMMON_SETTINGS}
    overrides: dict[str, str] = {}
    for key, spec in raw_settings.items():
        spath = f"{path}.settings.{key}"
        if not isinstance(key, str) or not key.replace("-", "").isalnum():
            raise r.fail(raw_settings, key, spath, "setting names use letters, digits and '-'")
        if isinstance(spec, dict):
            if key in common:
                raise r.fail(raw_settings, key, spath, f"{key} is a common setting; give a value")
            declared.append(_declared_setting(r, raw_settings, key, spec, spath))
        elif key in common:
            problem = settings.check(common[key], spec)
            if problem is not None:
                raise r.fail(raw_settings, key, spath, problem)
            overrides[key] = str(spec)
        elif isinstance(spec, str | int) and not isinstance(spec, bool):
            declared.append(settings.Setting(key, settings.Kind.STRING, str(spec)))
        else:
            raise r.fail(
                raw_settings,
                key,
                spath,
                f"give a default value or a mapping with {', '.join(_SETTING_KEYS)}",
            )

    template = profiles.Parts(
        init_containers=_containers(r, body, "initContainers", path),
        sidecars=_containers(r, body, "containers", path),
        volumes=_named(r, body, "volumes", path),
        app_mounts=_mounts(r, body, path),
        app_env=_named(r, body, "appEnv", path),
        after_init_containers=_after(r, body, path),
    )
    if not template.init_containers and not template.sidecars:
        raise r.fail(node, name, path, "a profile needs at least one of initContainers, containers")
    names = {s.name for s in declared} | set(common)
    for field_name in ("initContainers", "containers", "volumes", "appVolumeMounts", "appEnv"):
        for item in body.get(field_name) or ():
            unknown = profiles.placeholders(item) - names
            if unknown:
                raise r.fail(
                    body,
                    field_name,
                    f"{path}.{field_name}",
                    f"uses ${{{sorted(unknown)[0]}}}, which is not a setting of the profile; "
                    f"declare it under {path}.settings (write $${{ for a literal ${{)",
                )
    allow = body.get("allowHostNetwork", False)
    if not isinstance(allow, bool):
        raise r.fail(body, "allowHostNetwork", f"{path}.allowHostNetwork", "must be true or false")
    profile = profiles.template_profile(
        name,
        description=str(body.get("description") or ""),
        profile_settings=tuple(declared),
        template=template,
        allow_host_network=allow,
    )
    if overrides:
        profile = replace(
            profile,
            settings=tuple(
                replace(s, default=overrides[s.name]) if s.name in overrides else s
                for s in profile.settings
            ),
        )
    return profile


def _declared_setting(r: _Reader, node: Any, key: str, spec: Any, path: str) -> settings.Setting:
    spec = r.mapping(node, key, path, spec, _SETTING_KEYS)
    kind_name = spec.get("kind", "string")
    kinds = tuple(k.value for k in settings.Kind)
    if kind_name not in kinds:
        raise r.fail(spec, "kind", f"{path}.kind", f"must be one of {', '.join(kinds)}")
    kind = settings.Kind(kind_name)
    choices: tuple[str, ...] = ()
    if kind is settings.Kind.CHOICE:
        raw = spec.get("choices")
        if not isinstance(raw, list) or not raw:
            raise r.fail(
                spec,
                "choices" if "choices" in spec else "kind",
                f"{path}.choices",
                "a choice setting needs a non-empty list of choices",
            )
        choices = tuple(str(c) for c in raw)
    default = spec.get("default")
    setting = settings.Setting(
        key,
        kind,
        None if default is None else _scalar_text(default),
        str(spec.get("description") or ""),
        choices,
        required=default is None,
    )
    if default is not None and (problem := settings.check(setting, default)) is not None:
        raise r.fail(spec, "default", f"{path}.default", problem)
    return setting


def _containers(r: _Reader, body: Any, key: str, path: str) -> tuple[Any, ...]:
    items = r.objects(body, key, f"{path}.{key}")
    seen: set[str] = set()
    for i, c in enumerate(items):
        cpath = f"{path}.{key}[{i}]"
        name = c.get("name")
        if not settings.is_dns_label(name):
            raise r.fail(body[key], i, f"{cpath}.name", f"must be a DNS-1123 label, got {name!r}")
        if name in seen:
            raise r.fail(body[key], i, f"{cpath}.name", f"{name!r} is used twice")
        seen.add(name)
        if not isinstance(c.get("image"), str) or not c.get("image"):
            raise r.fail(
                c,
                "image" if "image" in c else None,
                f"{cpath}.image",
                "every container needs an image",
            )
        for forbidden in _FORBIDDEN_CONTAINER_KEYS:
            if forbidden in c:
                raise r.fail(
                    c,
                    forbidden,
                    f"{cpath}.{forbidden}",
                    "set by sidecarkit from the mode; remove it",
                )
        for list_key in ("command", "args"):
            value = c.get(list_key)
            if value is not None and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise r.fail(c, list_key, f"{cpath}.{list_key}", "must be a list of strings")
        for j, port in enumerate(r.objects(c, "ports", f"{cpath}.ports")):
            cp = port.get("containerPort")
            if not (isinstance(cp, int) and 1 <= cp <= 65535) and not (
                isinstance(cp, str) and profiles.placeholders(cp)
            ):
                raise r.fail(
                    port,
                    "containerPort" if "containerPort" in port else None,
                    f"{cpath}.ports[{j}].containerPort",
                    "must be a port number from 1 to 65535 or a ${setting}",
                )
        _mount_list(r, c, "volumeMounts", f"{cpath}.volumeMounts")
        _named(r, c, "env", cpath)
    return tuple(manifests.to_plain(c) for c in items)


def _named(r: _Reader, body: Any, key: str, path: str) -> tuple[Any, ...]:
    items = r.objects(body, key, f"{path}.{key}")
    for i, item in enumerate(items):
        if not isinstance(item.get("name"), str) or not item.get("name"):
            raise r.fail(body.get(key), i, f"{path}.{key}[{i}].name", "every entry needs a name")
    return tuple(manifests.to_plain(i) for i in items)


def _mount_list(r: _Reader, body: Any, key: str, path: str) -> tuple[Any, ...]:
    items = r.objects(body, key, path)
    for i, m in enumerate(items):
        for needed in ("name", "mountPath"):
            if not isinstance(m.get(needed), str) or not m.get(needed):
                raise r.fail(body.get(key), i, f"{path}[{i}].{needed}", f"a mount needs {needed}")
    return tuple(manifests.to_plain(i) for i in items)


def _after(r: _Reader, body: Any, path: str) -> tuple[str, ...]:
    if "afterInitContainers" not in body:
        return profiles.NETWORK_SETUP
    names = body["afterInitContainers"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise r.fail(
            body,
            "afterInitContainers",
            f"{path}.afterInitContainers",
            "must be a list of init container names ([] to go first)",
        )
    return tuple(str(n) for n in names)


def _mounts(r: _Reader, body: Any, path: str) -> tuple[Any, ...]:
    return _mount_list(r, body, "appVolumeMounts", f"{path}.appVolumeMounts")


def load_mapping(path: str) -> dict[str, Any]:
    """A YAML file holding one mapping, as plain data (for agent settings)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = manifests.to_plain(manifests.load_data(text, source=path))
    except errors.ManifestError as exc:
        raise errors.ConfigError(str(exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise errors.ConfigError(f"{path}: expected a mapping of settings at the top")
    return data


def load_facts(path: str) -> facts.Facts:
    """Read a facts file: ``kubernetesVersion`` and ``namespaceLabels``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise errors.ConfigError(f"cannot read facts file {path}: {exc.strerror}") from exc
    try:
        data = manifests.load_data(text, source=path)
    except errors.ManifestError as exc:
        raise errors.ConfigError(str(exc)) from exc
    r = _Reader(path)
    data = r.mapping(None, None, "", data or {}, ("kubernetesVersion", "namespaceLabels"))
    version = None
    if "kubernetesVersion" in data:
        raw = data["kubernetesVersion"]
        if not isinstance(raw, str):
            raise r.fail(
                data,
                "kubernetesVersion",
                "kubernetesVersion",
                f'must be a quoted string such as "1.30" (YAML reads {raw} as a number)',
            )
        try:
            version = facts.parse_version(raw)
        except errors.ConfigError as exc:
            raise r.fail(data, "kubernetesVersion", "kubernetesVersion", str(exc)) from exc
    labels = data.get("namespaceLabels") or {}
    labels = r.mapping(data, "namespaceLabels", "namespaceLabels", labels, tuple(labels))
    return facts.Facts(
        kubernetes_version=version,
        namespace_labels=MappingProxyType({str(k): str(v) for k, v in labels.items()}),
    )
