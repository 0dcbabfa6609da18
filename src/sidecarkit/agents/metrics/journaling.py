"""Journaling: remote_write's write-ahead log on disk.

Why: a receiver outage longer than the memory backlog, or a restart of the agent (a kill -9,
an OOM kill, a rolled pod with an ``emptyDir``), must not lose the samples the receiver has not
acknowledged. Every request body is written here before it is sent, and acknowledged here once
the receiver took it (2xx) or refused it for good (another 4xx); what is not acknowledged is
replayed, oldest first, when the agent starts again.

Layout: a directory of segments ``00000001.wal``, ``00000002.wal``... Each opens with
``MAGIC`` and holds records::

    u32 length | u32 crc32(kind + payload) | u8 kind | payload (length bytes)
    DATA payload: u64 seq | u32 samples | u16 len(source) | source (UTF-8) | body
    ACK  payload: u64 seq

A record is written with one ``write`` to an unbuffered file: a killed process leaves it whole
or torn at the end of the last segment. Opening reads every segment; a record whose header,
length or checksum does not hold ends that segment's reading (logged and counted, never sent),
and each opening starts a new segment, so nothing is ever written after a torn record.
Segments are synced to disk when they are closed, as Prometheus does: a process crash loses
nothing written, a power loss may lose the last segment's unsynced records.

Bounds: segments roll at ``segment_bytes``; a segment whose records are all acknowledged is
deleted once every older one is (so an ACK never outlives the older DATA it cancels); past
``max_bytes`` on disk the oldest segment is deleted anyway, and the records in it not yet
acknowledged are counted as dropped (bodies and samples) and logged.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = ["MAGIC", "Entry", "Journal"]

log = logging.getLogger("sidecarkit.agent.metrics.wal")

MAGIC: Final = b"SKWAL1\n"
_HEAD: Final = struct.Struct("<IIB")  # length, crc, kind
_DATA: Final = struct.Struct("<QIH")  # seq, samples, source length
_ACK: Final = struct.Struct("<Q")
_KIND_DATA: Final = 1
_KIND_ACK: Final = 2
_SUFFIX: Final = ".wal"


@dataclass(slots=True, eq=False)
class Entry:
    """One request body waiting for the receiver: where it is on disk, and the body itself
    while it is in memory (the newest; an older one is read back from its segment)."""

    seq: int
    source: str
    samples: int
    segment: int
    offset: int
    """Where the body starts in its segment file."""
    length: int
    body: bytes | None = None
    dropped: bool = False
    """Deleted with its segment at the size bound before the receiver took it."""
    done: bool = False


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    size: int
    pending: set[int] = field(default_factory=set)
    """Sequence numbers of its DATA records not yet acknowledged."""


def _name(number: int) -> str:
    return f"{number:08d}{_SUFFIX}"


class Journal:
    """The write-ahead log in one directory. Thread-safe: bodies are appended from the
    worker thread that encodes them, acknowledged from the event loop."""

    def __init__(self, directory: str | Path, *, max_bytes: int = 256 << 20) -> None:
        """Open (or create) the log in ``directory``; OSError when it cannot be written."""
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(64 << 10, min(16 << 20, max_bytes // 8))
        self.dropped_bodies = 0
        self.dropped_samples = 0
        self.corrupt_records = 0
        """Records found torn or damaged when the log was opened, never sent."""
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._entries: dict[int, Entry] = {}
        self._next_seq = 1
        self.directory.mkdir(parents=True, exist_ok=True)
        self.replayed = self._recover()
        """The entries left unacknowledged by the previous run, oldest first."""
        number = self._segments[-1].number + 1 if self._segments else 1
        self._fd = -1
        self._open_segment(number)

    # -- reading what the last run left ------------------------------------------------------

    def _recover(self) -> list[Entry]:
        numbered = []
        for path in self.directory.glob("*" + _SUFFIX):
            stem = path.name[: -len(_SUFFIX)]
            if stem.isdigit():
                numbered.append((int(stem), path))
        numbered.sort()
        for index, (number, path) in enumerate(numbered):
            last = index == len(numbered) - 1
            segment = _Segment(number, path, path.stat().st_size)
            self._segments.append(segment)
            self._scan(segment, last=last)
        self._delete_settled()
        pending = sorted((e for e in self._entries.values() if not e.done), key=lambda e: e.seq)
        if pending:
            log.info(
                "remote_write WAL in %s: %d request(s) with %d sample(s) not yet acknowledged "
                "by the receiver; replaying them in order",
                self.directory,
                len(pending),
                sum(e.samples for e in pending),
            )
        return pending

    def _scan(self, segment: _Segment, *, last: bool) -> None:
        data = segment.path.read_bytes()
        if not data.startswith(MAGIC):
            self.corrupt_records += 1
            log.warning(
                "remote_write WAL: %s does not start like a WAL segment; it is left out (its "
                "records, if any, are not sent)",
                segment.path,
            )
            return
        at = len(MAGIC)
        end = len(data)
        while at < end:
            problem = ""
            if end - at < _HEAD.size:
                problem = "a record header cut short"
            else:
                length, crc, kind = _HEAD.unpack_from(data, at)
                start = at + _HEAD.size
                if start + length > end:
                    problem = f"a record of {length} bytes cut short at {end - start}"
                elif zlib.crc32(data[at + 8 : start + length]) != crc:
                    problem = "a record whose checksum does not match"
                elif not self._record(segment, kind, data, start, length):
                    problem = f"a record of unknown kind {kind} or of a wrong size"
            if problem:
                self.corrupt_records += 1
                where = "at its end (written when the agent was killed)" if last else ""
                log.warning(
                    "remote_write WAL: %s has %s at byte %d %s; the rest of that segment is "
                    "skipped, never sent",
                    segment.path,
                    problem,
                    at,
                    where,
                )
                return
            at = start + length

    def _record(self, segment: _Segment, kind: int, data: bytes, start: int, length: int) -> bool:
        if kind == _KIND_ACK and length == _ACK.size:
            (seq,) = _ACK.unpack_from(data, start)
            entry = self._entries.get(seq)
            if entry is not None and not entry.done:
                entry.done = True
                self._segment(entry.segment).pending.discard(seq)
            return True
        if kind != _KIND_DATA or length < _DATA.size:
            return False
        seq, samples, source_length = _DATA.unpack_from(data, start)
        body_at = start + _DATA.size + source_length
        if body_at > start + length:
            return False
        source = data[start + _DATA.size : body_at].decode("utf-8", "replace")
        self._entries[seq] = Entry(
            seq, source, samples, segment.number, body_at, start + length - body_at
        )
        segment.pending.add(seq)
        self._next_seq = max(self._next_seq, seq + 1)
        return True

    def _segment(self, number: int) -> _Segment:
        for segment in self._segments:
            if segment.number == number:
                return segment
        return _Segment(number, self.directory / _name(number), 0)  # already deleted

    # -- writing ---------------------------------------------------------------------------

    def _open_segment(self, number: int) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
        path = self.directory / _name(number)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        os.write(self._fd, MAGIC)
        self._segments.append(_Segment(number, path, len(MAGIC)))

    def _write(self, kind: int, payload: bytes) -> tuple[_Segment, int]:
        """Append one record (the lock held); returns its segment and the payload's offset."""
        segment = self._segments[-1]
        size = _HEAD.size + len(payload)
        if segment.size + size > self.segment_bytes and segment.size > len(MAGIC):
            self._open_segment(segment.number + 1)
            segment = self._segments[-1]
        crc = zlib.crc32(payload, zlib.crc32(bytes((kind,))))
        os.write(self._fd, _HEAD.pack(len(payload), crc, kind) + payload)
        offset = segment.size + _HEAD.size
        segment.size += size
        return segment, offset

    def append(self, source: str, body: bytes, samples: int) -> Entry:
        """Write one request body before it is sent; OSError when the disk refuses."""
        name = source.encode()[:0xFFFF]
        with self._lock:
            if self._fd < 0:
                raise OSError("the WAL is closed (the agent is stopping)")
            seq = self._next_seq
            self._next_seq += 1
            head = _DATA.pack(seq, samples, len(name)) + name
            segment, offset = self._write(_KIND_DATA, head + body)
            entry = Entry(seq, source, samples, segment.number, offset + len(head), len(body), body)
            self._entries[seq] = entry
            segment.pending.add(seq)
            self._enforce_bound()
        return entry

    def acknowledge(self, entry: Entry) -> None:
        """The receiver took ``entry`` or refused it for good: it is never sent again. When
        the acknowledgement cannot be written (a full disk, the log closed at exit), the body
        is sent again after a restart: a duplicate the receiver stores once, never a loss."""
        with self._lock:
            if entry.done:
                return
            entry.done = True
            entry.body = None
            self._entries.pop(entry.seq, None)
            segment = self._segment(entry.segment)
            segment.pending.discard(entry.seq)
            if not entry.dropped and self._fd >= 0:
                try:
                    self._write(_KIND_ACK, _ACK.pack(entry.seq))
                except OSError as exc:
                    log.warning(
                        "remote_write WAL in %s: cannot note that request %d was taken (%s); "
                        "it will be sent again after a restart",
                        self.directory,
                        entry.seq,
                        exc,
                    )
            self._delete_settled()

    def read(self, entry: Entry) -> bytes:
        """``entry``'s body from its segment; OSError when the segment is gone."""
        if entry.body is not None:
            return entry.body
        with (self.directory / _name(entry.segment)).open("rb") as file:
            file.seek(entry.offset)
            body = file.read(entry.length)
        if len(body) != entry.length:
            raise OSError(f"{_name(entry.segment)} ends before the body of record {entry.seq}")
        return body

    @property
    def size(self) -> int:
        """Bytes the segments take on disk."""
        return sum(s.size for s in self._segments)

    def _delete_settled(self) -> None:
        """Delete the oldest segments while every record in them is settled."""
        while len(self._segments) > 1 and not self._segments[0].pending:
            self._unlink(self._segments.pop(0))

    def _enforce_bound(self) -> None:
        while len(self._segments) > 1 and self.size > self.max_bytes:
            segment = self._segments.pop(0)
            lost = [self._entries.pop(seq) for seq in sorted(segment.pending)]
            for entry in lost:
                entry.dropped = entry.done = True
                entry.body = None
            self._unlink(segment)
            if lost:
                samples = sum(e.samples for e in lost)
                self.dropped_bodies += len(lost)
                self.dropped_samples += samples
                log.warning(
                    "remote_write WAL in %s passed %d bytes: its oldest segment is deleted with "
                    "%d request(s), %d sample(s) the receiver never took (counted in "
                    "sidecarkit_metrics_remote_write_dropped_samples_total); raise "
                    "remote_write_wal_size for longer outages",
                    self.directory,
                    self.max_bytes,
                    len(lost),
                    samples,
                )

    def _unlink(self, segment: _Segment) -> None:
        try:
            segment.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("remote_write WAL: cannot delete %s: %s", segment.path, exc)

    def close(self) -> None:
        """Sync and close the open segment."""
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
