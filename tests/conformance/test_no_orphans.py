"""No process of the pod outlives the runner, even when the runner is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conformance.harness import no_process_left


def _pids_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(pid))
    return found


def test_sigkill_of_the_runner_takes_every_container_process_with_it(tmp_path: Path) -> None:
    marker = "31.4159"  # a sleep length nothing else on the machine uses
    grandchildren = f"sleep {marker} & sleep {marker} & wait"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "orphans"},
        "spec": {
            "initContainers": [
                {
                    "name": "sidecar",
                    "image": "busybox",
                    "restartPolicy": "Always",
                    "command": ["sh", "-c", grandchildren],
                }
            ],
            "containers": [
                {"name": "main", "image": "busybox", "command": ["sh", "-c", grandchildren]}
            ],
        },
    }
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    runner = subprocess.Popen(
        [sys.executable, "-m", "sidecarkit", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while len(_pids_with(marker)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_pids_with(marker)) >= 4, "the pod's processes did not start"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 10
    while _pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_with(marker) == []
    assert no_process_left(str(tmp_path))
