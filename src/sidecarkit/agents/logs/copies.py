"""Finding a followed file's data again after it left the glob: copies and moved files.

``copytruncate`` copies a file, then truncates it in place: what the agent had not read yet is
only in the copy. A rename while the agent is down takes the file out of the glob's reach. In
both cases the data is still on disk, usually in the same directory, and the agent looks for it
there: a copy by the first bytes the original had, a moved file by its device and inode (and the
same first bytes, so a recycled inode is not mistaken for it). Fluent Bit and Vector track files
the same way; looking next to the file also finds what a glob naming only the live file misses.
"""

from __future__ import annotations

import logging
import os
import stat as stats
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sidecarkit.agents.logs.files import digest

__all__ = [
    "COPY_WINDOW",
    "Copies",
    "compressed",
    "find_copy",
    "find_moved",
    "newcomers",
    "rotated_name",
]

log = logging.getLogger("sidecarkit.agent.logs")

COPY_WINDOW: Final = 30.0
"""Seconds a truncated file's fingerprint is remembered, to recognise the copy made of it."""
MTIME_SLACK: Final = 1.0
"""Seconds before a look that a file's modification time may fall and still be new since it
(timestamps are taken from a coarse clock)."""
COMPRESSED: Final = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z")
"""Endings of compressed rotations (logrotate's ``compress``): never read as text."""
SCAN_LIMIT: Final = 10_000
"""Most directory entries looked at in one search: a search stays cheap in a huge directory."""


@dataclass(slots=True)
class Copies:
    """Files truncated in place, by the fingerprint they had: a new file starting with the same
    bytes is the copy ``copytruncate`` made, and is read from where the original was delivered
    up to, instead of from its start."""

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[tuple[tuple[int, int], int], tuple[int, int]] = field(default_factory=dict)
    """(file, generation) truncated in place -> the copy made of it, where its commits go."""

    def remember(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """Keep ``entry`` (a truncated file's state); returns the entries pushed out."""
        if entry["position"] <= 0:
            return []
        entry["at"] = time.monotonic()
        self.sources[entry["fingerprint"]] = entry
        out = []
        while len(self.sources) > 16:
            out.append(self.sources.pop(next(iter(self.sources))))
        return out

    def match(self, fd: int, size: int) -> dict[str, Any] | None:
        """The truncated file whose copy the open file ``fd`` is, if any (taken out)."""
        now = time.monotonic()
        for fingerprint, original in list(self.sources.items()):
            if now - original["at"] > COPY_WINDOW:
                continue
            length, position = original["fingerprint_len"], original["position"]
            if size < length or size < position:
                continue
            if digest(os.pread(fd, length, 0)) != fingerprint:
                continue
            del self.sources[fingerprint]
            return original
        return None

    def alias(self, original: tuple[tuple[int, int], int] | None, copy: tuple[int, int]) -> None:
        if original is None:
            return
        self.aliases[original] = copy
        while len(self.aliases) > 64:
            del self.aliases[next(iter(self.aliases))]

    def expire(self) -> list[dict[str, Any]]:
        """The truncated files whose copy did not turn up in time."""
        now = time.monotonic()
        out = []
        for fingerprint, original in list(self.sources.items()):
            if now - original["at"] > COPY_WINDOW:
                del self.sources[fingerprint]
                out.append(original)
        return out


def _candidates(directory: str) -> Iterable[os.DirEntry[str]]:
    try:
        with os.scandir(directory or ".") as entries:
            for count, entry in enumerate(entries):
                if count >= SCAN_LIMIT:
                    return
                yield entry
    except OSError:
        return


def _fingerprint(path: str, length: int) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return digest(os.pread(fd, length, 0))
    except OSError:
        return None
    finally:
        os.close(fd)


def find_copy(
    path: str, fingerprint: str, length: int, min_size: int, exclude: set[tuple[int, int]]
) -> str | None:
    """A file next to ``path``, not in ``exclude``, at least ``min_size`` bytes, whose first
    ``length`` bytes have ``fingerprint`` and that was written in the last ``COPY_WINDOW``
    seconds (or, with ``min_size`` known from before a restart, at any time): the copy of
    ``path`` that ``copytruncate`` made."""
    if not length:
        return None
    now = time.time()
    best: tuple[float, str] | None = None
    for entry in _candidates(os.path.dirname(path)):
        try:
            st = entry.stat()
        except OSError:
            continue
        if (
            not stats.S_ISREG(st.st_mode)
            or (st.st_dev, st.st_ino) in exclude
            or st.st_size < min_size
            or (best is not None and st.st_mtime <= best[0])
        ):
            continue
        if _fingerprint(entry.path, length) == fingerprint:
            best = (st.st_mtime, entry.path)
    if best is not None and now - best[0] > COPY_WINDOW:
        log.info("%s: the newest copy found, %s, is older than %.0f s", path, best[1], COPY_WINDOW)
    return best[1] if best is not None else None


def find_moved(saved: dict[str, Any]) -> str | None:
    """Where the file of the saved entry ``saved`` is now, if it is still in its directory."""
    try:
        dev, inode = int(saved["dev"]), int(saved["inode"])
        path = str(saved["path"])
    except (KeyError, TypeError, ValueError):
        return None
    for entry in _candidates(os.path.dirname(path)):
        try:
            if entry.inode() != inode:
                continue
            st = entry.stat()
        except OSError:
            continue
        if st.st_dev == dev and stats.S_ISREG(st.st_mode):
            return entry.path
    return None


def compressed(path: str) -> bool:
    """``path`` is a compressed rotation (``app.log.2.gz``): its lines were read before it was
    compressed, and its bytes are not lines."""
    return path.endswith(COMPRESSED)


def newcomers(directory: str, since: float, exclude: set[tuple[int, int]]) -> list[str]:
    """Regular files in ``directory``, not in ``exclude``, modified after ``since`` (wall
    clock), oldest first."""
    found = []
    for entry in _candidates(directory):
        try:
            st = entry.stat()
        except OSError:
            continue
        if (
            stats.S_ISREG(st.st_mode)
            and st.st_mtime > since
            and (st.st_dev, st.st_ino) not in exclude
        ):
            found.append((st.st_mtime, entry.path))
    return [path for _, path in sorted(found)]


def rotated_name(path: str, original: str) -> bool:
    """``path`` is named as logrotate names copies of ``original`` (``app.log.1``,
    ``app.log-20260101``, ``app-1.log``): same directory, same name up to its first dot."""
    if os.path.dirname(path) != os.path.dirname(original):
        return False
    stem = os.path.basename(original).split(".", 1)[0]
    return os.path.basename(path).startswith(stem)


def rotation_of(path: str, original: str) -> bool:
    """``path`` is named as logrotate names rotations of ``original`` and nothing else:
    ``app.log.1``, ``app.log-20260101`` (``app.log`` then ``.`` or ``-``), or ``app-20260101.log``
    (dateext before the extension: the stem, ``-`` and a digit). Stricter than
    ``rotated_name``: a sibling log such as ``app-access.log`` is not taken for a rotation."""
    if os.path.dirname(path) != os.path.dirname(original):
        return False
    name, base = os.path.basename(path), os.path.basename(original)
    if name.startswith((base + ".", base + "-")):
        return True
    stem, dot, ext = base.rpartition(".")
    if not dot:
        return False
    middle = name[len(stem) + 1 : -(len(ext) + 1)] if name.endswith("." + ext) else ""
    return name.startswith(stem + "-") and middle[:1].isdigit()
