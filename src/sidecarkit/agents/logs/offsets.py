"""The offsets file: where every source was delivered up to, kept safe across crashes.

The shipper saves the committed positions of its sources after confirmed batches and loads them
at start, so that a restart replays at most what was not yet delivered. With thousands of files
only a few change between two saves: those are appended to a journal next to the file, and the
whole state is written (compacted) only once the journal outgrows it, so a save costs what
changed, not what is followed.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any, Final

__all__ = ["OffsetStore"]

log = logging.getLogger("sidecarkit.agent.logs")

JOURNAL_MIN: Final = 1 << 20
"""Bytes of journal always allowed before compacting (more when the full state is bigger)."""
JOURNAL_FACTOR: Final = 2
"""The journal is compacted once it is this many times the size of the full state."""

Changes = dict[str, tuple[list[dict[str, Any]], list[list[int]]]]
"""Per source: entries changed or added, and the ``[dev, inode]`` of entries dropped."""


class OffsetStore:
    """Committed positions of every source, saved so that a crash at any moment leaves a
    complete copy: the file holds two slots, written in turn.

    Each slot is one line, ``<crc32> <sequence> <json>``, padded with spaces to the slot size;
    the file is two slots long. Saving overwrites the older slot in place (one ``pwrite``, no
    new file, no rename), so it costs microseconds and can follow every confirmed batch. On
    load, the slot with the higher sequence whose checksum holds wins; a slot torn by a crash
    mid-write fails its checksum and the other one is used. When the JSON outgrows the slots,
    the file is rebuilt with bigger ones (write a new file, then rename it over the old).

    Between two full writes, ``append`` adds the changed entries to the journal (same line
    format, one line per save, sequence numbers following the full state's). Load takes the
    best slot, then the journal's lines with a higher sequence, up to the first torn one. A
    full write is synced before the journal is emptied, so a crash between the two leaves
    lines the state already holds, which their sequence numbers tell apart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = path.with_name(path.name + ".journal")
        """Changes since the last full write: checksummed lines, appended, replayed on load."""
        self._fd: int | None = None
        self._jfd: int | None = None
        self._journal_size = 0
        self._full_size = 0
        self._full_next = True
        self._slot = 0
        self._seq = 0
        self.saved_at = 0.0
        """Wall-clock time the loaded offsets were saved (0 when unknown)."""

    @property
    def wants_full(self) -> bool:
        """The next save should write the whole state (``save``) rather than changes
        (``append``): nothing written yet in this run, the journal outgrew the state, or an
        append failed."""
        return self._full_next or self._journal_size > max(
            JOURNAL_MIN, JOURNAL_FACTOR * self._full_size
        )

    def load(self) -> dict[str, list[dict[str, Any]]]:
        sources = self._load_full()
        return self._replay(sources)

    def _replay(self, sources: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """Apply the journal's changes newer than the full state, up to its first torn line (a
        crash mid-append tears at most the last)."""
        try:
            raw = self.journal.read_bytes()
        except OSError:
            return sources
        if not raw:
            return sources
        keyed = {name: {_key(e): e for e in entries} for name, entries in sources.items()}
        for line in raw.split(b"\n"):
            seq, body = _slot(line)
            if body is None:
                break
            if seq <= self._seq:
                continue
            try:
                record = json.loads(body)
                changes = record["sources"]
                for name, (entries, dropped) in changes.items():
                    own = keyed.setdefault(str(name), {})
                    for entry in entries:
                        own[_key(entry)] = entry
                    for dev, inode in dropped:
                        own.pop((int(dev), int(inode)), None)
            except (ValueError, KeyError, TypeError, AttributeError):
                break
            self._seq = seq
            if isinstance(record.get("time"), int | float):
                self.saved_at = float(record["time"])
        return {name: list(entries.values()) for name, entries in keyed.items()}

    def _load_full(self) -> dict[str, list[dict[str, Any]]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("offsets in %s unreadable (%s); reading from the start", self.path, exc)
            return {}
        best: tuple[int, Any] | None = None
        candidates: list[tuple[int, bytes | None]]
        if raw.startswith(b"{"):
            candidates = [(0, raw)]  # a plain JSON file, as older versions wrote
        else:
            half = len(raw) // 2
            candidates = [_slot(raw[:half]), _slot(raw[half:])] if half else []
        for seq, body in candidates:
            if body is None:
                continue
            try:
                data = json.loads(body)
            except ValueError:
                continue
            if best is None or seq > best[0]:
                best = (seq, data)
        if best is None:
            if raw:
                log.warning("offsets in %s unreadable; reading from the start", self.path)
            return {}
        self._seq = best[0]
        if isinstance(best[1], dict) and isinstance(best[1].get("time"), int | float):
            self.saved_at = float(best[1]["time"])
        sources = best[1].get("sources") if isinstance(best[1], dict) else None
        if not isinstance(sources, dict):
            return {}
        return {str(k): v for k, v in sources.items() if isinstance(v, list)}

    def save(self, sources: dict[str, list[dict[str, Any]]], *, sync: bool = True) -> None:
        """Write the whole state, then empty the journal (its changes are in the state now)."""
        journal = self._journal_size > 0 or self._full_next
        body = self.encode(sources)
        self.write(body, sync=sync or journal)  # synced before the journal goes
        self._full_size = len(body)
        self._full_next = False
        if journal:
            if self._jfd is None:
                self._open_journal()
            assert self._jfd is not None
            os.ftruncate(self._jfd, 0)
            self._journal_size = 0

    def append(self, changes: Changes, *, sync: bool = True) -> None:
        """Save the entries that changed since the last save (one line appended to the
        journal). A line torn by a crash is ignored on load, with everything after it; after a
        failed append the next save is a full one."""
        changes = {name: change for name, change in changes.items() if change[0] or change[1]}
        if not changes:
            return
        self._seq += 1
        data = json.dumps(
            {"time": round(time.time(), 3), "sources": changes}, separators=(",", ":")
        ).encode()
        record = b"%08x %016x %s\n" % (zlib.crc32(data), self._seq, data)
        try:
            if self._jfd is None:
                self._open_journal()
            assert self._jfd is not None
            view = memoryview(record)
            while view:
                view = view[os.write(self._jfd, view) :]
            if sync:
                os.fdatasync(self._jfd)
        except OSError:
            self._full_next = True
            raise
        self._journal_size += len(record)

    def _open_journal(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._jfd = os.open(self.journal, flags, 0o644)
        self._journal_size = os.fstat(self._jfd).st_size

    @staticmethod
    def encode(sources: dict[str, list[dict[str, Any]]]) -> str:
        return json.dumps(
            {"version": 1, "time": round(time.time(), 3), "sources": sources},
            separators=(",", ":"),
        )

    def write(self, body: str, *, sync: bool = True) -> None:
        """Save ``body``. Without ``sync`` it survives the agent being killed (the kernel has
        it) but not the node crashing; the shipper syncs every ``checkpoint_interval``."""
        self._seq += 1
        data = body.encode()
        record = b"%08x %016x %s\n" % (zlib.crc32(data), self._seq, data)
        if self._fd is None or len(record) > self._slot:
            self._rebuild(record)
        else:
            index = self._seq % 2
            os.pwrite(self._fd, record.ljust(self._slot, b" "), index * self._slot)
        if sync and self._fd is not None:
            os.fdatasync(self._fd)

    def _rebuild(self, record: bytes) -> None:
        # Room to grow by a quarter before the next rebuild, in whole 4 KiB pages.
        slot = max(4096, (len(record) * 5 // 4 + 4095) // 4096 * 4096)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".tmp")
        padded = record.ljust(slot, b" ")
        with open(temp, "wb") as out:
            out.write(padded + padded)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        self._slot = slot

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._jfd is not None:
            os.close(self._jfd)
            self._jfd = None


def _key(entry: dict[str, Any]) -> tuple[int, int]:
    try:
        return int(entry["dev"]), int(entry["inode"])
    except (KeyError, TypeError, ValueError):
        return (-1, id(entry))  # no identity: kept as is, never replaced


def _slot(raw: bytes) -> tuple[int, bytes | None]:
    """(sequence, JSON) of one slot, or (-1, None) when it is torn or empty."""
    line = raw.split(b"\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) != 3:
        return -1, None
    try:
        crc, seq = int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return -1, None
    if zlib.crc32(parts[2]) != crc:
        return -1, None
    return seq, parts[2]
