"""A check that a test leaves no process behind, however the process escaped.

While a test runs, the test process is made a child subreaper (``PR_SET_CHILD_SUBREAPER``):
every process the test started, directly or not, that loses its parent is re-parented to the
test process instead of to init, even after ``setsid``. So "nothing left behind" becomes
"no child of the test process that was not there before", which one pass over ``/proc`` can
tell without being confused by other work running on the same machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["no_leftover_processes"]

_PR_SET_CHILD_SUBREAPER = 36
_SETTLE = 10.0
"""Seconds a test's processes get to finish on their own after the test (a watchdog's sweep)."""


def _subreaper(on: bool) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


def _children() -> dict[int, tuple[str, str]]:
    """pid -> (state, command line) of every child of this process."""
    me = os.getpid()
    found: dict[int, tuple[str, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) != me:
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            cmdline = b""
        found[int(entry.name)] = (fields[0], cmdline.decode(errors="replace").strip())
    return found


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@contextlib.contextmanager
def no_leftover_processes(*, settle: float = _SETTLE) -> Iterator[None]:
    """Fail when a process started during the block is still alive ``settle`` s after it."""
    before = set(_children())
    _subreaper(True)
    try:
        yield
        deadline = time.monotonic() + settle
        while True:
            left = {p: v for p, v in _children().items() if p not in before}
            for pid, (state, _) in left.items():
                if state == "Z":
                    _reap(pid)
            alive = {p: cmd for p, (state, cmd) in left.items() if state != "Z"}
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)
        assert not alive, f"processes left behind by the test: {alive}"
    finally:
        _subreaper(False)
