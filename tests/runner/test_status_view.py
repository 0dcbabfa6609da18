"""The live status view, seen the way a person sees it: in a terminal (tmux), mid-run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _pane(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def test_the_status_table_shows_state_ready_restarts_and_age(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "viewed"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "initContainers": [
                {
                    "name": "proxy",
                    "image": "busybox",
                    "restartPolicy": "Always",
                    "command": ["sh", "-c", "while :; do sleep 0.1; done"],
                }
            ],
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo hello from app; sleep 8"],
                },
                {"name": "flaky", "image": "busybox", "command": ["sh", "-c", "exit 1"]},
            ],
        },
    }
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    session = f"sk-view-{tmp_path.name[-8:]}"
    command = f"{sys.executable} -m sidecarkit run {path} --status on; sleep 30"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command], check=True
    )
    try:
        screen = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            screen = _pane(session)
            if "hello from app" in screen and "error (1)" in screen:
                break
            time.sleep(0.2)
        assert "CONTAINER" in screen
        assert "RESTARTS" in screen
        assert "hello from app" in screen
        rows = {
            line.split()[1]: line
            for line in screen.splitlines()
            if line.startswith("│") and len(line.split()) > 2
        }
        assert "running" in rows["proxy"]
        assert "sidecar" in rows["proxy"]
        assert "running" in rows["app"]
        assert "error (1)" in rows["flaky"]
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
