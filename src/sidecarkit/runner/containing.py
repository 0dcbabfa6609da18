"""Keeping every process of a pod findable, so that none outlives its container or the run.

On a node a container is a PID namespace and a cgroup: when its main process ends, everything
in it ends, however it forked, and the kubelet's exec probes and hooks run inside it too.
Here containers are plain processes, so the runner rebuilds that in three layers:

1. **Process groups.** Every container process, exec probe and exec hook starts a new session,
   so its whole group can be killed at once, and gets ``PR_SET_PDEATHSIG`` = SIGKILL.
2. **A cgroup per container, where one can be made** (cgroup v2, or the v1 ``pids`` or
   ``freezer`` hierarchy, writable when the runner is root or has a delegated subtree). The
   child joins it before ``exec``; nothing it forks can leave it. Probes and hooks join their
   container's cgroup, as they would on a node.
3. **An environment mark.** Every process of a container carries
   ``SIDECARKIT_CONTAINER_ID=<run>.<container>`` and passes it to what it starts, so a
   grandchild that escaped its group with ``setsid`` is still found by one pass over ``/proc``.
   A process that both clears its environment and escapes its group, on a machine without a
   usable cgroup, is the one case left uncovered.

A watchdog process (``watchdog``, a module run on its own so that it starts cheaply) holds the
other end of a pipe from the runner. When the pipe closes, because the run ended or because the
runner died (even by SIGKILL), it kills every process group it was told about, everything in
the run's cgroups and everything carrying the run's mark, then removes the cgroups.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Final

from sidecarkit.runner import watchdog

__all__ = ["MARK", "Containment", "sweep"]

MARK: Final = watchdog.MARK
"""The environment variable that marks every process of a container run here."""

_PR_SET_PDEATHSIG: Final = 1
sweep = watchdog.sweep
_START_WATCHDOG: Final = (
    "import sys; sys.path.append(sys.argv[1]); import watchdog; watchdog.main(sys.argv[2:])"
)
"""The watchdog module alone, by the bytecode cached next to it; -I -S keep sys.path to the
standard library, so ``watchdog`` is ours."""


def _cgroup_base() -> str | None:
    """The directory of this process's cgroup in a hierarchy that can hold our children."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    root = "/sys/fs/cgroup"
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        paths[controllers] = path.strip("/")
    if os.path.exists(f"{root}/cgroup.controllers") and "" in paths:
        return os.path.join(root, paths[""]).rstrip("/")
    for name in ("pids", "freezer"):
        if name in paths and os.path.exists(f"{root}/{name}/cgroup.procs"):
            return os.path.join(root, name, paths[name]).rstrip("/")
    return None


class Containment:
    """One run's processes: their groups, cgroups and mark, and the watchdog behind them."""

    def __init__(self, *, cgroups: bool = True) -> None:
        self.run = os.urandom(6).hex()  # not uuid: it imports platform, 10 ms of start-up
        self._cgroup_top = self._make_cgroup_top() if cgroups else None
        self._cgroups: dict[str, str | None] = {}
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = libc.prctl
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _START_WATCHDOG,
                os.path.dirname(watchdog.__file__),
                f"{self.run}.",
                self._cgroup_top or "",
            ],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _make_cgroup_top(self) -> str | None:
        base = _cgroup_base()
        if base is None:
            return None
        top = f"{base}/sidecarkit-{self.run}"
        try:
            os.mkdir(top)
        except OSError:
            return None
        return top

    @property
    def cgroups(self) -> bool:
        """Whether containers get a cgroup each on this machine."""
        return self._cgroup_top is not None

    def mark(self, container: str) -> dict[str, str]:
        """The environment entry every process of ``container`` carries."""
        return {MARK: f"{self.run}.{container}"}

    def _cgroup(self, container: str) -> str | None:
        if container not in self._cgroups:
            directory: str | None = None
            if self._cgroup_top is not None:
                directory = f"{self._cgroup_top}/{container}"
                try:
                    os.makedirs(directory, exist_ok=True)
                except OSError:
                    directory = None
            self._cgroups[container] = directory
        return self._cgroups[container]

    def preexec(self, container: str) -> Callable[[], None]:
        """What a process of ``container`` runs between fork and exec."""
        cgroup = self._cgroup(container)
        procs = f"{cgroup}/cgroup.procs".encode() if cgroup is not None else None
        prctl = self._prctl

        def child() -> None:  # pragma: no cover - runs in the child before exec
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if procs is not None:
                try:
                    fd = os.open(procs, os.O_WRONLY)
                    try:
                        os.write(fd, str(os.getpid()).encode())
                    finally:
                        os.close(fd)
                except OSError:
                    pass  # the group and the mark still hold it

        return child

    def join(self, container: str, pid: int) -> None:
        """Move ``pid`` into ``container``'s cgroup from outside, for a process started cheaply.

        Exec probes run every few seconds; a ``preexec_fn`` would force a full fork of the
        runner for each, where without one the child is spawned with vfork. What the probe
        forks before this lands still carries the container's mark.
        """
        cgroup = self._cgroup(container)
        if cgroup is not None:
            with contextlib.suppress(OSError), open(f"{cgroup}/cgroup.procs", "w") as f:
                f.write(str(pid))

    def _say(self, line: str) -> None:
        stdin = self._watchdog.stdin
        if stdin is not None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                stdin.write(line + "\n")
                stdin.flush()

    def watch(self, group: int) -> None:
        """Have the watchdog kill process group ``group`` if the runner goes first."""
        self._say(f"add {group}")

    def unwatch(self, group: int) -> None:
        self._say(f"remove {group}")

    def kill_container(self, container: str) -> None:
        """SIGKILL every process of ``container`` still alive, however it escaped its group."""
        cgroup = self._cgroups.get(container)
        if cgroup is not None:
            watchdog.cgroup_kill(cgroup)
        sweep(f"{self.run}.{container}")

    def close(self) -> None:
        """End the run: the watchdog kills whatever is left of it and removes its cgroups."""
        stdin = self._watchdog.stdin
        if stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._watchdog.wait(timeout=30)
