"""Setting values are judged on their text, the same way from annotations and config files."""

from __future__ import annotations

import pytest

from sidecarkit.injection import settings

K = settings.Kind


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (K.PORT, ["1", "65535", 8080], ["0", "65536", "http", "-1"]),
        (K.BOOL, ["true", "false", True], ["yes", "True", "1"]),
        (K.PATH, ["/", "/var/log"], ["var/log", ""]),
        (K.QUANTITY, ["100m", "64Mi", "1", "1.5", "2e3", "1G"], ["64MB", "lots", "", "1.2.3"]),
        (K.DURATION, ["15s", "1m30s", "500ms", "2h"], ["15", "s", "1d", ""]),
        (K.NAME, ["a", "web-1"], ["Web", "-a", "a_b", "x" * 64]),
        (K.INT, ["0", "42"], ["-1", "4.2"]),
    ],
)
def test_each_kind_accepts_and_refuses(
    kind: settings.Kind, good: list[object], bad: list[object]
) -> None:
    setting = settings.Setting("s", kind, None)
    for value in good:
        assert settings.check(setting, value) is None, value
    for value in bad:
        problem = settings.check(setting, value)
        assert problem is not None, value
        assert problem.startswith(f"expected {setting.expected()}")


def test_choices_are_listed_in_the_error() -> None:
    setting = settings.Setting("sink", K.CHOICE, "stdout", choices=("stdout", "loki"))
    assert settings.check(setting, "kafka") == "expected one of stdout, loki, got 'kafka'"


def test_non_scalars_are_refused() -> None:
    assert settings.check(settings.Setting("s", K.STRING, None), ["a"]) == (
        "expected any string, got a list"
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)]
)
def test_durations_in_seconds(text: str, seconds: float) -> None:
    assert settings.seconds(text) == seconds


def test_a_bad_duration_says_what_a_good_one_looks_like() -> None:
    with pytest.raises(ValueError, match="is not a duration such as"):
        settings.seconds("soon")
