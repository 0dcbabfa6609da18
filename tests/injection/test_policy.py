"""Opt-in, profile selection, settings and mode precedence."""

from __future__ import annotations

import pytest

from sidecarkit import errors
from sidecarkit.injection import Code, Config, Facts, Mode, policy

T = "Pod/x"


@pytest.mark.parametrize(
    ("pod", "namespace", "code"),
    [
        (None, None, Code.SKIPPED_NOT_OPTED_IN),
        ("true", None, None),
        (None, "true", None),
        ("false", "true", Code.SKIPPED_OPTED_OUT),
        ("true", "false", Code.SKIPPED_OPTED_OUT),
        ("false", None, Code.SKIPPED_OPTED_OUT),
        ("true", "true", None),
    ],
)
def test_opt_in_truth_table(pod: str | None, namespace: str | None, code: Code | None) -> None:
    labels = {} if pod is None else {policy.INJECT_LABEL: pod}
    facts = Facts(namespace_labels={} if namespace is None else {policy.INJECT_LABEL: namespace})
    reason = policy.opt_in(labels, facts, target=T)
    assert (reason.code if reason else None) == code


def test_a_namespace_label_that_is_not_a_switch_is_an_error() -> None:
    with pytest.raises(errors.AnnotationError, match="on the namespace is 'enabled'"):
        policy.opt_in({}, Facts(namespace_labels={policy.INJECT_LABEL: "enabled"}), target=T)


def _modes(
    annotations: dict[str, str],
    *,
    config_mode: Mode = Mode.NATIVE,
    version: tuple[int, int] | None = None,
) -> dict[str, Mode]:
    selection = policy.select(
        annotations, Config(mode=config_mode), Facts(kubernetes_version=version), target=T
    )
    return dict(selection.modes)


def test_mode_precedence_profile_annotation_then_pod_then_config() -> None:
    assert _modes({}) == {"logs": Mode.NATIVE, "metrics": Mode.NATIVE}
    assert _modes({}, config_mode=Mode.LEGACY) == {"logs": Mode.LEGACY, "metrics": Mode.LEGACY}
    assert _modes({"sidecarkit.io/mode": "legacy"}) == {"logs": Mode.LEGACY, "metrics": Mode.LEGACY}
    assert _modes({"sidecarkit.io/mode": "legacy", "sidecarkit.io/metrics.mode": "native"}) == {
        "logs": Mode.LEGACY,
        "metrics": Mode.NATIVE,
    }


@pytest.mark.parametrize(
    ("version", "mode"), [((1, 28), Mode.LEGACY), ((1, 29), Mode.NATIVE), ((1, 33), Mode.NATIVE)]
)
def test_auto_follows_the_cluster_version(version: tuple[int, int], mode: Mode) -> None:
    assert set(_modes({}, config_mode=Mode.AUTO, version=version).values()) == {mode}


def test_auto_without_a_version_is_native_and_says_so() -> None:
    selection = policy.select({}, Config(mode=Mode.AUTO), Facts(), target=T)
    assert set(selection.modes.values()) == {Mode.NATIVE}
    assert Code.MODE_DEFAULTED in [r.code for r in selection.reasons]


def test_profiles_keep_annotation_order_and_drop_repeats() -> None:
    selection = policy.select(
        {"sidecarkit.io/profiles": " metrics , logs,metrics,"}, Config(), Facts(), target=T
    )
    assert [p.name for p in selection.chosen] == ["metrics", "logs"]
    assert selection.reasons == ()


@pytest.mark.parametrize(
    ("annotations", "pattern"),
    [
        (
            {"sidecarkit.io/inject": "true"},
            "is not one sidecarkit reads; accepted: sidecarkit.io/profiles",
        ),
        (
            {"sidecarkit.io/mesh.port": "1"},
            "is for profile 'mesh', which the built-in config does not define",
        ),
        ({"sidecarkit.io/mode": "fast"}, "accepted values are native, legacy, auto"),
        ({"sidecarkit.io/logs.memory": "lots"}, "expected a Kubernetes quantity"),
        ({"sidecarkit.io/metrics.interval": "15"}, "expected a duration"),
        ({"sidecarkit.io/profiles": "logs,tracing"}, "names profile 'tracing'"),
    ],
)
def test_bad_annotations_name_themselves_and_what_is_accepted(
    annotations: dict[str, str], pattern: str
) -> None:
    with pytest.raises(errors.AnnotationError, match=pattern):
        policy.select(annotations, Config(), Facts(), target=T)


def test_settings_from_annotations_reach_the_profile() -> None:
    selection = policy.select(
        {"sidecarkit.io/logs.dir": "/srv/logs", "sidecarkit.io/logs.cpu": "50m"},
        Config(),
        Facts(),
        target=T,
    )
    assert selection.values["logs"]["dir"] == "/srv/logs"
    assert selection.values["logs"]["cpu"] == "50m"
    assert selection.values["metrics"]["port"] == "8080"
