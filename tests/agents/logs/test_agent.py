"""``sidecarkit agent logs`` as a real process: ships lines, resumes, drains on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.agents.logs.agentproc import wait_ready
from tests.support.webhooks import free_port


def _start(tmp: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "agent",
            "logs",
            "--paths",
            str(tmp / "logs" / "*.log"),
            "--offsets-dir",
            str(tmp / "logs" / ".sidecarkit"),
            "--port",
            str(port),
            "--sink",
            "stdout=json",
            "--batch-wait",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, SIDECARKIT_POD_NAME="web-1", SIDECARKIT_POD_NAMESPACE="shop", **env),
    )


def _records(proc: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    out, _ = proc.communicate(timeout=30)
    return [json.loads(line) for line in out.splitlines()]


def test_ships_every_line_with_identity_and_resumes_after_a_restart(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_text("".join(f"line {i}\n" for i in range(100)))
    port = free_port()
    proc = _start(tmp_path, port)
    wait_ready(port)  # a SIGTERM sent while Python still imports kills the agent
    with app.open("a") as f:
        f.write("".join(f"line {i}\n" for i in range(100, 150)) + "last without newline")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    first = _records(proc)
    assert proc.returncode == 0
    assert [r["message"] for r in first] == [f"line {i}" for i in range(150)] + [
        "last without newline"
    ]
    assert first[0]["pod"] == "web-1"
    assert first[0]["namespace"] == "shop"
    with app.open("a") as f:
        f.write("\nafter restart\n")
    port = free_port()
    proc = _start(tmp_path, port)
    wait_ready(port)
    proc.send_signal(signal.SIGTERM)
    second = _records(proc)
    assert [r["message"] for r in second] == ["", "after restart"], "nothing shipped twice"


def test_exits_by_itself_when_the_app_is_done(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lifecycle = tmp_path / "lifecycle"
    lifecycle.mkdir()
    (logs / "job.log").write_text("working\n")
    proc = _start(
        tmp_path,
        free_port(),
        SIDECARKIT_EXIT_WHEN_DONE="work",
        SIDECARKIT_LIFECYCLE_DIR=str(lifecycle),
    )
    time.sleep(0.8)
    with (logs / "job.log").open("a") as f:
        f.write("finished\n")
    (lifecycle / "work.done").write_text("0\n")
    records = _records(proc)
    assert proc.returncode == 0
    assert [r["message"] for r in records] == ["working", "finished"]


def test_reads_stdin_and_exits_at_the_end_of_input() -> None:
    lines = "".join(f"piped {i}\n" for i in range(5000)) + "last"
    proc = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "agent", "logs", "--paths", "-", "--port", "0"],
        input=lines.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split("\n") == [f"piped {i}" for i in range(5000)] + ["last", ""]
