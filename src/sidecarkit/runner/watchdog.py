"""The orphan watchdog of ``sidecarkit run``, and the sweeps it shares with the runner.

The watchdog is a process of its own that holds the other end of a pipe from the runner (see
``containing``). It is started before the pod's first container, on a machine that is often
busy, so it must cost little: it runs this module alone (``python -I -S``, see
``containing``), which imports nothing but ``os``, ``signal``, ``sys`` and ``time``, not even
``typing`` or ``contextlib``. Importing the sidecarkit package would cost the interpreter
``typing``, ``re`` and more, some 20 ms of CPU taken from the runner's start-up;
``tests/runner/test_watchdog.py`` checks that it does not.

Protocol on its standard input: ``add N`` and ``remove N`` lines name the process groups it
must kill. End of input, because the run ended or the runner died (even by SIGKILL), is the
order to act: kill every group it was told about, everything in the run's cgroups and every
process carrying the run's mark, then remove the cgroups.
"""

from __future__ import annotations

import os
import signal
import sys
import time

__all__ = ["MARK", "SWEEPS", "cgroup_kill", "kill", "main", "remove_cgroups", "sweep"]

MARK = "SIDECARKIT_CONTAINER_ID"
"""The environment variable that marks every process of a container run here."""

SWEEPS = 5
"""Passes over /proc or a cgroup: a process forking while it is killed may leave a child."""


def _pids() -> list[int]:
    with os.scandir("/proc") as entries:
        return [int(entry.name) for entry in entries if entry.name.isdigit()]


def _marked(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = b"\0" + f.read()
    except OSError:
        return False
    return needle in environ


def kill(pid: int) -> None:
    """SIGKILL ``pid``, if it is still there and ours to kill."""
    try:  # noqa: SIM105 - contextlib would cost the watchdog's start-up collections, functools
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def sweep(prefix: str) -> int:
    """SIGKILL every process whose mark starts with ``prefix``; how many were found."""
    needle = f"\0{MARK}={prefix}".encode()
    me = os.getpid()
    total = 0
    for _ in range(SWEEPS):
        found = [pid for pid in _pids() if pid != me and _marked(pid, needle)]
        for pid in found:
            kill(pid)
        total += len(found)
        if not found:
            break
    return total


def cgroup_kill(directory: str) -> None:
    """SIGKILL everything in the cgroup ``directory`` (``cgroup.kill`` where there is one)."""
    kill_file = os.path.join(directory, "cgroup.kill")  # cgroup v2 since Linux 5.14
    if os.path.exists(kill_file):
        try:
            with open(kill_file, "w") as f:
                f.write("1")
        except OSError:
            pass  # one process at a time below
    for _ in range(SWEEPS):
        try:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return
        if not pids:
            return
        for pid in pids:
            kill(pid)


def remove_cgroups(top: str) -> None:
    """Kill everything in the cgroup tree ``top`` and remove it (the watchdog's last act)."""
    if not os.path.isdir(top):
        return
    with os.scandir(top) as entries:
        children = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    for child in children:
        cgroup_kill(child)
    cgroup_kill(top)
    for directory in [*children, top]:
        for _ in range(50):
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)  # killed processes leave once the kernel has finished them


def main(argv: list[str]) -> None:
    """``watchdog.py PREFIX CGROUP_TOP``: wait for end of input, then kill what is left."""
    prefix, cgroups = argv[0], argv[1]
    groups: set[int] = set()
    for line in sys.stdin:
        word, _, number = line.strip().partition(" ")
        if word == "add":
            groups.add(int(number))
        elif word == "remove":
            groups.discard(int(number))
    for group in groups:
        try:  # noqa: SIM105 - no contextlib here (see the module docstring)
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    sweep(prefix)
    if cgroups:
        remove_cgroups(cgroups)


if __name__ == "__main__":
    main(sys.argv[1:])
