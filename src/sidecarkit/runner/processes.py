"""Containers as processes: each in its own process group, none outliving the runner.

Every container process starts a new session (so its whole process group can be signalled)
with ``PR_SET_PDEATHSIG`` set to SIGKILL (so it dies with the runner). That covers the direct
child only; a shell's children would be re-parented and live on. So the runner also keeps one
watchdog process, which learns each container's process group through a pipe and, when the
pipe closes because the runner is gone (even by SIGKILL), kills every group it was told about.

Output is read line by line and handed to a sink with the container's name and stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final

__all__ = ["Process", "Sink", "Watchdog"]

Sink = Callable[[str, str, str], None]
"""Called with (container, "stdout" or "stderr", line without its newline)."""

_PR_SET_PDEATHSIG: Final = 1

_WATCHDOG: Final = r"""
import os, signal, sys
groups = set()
for line in sys.stdin:
    word, _, number = line.strip().partition(" ")
    if word == "add":
        groups.add(int(number))
    elif word == "remove":
        groups.discard(int(number))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class Watchdog:
    """Kills every container's process group when the runner goes away, however it goes."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _say(self, line: str) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()

    def add(self, group: int) -> None:
        self._say(f"add {group}")

    def remove(self, group: int) -> None:
        self._say(f"remove {group}")

    def close(self) -> None:
        """End the watchdog; it kills whatever groups are still registered."""
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)


class Process:
    """One run of one container."""

    def __init__(
        self,
        name: str,
        proc: asyncio.subprocess.Process,
        pumps: list[asyncio.Task[None]],
        watchdog: Watchdog | None,
    ) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self._pumps = pumps
        self._watchdog = watchdog

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        sink: Sink,
        watchdog: Watchdog | None,
    ) -> Process:
        """Start ``argv``; OSError (no such program, say) is the caller's to report."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=cwd or None,
            stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if watchdog is not None:
            watchdog.add(proc.pid)
        pumps = [
            asyncio.create_task(_pump(proc.stdout, name, "stdout", sink), name=f"{name} stdout"),
            asyncio.create_task(_pump(proc.stderr, name, "stderr", sink), name=f"{name} stderr"),
        ]
        return cls(name, proc, pumps, watchdog)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the container's whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def wait(self) -> int:
        """The exit code, as the kubelet reports it: 128 + n for a death by signal n."""
        code = await self.proc.wait()
        # Whatever the main process left behind in its group goes with it.
        self.signal(signal.SIGKILL)
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.remove(self.pid)
        return 128 - code if code < 0 else code


async def _pump(stream: asyncio.StreamReader | None, name: str, kind: str, sink: Sink) -> None:
    if stream is None:
        return
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):
            line = await stream.read(1 << 16)
        if not line:
            return
        sink(name, kind, line.decode("utf-8", "replace").rstrip("\n"))
