"""Containers as processes: started contained, signalled as the kubelet does, read in full.

Each container process starts in its own session and cgroup with the container's mark
(``containing``), so that when it ends everything it started ends too, as in a container
whose PID namespace goes with its first process. The stop signal goes to the main process
only, as the container runtime sends it to PID 1; SIGKILL goes to everything of the container.

Output is read in chunks, never dropped: lines are handed to a sink with the container's name
and stream; a line longer than ``MAX_LINE`` bytes is handed over in parts, every part but the
last marked partial, as the CRI log format (``P`` and ``F`` tags) does at 16 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from sidecarkit.runner import containing

__all__ = ["MAX_LINE", "Process", "Sink", "run_command"]

Sink = Callable[[str, str, str, bool], None]
"""Called with (container, "stdout" or "stderr", line without its newline, partial)."""

MAX_LINE: Final = 16 * 1024
"""Bytes of one line handed over at once; longer lines come in parts (the CRI logger's size)."""
_READ: Final = 64 * 1024
_JOIN_AFTER: Final = 0.05
"""Seconds an exec probe or hook runs before it joins its container's cgroup (``run_command``)."""
_PIPE_GRACE: Final = 2.0
"""Seconds to drain output after a container is gone before its pipes are closed anyway."""


def _killpg(group: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


class Process:
    """One run of one container."""

    def __init__(
        self,
        name: str,
        proc: asyncio.subprocess.Process,
        pumps: list[asyncio.Task[None]],
        containment: containing.Containment | None,
    ) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self._pumps = pumps
        self._containment = containment

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        sink: Sink,
        containment: containing.Containment | None,
    ) -> Process:
        """Start ``argv``; OSError (no such program, say) is the caller's to report."""
        if containment is not None:
            env = {**env, **containment.mark(name)}
        # Our own pipes, not the subprocess transport's: its wait() would also wait for a
        # pipe that an escaped grandchild holds open.
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=dict(env),
                cwd=cwd or None,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
                preexec_fn=containment.preexec(name) if containment is not None else None,
            )
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        if containment is not None:
            containment.watch(proc.pid)
        pumps = [
            asyncio.create_task(_pump(out_r, name, "stdout", sink), name=f"{name} stdout"),
            asyncio.create_task(_pump(err_r, name, "stderr", sink), name=f"{name} stderr"),
        ]
        return cls(name, proc, pumps, containment)

    def terminate(self) -> None:
        """SIGTERM to the main process, as the runtime sends the stop signal to PID 1."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the container's whole process group, and everything else of it."""
        _killpg(self.pid)
        if self._containment is not None:
            self._containment.kill_container(self.name)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def wait(self) -> int:
        """The exit code, as the kubelet reports it: 128 + n for a death by signal n."""
        code = await self.proc.wait()
        # Whatever the main process left behind goes with it, as with a container's PID 1.
        self.kill()
        _, pending = await asyncio.wait(self._pumps, timeout=_PIPE_GRACE)
        if pending:  # a process out of reach still holds the pipes: stop reading them
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._containment is not None:
            self._containment.unwatch(self.pid)
        return 128 - code if code < 0 else code


def _split(data: bytes) -> int:
    """Where to cut a too-long line: at most MAX_LINE bytes, never inside a UTF-8 sequence."""
    cut = MAX_LINE
    for back in range(4):
        if data[cut - back] & 0xC0 != 0x80:
            return cut - back
    return cut


async def _pump(fd: int, name: str, kind: str, sink: Sink) -> None:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader(limit=_READ, loop=loop)
    pipe = os.fdopen(fd, "rb", 0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream, loop=loop), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        await _read(stream, name, kind, sink)
    finally:
        transport.close()


async def _read(stream: asyncio.StreamReader, name: str, kind: str, sink: Sink) -> None:
    buffer = b""
    while True:
        chunk = await stream.read(_READ)
        if not chunk:
            if buffer:
                sink(name, kind, buffer.decode("utf-8", "replace"), False)
            return
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            while end - start > MAX_LINE:
                cut = start + _split(buffer[start : start + MAX_LINE + 1])
                sink(name, kind, buffer[start:cut].decode("utf-8", "replace"), True)
                start = cut
            sink(name, kind, buffer[start:end].decode("utf-8", "replace"), False)
            start = end + 1
        buffer = buffer[start:]
        while len(buffer) > MAX_LINE:
            cut = _split(buffer[: MAX_LINE + 1])
            sink(name, kind, buffer[:cut].decode("utf-8", "replace"), True)
            buffer = buffer[cut:]


async def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    container: str,
    containment: containing.Containment | None,
) -> int:
    """Run an exec probe or hook "inside" ``container`` to its end; its exit code.

    Cancelled (a timeout, the pod's end, a second interrupt), it kills the command's whole
    process group before it returns, so nothing it started lives on. What a command that
    finished left running stays, as in the container, until the container ends.

    A command still running after ``_JOIN_AFTER`` joins its container's cgroup; one that ends
    sooner (most probes) never does. On cgroup v1 a join waits for an RCU grace period of the
    kernel, ~10 ms with the event loop blocked, once per probe per period otherwise; and the
    join, from outside, never held what the command forked before it anyway: that carries the
    container's mark and is in the command's process group, which are what kill it.
    """
    if containment is not None:
        env = {**env, **containment.mark(container)}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd or None,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    joining: asyncio.TimerHandle | None = None
    if containment is not None:
        containment.watch(proc.pid)

        def join() -> None:
            if proc.returncode is None:  # not seen to exit: the pid is still the command's
                containment.join(container, proc.pid)

        joining = asyncio.get_running_loop().call_later(_JOIN_AFTER, join)
    try:
        return await proc.wait()
    finally:
        if joining is not None:
            joining.cancel()
        if proc.returncode is None:
            _killpg(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
        if containment is not None:
            containment.unwatch(proc.pid)
