"""No process of the pod outlives the runner, even when the runner is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecarkit.runner import containing
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


def _wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def _start(
    tmp_path: Path, pod: dict[str, Any], *args: str, cgroups: str = "on"
) -> subprocess.Popen[bytes]:
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    return subprocess.Popen(
        [sys.executable, "-m", "sidecarkit", "run", str(path), "--events", "json", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SIDECARKIT_RUN_CGROUPS": cgroups},
    )


def _pod(main: dict[str, Any], grace: int = 30) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "orphans"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "main", "image": "busybox", **main}],
        },
    }


_FOREVER = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]


def test_a_pre_stop_hook_cut_off_at_the_deadline_takes_its_children_with_it(
    tmp_path: Path,
) -> None:
    # The kubelet kills the hook's exec session with the container: nothing of it survives.
    marker = "61.71"
    up = tmp_path / "up"
    pod = _pod(
        {
            "command": [
                "sh",
                "-c",
                f"trap 'exit 0' TERM; touch {up}; while :; do sleep 0.05; done",
            ],
            "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", f"sleep {marker} & wait"]}}},
        },
        grace=1,
    )
    runner = _start(tmp_path, pod)
    # Once the container runs, the runner's SIGTERM handler is in place: a SIGTERM during
    # Python's start-up (seconds, on a busy machine) would kill the runner before any hook.
    assert _wait_for(up.exists, 20), "the container never started"
    runner.send_signal(signal.SIGTERM)
    assert _wait_for(lambda: bool(_pids_with(marker)), 10), "the preStop hook never ran"
    runner.wait(timeout=30)
    assert _wait_for(lambda: not _pids_with(marker), 3), "the hook's child outlived the run"


def test_an_exec_probe_that_times_out_takes_its_children_with_it(tmp_path: Path) -> None:
    marker = "61.72"
    pod = _pod(
        {
            "command": ["sh", "-c", "sleep 3"],
            "readinessProbe": {
                "exec": {"command": ["sh", "-c", f"sleep {marker} & wait"]},
                "timeoutSeconds": 1,
                "periodSeconds": 1,
            },
        }
    )
    runner = _start(tmp_path, pod)
    assert _wait_for(lambda: bool(_pids_with(marker)), 20), "the probe never ran"
    # Once the probe has timed out (1 s), its child must be gone while the pod still runs.
    time.sleep(1.5)
    alive = _pids_with(marker)
    assert runner.wait(timeout=30) == 0
    assert len(alive) <= 1, "children of timed-out probes pile up"
    assert _wait_for(lambda: not _pids_with(marker), 3)


def test_sigkill_of_the_runner_takes_a_running_exec_probe_with_it(tmp_path: Path) -> None:
    marker = "61.73"
    pod = _pod(
        {
            "command": _FOREVER,
            "livenessProbe": {
                "exec": {"command": ["sh", "-c", f"sleep {marker} & wait"]},
                "timeoutSeconds": 60,
                "periodSeconds": 60,
            },
        }
    )
    runner = _start(tmp_path, pod)
    assert _wait_for(lambda: len(_pids_with(marker)) >= 2, 20), "the probe never ran"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert _wait_for(lambda: not _pids_with(marker), 10), "the probe outlived the runner"


def test_a_second_interrupt_cancels_running_pre_stop_hooks(tmp_path: Path) -> None:
    marker = "61.74"
    up = tmp_path / "up"
    pod = _pod(
        {
            "command": [
                "sh",
                "-c",
                f"trap 'exit 0' TERM; touch {up}; while :; do sleep 0.05; done",
            ],
            "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", f"sleep {marker}"]}}},
        },
        grace=60,
    )
    runner = _start(tmp_path, pod)
    assert _wait_for(up.exists, 20), "the container never started"
    runner.send_signal(signal.SIGINT)
    assert _wait_for(lambda: bool(_pids_with(marker)), 10), "the preStop hook never ran"
    runner.send_signal(signal.SIGINT)
    runner.wait(timeout=15)  # not the 60 s grace period
    assert _wait_for(lambda: not _pids_with(marker), 3), "the hook outlived the run"


@pytest.mark.parametrize("cgroups", ["on", "off"])
def test_a_daemonized_grandchild_holding_stdout_neither_hangs_nor_outlives_the_pod(
    tmp_path: Path, cgroups: str
) -> None:
    # In a container the daemon dies with the container's init process (its PID namespace
    # goes); here it escaped the process group with setsid and still holds the output pipe.
    marker = "61.75"
    pod = _pod({"command": ["sh", "-c", f"setsid sleep {marker} & sleep 0.2; echo up"]})
    runner = _start(tmp_path, pod, cgroups=cgroups)
    try:
        code = runner.wait(timeout=30)
    finally:
        runner.kill()
        for pid in _pids_with(marker):
            os.kill(pid, signal.SIGKILL)
    assert code == 0
    assert _wait_for(lambda: not _pids_with(marker), 3), "the daemon outlived the pod"


def test_a_daemon_that_clears_its_environment_is_caught_by_the_container_cgroup(
    tmp_path: Path,
) -> None:
    probe = containing.Containment()
    usable = probe.cgroups
    probe.close()
    if not usable:
        pytest.skip("no cgroup hierarchy this user can write to here")
    marker = "61.76"
    pod = _pod({"command": ["sh", "-c", f"env -i setsid sleep {marker} & sleep 0.3; echo up"]})
    runner = _start(tmp_path, pod)
    try:
        code = runner.wait(timeout=30)
    finally:
        runner.kill()
        for pid in _pids_with(marker):
            os.kill(pid, signal.SIGKILL)
    assert code == 0
    assert _wait_for(lambda: not _pids_with(marker), 3), "the daemon outlived the pod"
