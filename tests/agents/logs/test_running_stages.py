"""The logs agent as a real process with processing stages: what it ships, what it commits,
how it refuses a bad pipeline (``--config``, ``--check-config``) and what it counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.agents.logs.agentproc import wait_for, wait_ready
from tests.support.webhooks import free_port

STAGES = """
stages:
  - type: parse
    format: logfmt
  - type: grep
    field: level
    drop: ^debug$
  - type: modify
    copy: {k8s_pod: pod}
    remove: [n]
  - type: redact
    patterns: [email]
"""


def _config(tmp: Path, stages: str = STAGES) -> Path:
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    config = tmp / "logs.yaml"
    config.write_text(
        f"paths: {logs}/*.log\noffsets_dir: {logs}/.sidecarkit\nbatch_wait: 50ms\n{stages}"
    )
    return config


def _start(config: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            *("-m", "sidecarkit", "agent", "logs", "--config", str(config)),
            *("--sink", "stdout=json", "--port", str(port)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, SIDECARKIT_POD_NAME="web-1", SIDECARKIT_POD_NAMESPACE="shop"),
    )


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text: str = answer.read().decode()
            return text
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return [json.loads(line) for line in out.splitlines()]


def _lines(first: int, count: int, *, every_debug: bool = False) -> str:
    return "".join(
        f'n={i} level={"debug" if every_debug or i % 2 else "info"} msg="line {i} of a@b.io"\n'
        for i in range(first, first + count)
    )


def test_filtered_lines_are_committed_so_a_restart_does_not_send_them_again(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    app = tmp_path / "logs" / "app.log"
    app.write_text(_lines(0, 50))
    port = free_port()
    proc = _start(config, port)
    assert wait_for(lambda: 'stage="grep"} 50' in _metrics(port), 20)
    with app.open("a") as f:
        f.write(_lines(50, 20, every_debug=True))  # the file now ends in lines all dropped
    assert wait_for(lambda: 'sidecarkit_logs_stage_in_total{stage="grep"} 70' in _metrics(port), 20)
    first = _stop(proc)
    assert [r["message"] for r in first] == [f"line {i} of [REDACTED]" for i in range(0, 50, 2)]
    assert first[0]["level"] == "info"
    assert first[0]["k8s_pod"] == "web-1"
    assert "n" not in first[0]
    with app.open("a") as f:
        f.write('level=info msg="after restart"\n')
    port = free_port()
    proc = _start(config, port)
    wait_ready(port)  # on SIGTERM it reads to the end of the file first
    second = _stop(proc)
    assert [r["message"] for r in second] == ["after restart"], "no dropped line read twice"


def test_a_held_record_dropped_when_flushed_is_committed_too(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "stages:\n  - {type: multiline, start: '^\\S', flush_timeout: 60s}\n"
        "  - {type: grep, drop: ERROR}\n",
    )
    app = tmp_path / "logs" / "app.log"
    app.write_text("started\nERROR boom\n  at a\n  at b\n")
    port = free_port()
    proc = _start(config, port)
    assert wait_for(lambda: 'sidecarkit_logs_stage_in_total{stage="grep"} 1' in _metrics(port), 20)
    first = _stop(proc)  # the trace is held until the agent stops, then flushed and dropped
    assert [r["message"] for r in first] == ["started"]
    with app.open("a") as f:
        f.write("after restart\n")
    # Without the grep stage, a record read again would show.
    config = _config(tmp_path, "stages:\n  - {type: multiline, start: '^\\S'}\n")
    port = free_port()
    proc = _start(config, port)
    wait_ready(port)  # on SIGTERM it reads to the end of the file first
    second = _stop(proc)
    assert [r["message"] for r in second] == ["after restart"]


def test_the_metrics_endpoint_counts_what_each_stage_took_in_passed_on_and_dropped(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    (tmp_path / "logs" / "app.log").write_text(_lines(0, 10))
    port = free_port()
    proc = _start(config, port)
    try:
        assert wait_for(lambda: 'stage_out_total{stage="redact"} 5' in _metrics(port), 20)
        text = _metrics(port)
    finally:
        _stop(proc)
    for line in (
        'sidecarkit_logs_stage_in_total{stage="parse"} 10',
        'sidecarkit_logs_stage_out_total{stage="parse"} 10',
        'sidecarkit_logs_stage_dropped_total{stage="grep"} 5',
        'sidecarkit_logs_stage_in_total{stage="modify"} 5',
        'sidecarkit_logs_stage_in_total{stage="redact"} 5',
    ):
        assert line in text


@pytest.mark.parametrize("flag", ["--config", "--check-config"])
def test_a_bad_pipeline_stops_the_agent_before_start_with_exit_status_2(
    tmp_path: Path, flag: str
) -> None:
    config = _config(tmp_path, "stages:\n  - type: grep\n    field: level\n    drop: '^(debug'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "logs", flag, str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{config}: stages[0].drop[0]: '^(debug' is not a valid regular expression" in (
        proc.stderr
    )
    assert "fix the pattern" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unknown_stage_name_is_refused_with_the_names_that_exist(tmp_path: Path) -> None:
    config = _config(tmp_path, "stages:\n  - type: filter\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "logs", "--check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "stages[0].type: 'filter' is not a stage; use one of grep, modify" in proc.stderr


def test_check_config_prints_the_effective_pipeline_in_order(tmp_path: Path) -> None:
    config = _config(tmp_path, "stages:\n  - {type: multiline, preset: java}\n" + STAGES[9:])
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "sidecarkit", "agent", "logs", "--check-config", str(config)),
            *("--sink", "loki=http://user:secret@loki:3100"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"app: {tmp_path}/logs/*.log (parser: raw multiline=java)" in out
    order = [
        "1. multiline (multiline): preset='java' (joined by each source's parser)",
        "2. parse (parse): format='logfmt' field='message'",
        "3. grep (grep): field='level' drop=[^debug$]",
        "4. modify (modify): remove=[n] copy={k8s_pod: 'pod'}",
        "5. redact (redact): fields=[message] patterns=[email]",
        "loki: loki -> http://***@loki:3100",
    ]
    positions = [out.index(line) for line in order]
    assert positions == sorted(positions)
    assert "secret" not in out


def test_throttle_holds_the_rate_per_level_under_a_tenfold_flood_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    rate, seconds = 50, 10
    config = _config(
        tmp_path,
        f"parser: json\nstages:\n  - {{type: throttle, key: level, rate: {rate}, per: 1s}}\n",
    )
    start = 1_795_973_184  # the flood's record times: ten times the rate, for each level
    lines = []
    for n in range(rate * 10 * 2 * seconds):
        second, within = divmod(n, rate * 10 * 2)
        stamp = f"{start + second}.{within * 1000 // (rate * 20):03d}"
        lines.append(f'{{"ts": {stamp}, "level": "{"warn" if n % 2 else "info"}", "msg": "{n}"}}\n')
    (tmp_path / "logs" / "app.log").write_text("".join(lines))
    port = free_port()
    proc = _start(config, port)
    assert wait_for(
        lambda: f'stage_in_total{{stage="throttle"}} {len(lines)}' in _metrics(port), 30
    )
    text = _metrics(port)
    shipped = _stop(proc)
    per_window: dict[tuple[object, str], int] = {}
    for record in shipped:
        window = (record["level"], str(record["time"])[:19])
        per_window[window] = per_window.get(window, 0) + 1
    assert len(per_window) == 2 * seconds
    assert all(abs(count - rate) <= rate * 0.02 for count in per_window.values()), per_window
    dropped = len(lines) - len(shipped)
    assert dropped == 2 * seconds * rate * 9
    assert f'sidecarkit_logs_throttled_total{{stage="throttle",key="warn"}} {dropped // 2}' in text


def test_check_config_shows_what_flags_change_without_starting(tmp_path: Path) -> None:
    config = _config(tmp_path)
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "sidecarkit", "agent", "logs", "--check-config", str(config)),
            *("--paths", "/srv/other/*.log", "--port", str(port)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "app: /srv/other/*.log (parser: raw)" in proc.stdout
    assert "stages: none" not in proc.stdout
    assert _metrics(port) == "", "the check starts nothing"
