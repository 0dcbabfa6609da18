"""Settings from YAML and flags: errors that name the key, and ``--dry-run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecarkit.agents.proxy import settings as proxy_settings


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"limits": {"max_conections": 5}}, "limits.max_conections: unknown key"),
        ({"limits": {"max_connections": 0}}, "limits.max_connections: must be a whole number of at least 1"),
        ({"timeouts": {"idle": "soon"}}, "timeouts.idle: 'soon' is not a duration"),
        ({"inbound": {"app": "localhost"}}, "inbound.app: 'localhost' is not an address; write HOST:PORT"),
        ({"upstreams": [{"name": "a", "listen": 15001}]}, "upstreams[0]: no endpoints; give endpoints:"),
        ({"upstreams": [{"name": "a", "listen": 1, "endpoints": ["x:1"], "balancer": "best"}]},
         "upstreams[0].balancer: 'best' is unknown; use one of p2c-peak-ewma"),
        ({"retries": {"on_status": [700]}}, "retries.on_status: 700 is not an HTTP status code"),
        ({"colour": "blue"}, "colour: unknown key; the top-level keys are"),
        ({"admin": "0.0.0.0:15006", "inbound": {"listen": "0.0.0.0:15006"}}, "give each its own port"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_key_and_the_fix(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"^proxy\.yaml: ") as caught:
        proxy_settings.from_mapping(data, source="proxy.yaml")
    assert message in str(caught.value)


def test_dry_run_prints_the_effective_settings_from_yaml_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text("inbound:\n  app: 127.0.0.1:9000\ntimeouts:\n  connect: 250ms\n")
    out = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--config", str(config),
         "--upstream", "pay=15001=10.0.0.7:8080,10.0.0.8:8080", "--dry-run"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "app: 127.0.0.1:9000" in out
    assert "connect: 0.25" in out
    assert "- 10.0.0.8:8080" in out
    assert "balancer: p2c-peak-ewma" in out


def test_a_bad_flag_is_an_error_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--upstream", "pay=15001"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 3
    assert "--upstream 'pay=15001': write NAME=LISTEN=HOST:PORT" in done.stderr
    assert "Traceback" not in done.stderr
