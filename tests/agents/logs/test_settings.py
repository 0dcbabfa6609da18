"""Settings of the logs agent: YAML, env and flags, with errors that say where and what."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecarkit.agents.logs import settings


def test_yaml_mapping_sets_sources_sinks_and_tuning() -> None:
    config = settings.from_mapping(
        {
            "sources": [
                {"name": "app", "paths": "/var/log/app/*.log", "parser": {"format": "json"}},
                {"name": "gc", "paths": "/var/log/app/gc.log", "parser": {"multiline": "java"}},
            ],
            "sinks": [
                {"kind": "loki", "endpoint": "http://loki:3100", "options": {"tenant": "shop"}},
                "stdout=json",
            ],
            "labels": {"team": "payments"},
            "batch_wait": "250ms",
            "max_inflight": 1048576,
            "max_retries": 5,
            "long_lines": "truncate",
        },
        source="logs.yaml",
    )
    assert [s.name for s in config.sources] == ["app", "gc"]
    assert config.sources[0].parser.format == "json"
    assert config.sources[1].parser.multiline == "java"
    assert [(s.kind, s.endpoint) for s in config.sinks] == [
        ("loki", "http://loki:3100"),
        ("stdout", "json"),
    ]
    assert config.sinks[0].options == {"tenant": "shop"}
    assert config.labels == (("team", "payments"),)
    assert config.tuning.batch_wait == 0.25
    assert config.tuning.max_inflight == 1048576
    assert config.tuning.max_retries == 5
    assert config.long_lines == "truncate"


def test_env_from_the_injection_profile() -> None:
    config = settings.from_env(
        {
            "SIDECARKIT_POD_NAME": "web-1",
            "SIDECARKIT_POD_NAMESPACE": "shop",
            "SIDECARKIT_LOGS_PATHS": "/var/log/app/*.log",
            "SIDECARKIT_LOGS_SINK": "loki",
            "SIDECARKIT_LOGS_ENDPOINT": "http://loki:3100",
            "SIDECARKIT_LOGS_PARSER": "cri",
            "SIDECARKIT_LOGS_MULTILINE": "go",
            "SIDECARKIT_ADMIN_PORT": "15100",
        }
    )
    assert config.labels[:2] == (("pod", "web-1"), ("namespace", "shop"))
    assert config.sources[0].paths == "/var/log/app/*.log"
    assert (config.sources[0].parser.format, config.sources[0].parser.multiline) == ("cri", "go")
    assert (config.sinks[0].kind, config.sinks[0].endpoint) == ("loki", "http://loki:3100")
    assert config.port == 15100


def test_pod_labels_come_from_the_downward_api_volume(tmp_path: Path) -> None:
    (tmp_path / "labels").write_text('app="web"\nversion="1.2"\nnote="say \\"hi\\""\n')
    assert settings.pod_labels(str(tmp_path), ("app",)) == {"app": "web"}
    assert settings.pod_labels(str(tmp_path), ("*",)) == {
        "app": "web",
        "version": "1.2",
        "note": 'say "hi"',
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sinks": ["kafka=x"]}, "unknown sink 'kafka'"),
        ({"sinks": [{"kind": "loki"}]}, "sinks[0]"),
        ({"sinks": [{"kind": "file", "endpoint": "/x", "options": {"fsink": True}}]}, "fsink"),
        ({"sources": [{"paths": 3}]}, "each source needs paths"),
        ({"sources": [{"paths": "a"}, {"name": "app", "paths": "b"}]}, "used twice"),
        ({"parser": {"format": "xml"}}, "parser"),
        ({"parser": {"multiline": "cobol"}}, "cobol"),
        ({"batch_wait": "soon"}, "batch_wait"),
        ({"max_inflight": 0}, "max_inflight: must be a whole number of at least 1"),
        ({"long_lines": "wrap"}, "long_lines must be split or truncate"),
        ({"port": 70000}, "port must be a port number"),
        ({"colour": "blue"}, "unknown setting 'colour'"),
        ({"batch_bytes": 4194304}, "max_inflight (2097152) must be at least batch_bytes"),
    ],
)
def test_bad_settings_say_where_and_what(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"logs\.yaml") as caught:
        settings.from_mapping(data, source="logs.yaml")
    assert message in str(caught.value)


def test_the_agent_refuses_to_start_with_a_bad_setting(tmp_path: Path) -> None:
    config = tmp_path / "logs.yaml"
    config.write_text("sinks:\n  - kind: loki\n    endpoint: ftp://nope\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "logs", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert str(config) in proc.stderr
    assert "sinks[0]" in proc.stderr
