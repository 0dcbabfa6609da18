"""Which pods get sidecars, which profiles, with which settings and in which mode.

Opt-in is a label so that the webhook's selectors keep every other pod away from it:
``sidecarkit.io/inject: "true"`` on the pod template or its namespace; ``"false"`` on either
wins over any ``"true"``. Everything else is an annotation on the pod template:

==================================  =====================================================
``sidecarkit.io/profiles``          comma-separated profile names, in placement order
``sidecarkit.io/mode``              native, legacy or auto for every profile of the pod
``sidecarkit.io/<profile>.<key>``   one setting of one profile (``mode`` included)
``sidecarkit.io/status``            written by the injector; never by hand
==================================  =====================================================

Any other ``sidecarkit.io/`` annotation is an error, because a typo that silently does nothing
is worse than a pod that is refused with a message naming the accepted keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sidecarkit import errors
from sidecarkit.injection import configs, facts, profiles, reports, settings

__all__ = [
    "INJECT_LABEL",
    "MODE_ANNOTATION",
    "PREFIX",
    "PROFILES_ANNOTATION",
    "STATUS_ANNOTATION",
    "Selection",
    "opt_in",
    "select",
]

PREFIX: Final = "sidecarkit.io/"
INJECT_LABEL: Final = "sidecarkit.io/inject"
PROFILES_ANNOTATION: Final = "sidecarkit.io/profiles"
MODE_ANNOTATION: Final = "sidecarkit.io/mode"
STATUS_ANNOTATION: Final = "sidecarkit.io/status"

_POD_KEYS: Final = (PROFILES_ANNOTATION, MODE_ANNOTATION, STATUS_ANNOTATION)
_SWITCH: Final = ("true", "false")

Code = reports.Code
Reason = reports.Reason


def opt_in(
    labels: Mapping[str, object], cluster: facts.Facts, *, target: str
) -> reports.Reason | None:
    """None when the pod is opted in, else the reason it is skipped."""
    pod = labels.get(INJECT_LABEL)
    namespace = cluster.namespace_labels.get(INJECT_LABEL)
    for value, where in ((pod, "the pod template"), (namespace, "the namespace")):
        if value is not None and value not in _SWITCH:
            raise errors.AnnotationError(
                f"{target}: label {INJECT_LABEL} on {where} is {value!r}; "
                'accepted values are "true" and "false"'
            )
    if pod == "false":
        return Reason(Code.SKIPPED_OPTED_OUT, f'the pod template has label {INJECT_LABEL}: "false"')
    if namespace == "false":
        return Reason(Code.SKIPPED_OPTED_OUT, f'its namespace has label {INJECT_LABEL}: "false"')
    if "true" in (pod, namespace):
        return None
    return Reason(
        Code.SKIPPED_NOT_OPTED_IN,
        f'neither the pod template nor its namespace has label {INJECT_LABEL}: "true"',
    )


@dataclass(frozen=True, slots=True)
class Selection:
    """The profiles a pod gets, each with its resolved settings and mode."""

    chosen: tuple[profiles.Profile, ...]
    """The profiles, in placement order."""
    values: Mapping[str, Mapping[str, str]]
    """Resolved settings per profile name; unset optional settings are absent."""
    modes: Mapping[str, profiles.Mode]
    """NATIVE or LEGACY per profile name; AUTO is resolved here."""
    reasons: tuple[reports.Reason, ...]
    """Defaults taken on the pod's behalf, worth telling the user about."""


def select(
    annotations: Mapping[str, object],
    config: configs.Config,
    cluster: facts.Facts,
    *,
    target: str,
) -> Selection:
    """Read the pod's sidecarkit annotations against the config, checking every one."""
    overrides = _settings_annotations(annotations, config, target=target)
    reasons: list[reports.Reason] = []

    raw = annotations.get(PROFILES_ANNOTATION)
    if raw is None:
        names = config.default_profiles
        reasons.append(
            Reason(
                Code.PROFILES_DEFAULTED,
                f"no {PROFILES_ANNOTATION} annotation, so the default profiles "
                f"({', '.join(names) or 'none'}) apply",
            )
        )
    else:
        names = _profile_names(raw, config, target=target)

    pod_mode = annotations.get(MODE_ANNOTATION)
    if pod_mode is not None and pod_mode not in tuple(profiles.Mode):
        raise errors.AnnotationError(
            f"{target}: annotation {MODE_ANNOTATION} is {pod_mode!r}; "
            f"accepted values are {', '.join(profiles.Mode)}"
        )

    chosen = tuple(config.profiles[n] for n in names)
    if any(p.name == "metrics" for p in chosen):
        reasons += _prometheus_annotations(annotations, config, overrides)
    values: dict[str, Mapping[str, str]] = {}
    modes: dict[str, profiles.Mode] = {}
    for profile in chosen:
        resolved = {s.name: s.default for s in profile.settings if s.default is not None}
        resolved.update(overrides.get(profile.name, {}))
        missing = [s.name for s in profile.settings if s.required and not resolved.get(s.name)]
        if missing:
            keys = ", ".join(f"{PREFIX}{profile.name}.{m}" for m in missing)
            raise errors.AnnotationError(
                f"{target}: profile {profile.name} needs annotation {keys}, which has no default"
            )
        values[profile.name] = resolved
        wanted = profiles.Mode(
            str(
                overrides.get(profile.name, {}).get("mode")
                or pod_mode
                or resolved.get("mode")
                or config.mode
            )
        )
        modes[profile.name], why = _resolve_mode(wanted, cluster)
        if why is not None:
            reasons.append(Reason(Code.MODE_DEFAULTED, why, profile.name))
    return Selection(chosen, values, modes, tuple(reasons))


def _resolve_mode(wanted: profiles.Mode, cluster: facts.Facts) -> tuple[profiles.Mode, str | None]:
    if wanted is not profiles.Mode.AUTO:
        return wanted, None
    version = cluster.kubernetes_version
    if version is None:
        return profiles.Mode.NATIVE, (
            "mode auto with no known cluster version chose native sidecars; "
            "pass --kubernetes-version to decide from the cluster"
        )
    if version >= facts.NATIVE_SIDECARS_SINCE:
        return profiles.Mode.NATIVE, None
    return profiles.Mode.LEGACY, None


def _profile_names(raw: object, config: configs.Config, *, target: str) -> tuple[str, ...]:
    if not isinstance(raw, str):
        raise errors.AnnotationError(
            f"{target}: annotation {PROFILES_ANNOTATION} must be a string such as "
            f'"logs,metrics", got {type(raw).__name__}'
        )
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if not name or name in names:
            continue
        if name not in config.profiles:
            raise errors.AnnotationError(
                f"{target}: annotation {PROFILES_ANNOTATION} names profile {name!r}, which "
                f"{config.source} does not define; known profiles: {', '.join(config.profiles)}"
            )
        names.append(name)
    return tuple(names)


def _settings_annotations(
    annotations: Mapping[str, object], config: configs.Config, *, target: str
) -> dict[str, dict[str, str]]:
    """Check every ``sidecarkit.io/`` annotation; return the per-profile settings they set."""
    found: dict[str, dict[str, str]] = {}
    for key, value in annotations.items():
        if not isinstance(key, str) or not key.startswith(PREFIX) or key in _POD_KEYS:
            continue
        name, dot, setting_key = key[len(PREFIX) :].partition(".")
        if not dot:
            accepted = ", ".join([*_POD_KEYS[:2], f"{PREFIX}<profile>.<key>"])
            raise errors.AnnotationError(
                f"{target}: annotation {key} is not one sidecarkit reads; accepted: {accepted}"
            )
        profile = config.profiles.get(name)
        if profile is None:
            raise errors.AnnotationError(
                f"{target}: annotation {key} is for profile {name!r}, which {config.source} "
                f"does not define; known profiles: {', '.join(config.profiles)}"
            )
        setting = profile.setting(setting_key)
        if setting is None:
            accepted = ", ".join(f"{PREFIX}{name}.{s.name}" for s in profile.settings)
            raise errors.AnnotationError(
                f"{target}: annotation {key} is not a setting of profile {name}; "
                f"accepted: {accepted}"
            )
        problem = settings.check(setting, value)
        if problem is not None:
            raise errors.AnnotationError(f"{target}: annotation {key}: {problem}")
        found.setdefault(name, {})[setting_key] = _text(value)
    return found


#: The de-facto scrape annotations Prometheus' Kubernetes examples read, and the ``metrics``
#: settings each one stands for when the pod does not set the setting itself.
PROMETHEUS_ANNOTATIONS: Final = (
    ("prometheus.io/scrape", "scrape"),
    ("prometheus.io/port", "port"),
    ("prometheus.io/path", "path"),
)


def _prometheus_annotations(
    annotations: Mapping[str, object],
    config: configs.Config,
    overrides: dict[str, dict[str, str]],
) -> list[Reason]:
    """Let ``prometheus.io/scrape|port|path`` on the pod set the ``metrics`` profile's
    settings of the same meaning, as a pod already annotated for Prometheus expects: the
    sidecar scrapes the port and path the annotations name, and nothing when scrape is
    ``"false"``. A ``sidecarkit.io/metrics.*`` annotation wins over its Prometheus twin.

    A value the setting cannot take (``prometheus.io/port: http``) is left out with a warning
    rather than refused: the annotation is Prometheus', and the pod was valid before."""
    profile = config.profiles["metrics"]
    mine = overrides.setdefault("metrics", {})
    reasons: list[Reason] = []
    for key, name in PROMETHEUS_ANNOTATIONS:
        setting = profile.setting(name)
        if key not in annotations or setting is None or name in mine:
            continue
        value = annotations[key]
        problem = settings.check(setting, value)
        if problem is not None:
            reasons.append(
                Reason(
                    Code.PROMETHEUS_ANNOTATION_IGNORED,
                    f"annotation {key}: {problem}, so the metrics profile keeps its "
                    f"{name} setting; set {PREFIX}metrics.{name} to choose",
                    "metrics",
                )
            )
            continue
        mine[name] = _text(value)
    return reasons


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
