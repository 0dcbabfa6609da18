"""Waking the shipper when a followed directory changes: Linux inotify, polling otherwise.

Polling every ``poll`` (0.25 s) leaves a window in which a file can be written and then
truncated (``copytruncate``) or created and deleted before the agent looks. Fluent Bit closes
most of it by waking on inotify events; so does this agent: the directories the globs name are
watched for writes, creations, renames and deletions, and each event wakes the shipper's loop at
once (events are coalesced, at most one wake-up per ``COALESCE`` seconds). Where inotify is not
available (another OS, a glob with wildcards in its directory part, the watch limit reached) the
agent polls as before; inotify only makes it look sooner.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob as globbing
import logging
import os
import struct
from collections.abc import Iterable
from typing import Final

__all__ = ["COALESCE", "SAFETY_POLL", "Watcher", "directories"]

log = logging.getLogger("sidecarkit.agent.logs")

COALESCE: Final = 0.01
"""Seconds the shipper waits after a wake-up for more events, so writes one line at a time do
not make it look once per line."""

SAFETY_POLL: Final = 2.0
"""Seconds between full looks at files in a watched directory, in case an event was missed."""

_IN_MODIFY: Final = 0x002
_IN_CLOSE_WRITE: Final = 0x008
_IN_MOVED_FROM: Final = 0x040
_IN_MOVED_TO: Final = 0x080
_IN_CREATE: Final = 0x100
_IN_DELETE: Final = 0x200
_IN_Q_OVERFLOW: Final = 0x4000
_MASK: Final = (
    _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
)
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC
_EVENT: Final = struct.Struct("iIII")


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    if not hasattr(libc, "inotify_init1") or not hasattr(libc, "inotify_add_watch"):
        return None
    return libc


def directories(patterns: Iterable[str]) -> list[str]:
    """The directories to watch: each glob's directory part, when it has no wildcard."""
    out: list[str] = []
    for pattern in patterns:
        if pattern == "-":
            continue
        directory = os.path.dirname(pattern) or "."
        if globbing.has_magic(directory) or directory in out:
            continue
        out.append(directory)
    return out


class Watcher:
    """One inotify descriptor watching ``dirs``; ``fd`` is None when polling is all there is."""

    def __init__(self, dirs: list[str]) -> None:
        self.fd: int | None = None
        self.watched: set[str] = set()
        """The directories inotify watches: their files need only a slow safety-net poll."""
        if not dirs:
            return
        libc = _libc()
        if libc is None:
            log.info("inotify is not available; polling the log files")
            return
        fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        if fd < 0:
            log.warning("inotify_init1: %s; polling the log files", os.strerror(ctypes.get_errno()))
            return
        for directory in dirs:
            if libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
                log.warning(
                    "cannot watch %s with inotify (%s); polling it",
                    directory,
                    os.strerror(ctypes.get_errno()),
                )
            else:
                self.watched.add(directory)
        self.fd = fd

    def take(self) -> bool:
        """Read every pending event; True if there was any (or the queue overflowed)."""
        if self.fd is None:
            return False
        seen = False
        while True:
            try:
                data = os.read(self.fd, 64 << 10)
            except BlockingIOError:
                return seen
            except OSError:
                return True
            if not data:
                return seen
            at = 0
            while at + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, at)
                at += _EVENT.size + length
                seen = seen or bool(mask & (_MASK | _IN_Q_OVERFLOW))

    def watches(self, pattern: str) -> bool:
        """Whether changes to the files ``pattern`` matches wake the shipper."""
        return self.fd is not None and (os.path.dirname(pattern) or ".") in self.watched

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
