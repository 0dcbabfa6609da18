"""Following log files: new complete lines, in order, across rotation, from saved offsets.

A ``Tailer`` follows the files one glob matches. Files are told apart by device and inode plus
a fingerprint of their first bytes, so a recycled inode is not mistaken for the file it replaced.
Each ``poll`` reads what was appended since the last read, in chunks that end at a newline, and
notices what happened to each file:

- **rename** (the path now names another file, or nothing): the old file is read to its end
  through the descriptor already open, then forgotten once everything read was committed; the
  new file is picked up from its start. A file deleted before it was finished is drained the same
  way, since the open descriptor keeps its data.
- **copytruncate** (the file became shorter than what was read): reading restarts at 0 under a
  new generation of the file's key. What was written between the last read and the truncation
  cannot be known; the truncation is counted as possibly lossy rather than hidden.

Lines longer than ``max_line`` bytes are split into pieces of that size, or truncated, by
choice; either way they are counted and never stall the file.

Positions are only *proposed* by ``poll``; the caller ``commit``s (offset, line number) pairs
once what came before was delivered, and ``offsets.OffsetStore`` saves committed positions so
that a crash at any moment leaves a complete copy; a restart replays at most what was not yet
delivered: at least once, never lost.
"""

from __future__ import annotations

import glob as globbing
import hashlib
import logging
import os
import secrets
import stat as stats
import time
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["Chunk", "StdinTailer", "TailedFile", "Tailer"]

log = logging.getLogger("sidecarkit.agent.logs")

FINGERPRINT_BYTES: Final = 256
"""How many first bytes of a file make its fingerprint (fewer while the file is shorter)."""
_REREAD: Final = 64 << 10
"""An unfinished line up to this long is read again from the file rather than kept and joined."""
COPY_WAIT: Final = 10.0
"""Seconds a file that starts like a followed one waits for that one to be truncated."""
COPY_WINDOW: Final = 30.0
"""Seconds a truncated file's fingerprint is remembered, to recognise the copy made of it."""


@dataclass(slots=True)
class Chunk:
    file: TailedFile
    data: bytes
    """Complete lines, each ending in ``\\n`` (a final partial line gets one added)."""
    first: int
    """Line number of the first line of ``data`` in the file (0-based)."""
    end: int
    """File offset just after ``data``."""
    lines: int
    """Number of lines in ``data``."""
    generation: int
    """The file's generation (truncations) when ``data`` was read."""


@dataclass(slots=True)
class TailedFile:
    path: str
    dev: int
    inode: int
    fd: int
    fingerprint: str
    fingerprint_len: int
    head: bytes = b""
    """The first ``fingerprint_len`` bytes, as they were when the fingerprint was taken."""
    generation: int = 0
    nonce: str = field(default_factory=lambda: secrets.token_hex(6))
    """Drawn when the agent first meets this content (a new file, a truncation) and saved with
    the offsets, so records of different files never share a key even if an inode and the
    first bytes are recycled."""
    position: int = 0
    """Offset read up to (the end of the last complete line handed out)."""
    line: int = 0
    """Number of lines handed out."""
    committed: int = 0
    committed_line: int = 0
    partial: bytes = b""
    """Bytes after the last newline read, waiting for it."""
    size_seen: int = 0
    """The file's size at the last look: what was known to be written."""
    skipping: bool = False
    """Inside a too-long line that was truncated: drop bytes up to the next newline."""
    gone: bool = False
    """Renamed away or deleted; forgotten once read to its end and committed."""

    @property
    def key(self) -> str:
        """The file's identity for records: stable across restarts, new after a truncation."""
        return f"{self.dev:x}:{self.inode:x}:{self.nonce}:{self.generation}"

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.inode)


def _read_head(fd: int, size: int) -> bytes:
    length = min(size, FINGERPRINT_BYTES)
    return os.pread(fd, length, 0) if length else b""


def _take_fingerprint(f: TailedFile, size: int) -> None:
    f.head = _read_head(f.fd, size)
    f.fingerprint = _digest(f.head)
    f.fingerprint_len = len(f.head)


def _digest(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=16).hexdigest()


def _long_line_at(data: bytes | bytearray, limit: int) -> int:
    """Where the first line longer than ``limit`` bytes starts in ``data``, or -1.

    Jumps from newline to newline ``limit`` bytes at a time, so the cost is a handful of scans
    per chunk instead of one step per line.
    """
    pos, size = 0, len(data)
    while size - pos > limit:
        newline = data.rfind(b"\n", pos, pos + limit + 1)
        if newline < 0:
            return pos
        pos = newline + 1
    return -1


@dataclass(slots=True)
class Tailer:
    pattern: str
    read_size: int = 1 << 20
    """Most bytes read from one file per ``poll``: bounds memory whatever the writer does."""
    max_line: int = 256 << 10
    """Longest line handed out as is, in bytes."""
    long_lines: str = "split"
    """``split`` a longer line into pieces, or ``truncate`` it (the rest is dropped, counted)."""
    count_lines: bool = True
    """Count each chunk's lines here; ``False`` leaves ``Chunk.lines`` at -1 for the caller,
    who splits the chunk anyway, to report with ``counted`` before the next ``poll``."""
    files: dict[tuple[int, int], TailedFile] = field(default_factory=dict)
    truncations: int = 0
    """Truncations (copytruncate) seen: each may have dropped lines written just before it."""
    long_lines_seen: int = 0
    truncated_bytes: int = 0
    """Bytes dropped from too-long lines in ``truncate`` mode."""
    lost_bytes: int = 0
    """Bytes written before a copytruncate, not read, and not found in a copy: lost."""
    bytes_read: int = 0
    lines_read: int = 0
    _saved: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    _finished: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    _deferred: dict[tuple[int, int], float] = field(default_factory=dict)
    _aliases: dict[tuple[tuple[int, int], int], tuple[int, int]] = field(default_factory=dict)
    """(file, generation) truncated in place -> the copy made of it, where its commits go."""
    _copies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Files truncated in place, by the fingerprint they had: a new file starting with the same
    bytes is the copy ``copytruncate`` made, and is read from where the original was delivered
    up to, instead of from its start."""
    """Files read to their end and let go, still matched by the glob (rotated copies): they are
    not read again, and stay in the saved state so a restart does not read them again either."""

    # --- state -------------------------------------------------------------------------------

    def restore(self, entries: list[dict[str, Any]]) -> None:
        """Resume from saved positions; applied when each file is next seen."""
        for entry in entries:
            try:
                self._saved[(int(entry["dev"]), int(entry["inode"]))] = entry
            except (KeyError, TypeError, ValueError):
                continue

    def snapshot(self) -> list[dict[str, Any]]:
        """Committed positions, to be saved."""
        return [*(self._entry(f) for f in self.files.values()), *self._finished.values()]

    @staticmethod
    def _entry(f: TailedFile) -> dict[str, Any]:
        return {
            "path": f.path,
            "dev": f.dev,
            "inode": f.inode,
            "fingerprint": f.fingerprint,
            "fingerprint_len": f.fingerprint_len,
            "generation": f.generation,
            "nonce": f.nonce,
            "offset": f.committed,
            "line": f.committed_line,
        }

    def _open(self, path: str) -> TailedFile | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stats.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in self.files:
            os.close(fd)
            return None
        f = TailedFile(path, st.st_dev, st.st_ino, fd, "", 0)
        _take_fingerprint(f, st.st_size)
        saved = self._saved.pop(f.identity, None)
        if saved is not None:
            self._resume(f, saved, st.st_size)
        else:
            if self._copies:
                self._resume_copy(f, st.st_size)
            if not f.position and self._is_copy_in_progress(fd, st.st_size):
                first = self._deferred.setdefault(f.identity, time.monotonic())
                if time.monotonic() - first < COPY_WAIT:
                    os.close(fd)
                    return None
                # No truncation came: a copy someone made on purpose; it is a file like any.
            self._deferred.pop(f.identity, None)
        self.files[f.identity] = f
        return f

    def _resume_copy(self, f: TailedFile, size: int) -> None:
        now = time.monotonic()
        for fingerprint, original in list(self._copies.items()):
            if now - original["at"] > COPY_WINDOW:
                continue
            length, position = original["fingerprint_len"], original["position"]
            if size < length or size < position:
                continue
            if _digest(os.pread(f.fd, length, 0)) != fingerprint:
                continue
            del self._copies[fingerprint]
            # Read on from where the original was read up to; what was read but not yet
            # delivered is still in flight, and its commits now land on the copy.
            f.position, f.line = position, original["line"]
            f.committed, f.committed_line = original["committed"], original["committed_line"]
            if original["identity"] is not None:
                self._aliases[original["identity"]] = f.identity
                while len(self._aliases) > 64:
                    del self._aliases[next(iter(self._aliases))]
            log.info(
                "%s is the copy of %s made before it was truncated; reading it from offset %d",
                f.path,
                original["path"],
                position,
            )
            return

    def _remember_copy_source(
        self,
        f: TailedFile | None,
        saved: dict[str, Any] | None = None,
    ) -> None:
        entry: dict[str, Any]
        if f is not None:
            entry = {
                "path": f.path,
                "fingerprint": f.fingerprint,
                "fingerprint_len": f.fingerprint_len,
                "position": f.position,
                "line": f.line,
                "committed": f.committed,
                "committed_line": f.committed_line,
                "identity": (f.identity, f.generation),
                "unread": max(0, f.size_seen - f.position),
            }
        elif saved is not None:
            entry = {
                "path": saved.get("path"),
                "fingerprint": str(saved.get("fingerprint")),
                "fingerprint_len": int(saved["fingerprint_len"]),
                "position": int(saved["offset"]),
                "line": int(saved["line"]),
                "committed": int(saved["offset"]),
                "committed_line": int(saved["line"]),
                "identity": None,
                "unread": 0,  # unknown: the agent was not running when it happened
            }
        else:
            return
        if entry["position"] <= 0:
            return
        entry["at"] = time.monotonic()
        self._copies[entry["fingerprint"]] = entry
        while len(self._copies) > 16:
            self._lose(self._copies.pop(next(iter(self._copies))))

    def _lose(self, original: dict[str, Any]) -> None:
        """No copy of a truncated file turned up: what it held unread is gone."""
        if original["unread"]:
            self.lost_bytes += original["unread"]
            log.warning(
                "%s was truncated with %d bytes not yet read, and no copy of it was found: "
                "they are lost (include the rotated name in the glob to keep them)",
                original["path"],
                original["unread"],
            )

    def _expire_copies(self) -> None:
        now = time.monotonic()
        for fingerprint, original in list(self._copies.items()):
            if now - original["at"] > COPY_WINDOW:
                del self._copies[fingerprint]
                self._lose(original)

    def _is_copy_in_progress(self, fd: int, size: int) -> bool:
        """A new file that starts like a file being followed (or is still too short to tell,
        empty even: ``copytruncate`` may have just created it): a copy whose original may be
        about to be truncated (``copytruncate`` copies first). Wait for the truncation."""
        head = _read_head(fd, size)
        for f in self.files.values():
            if f.gone or not f.head:
                continue
            common = min(len(head), len(f.head))
            if head[:common] == f.head[:common]:
                return True
        return False

    def _resume(self, f: TailedFile, saved: dict[str, Any], size: int) -> None:
        try:
            offset, line = int(saved["offset"]), int(saved["line"])
            length = int(saved["fingerprint_len"])
            generation = int(saved.get("generation", 0))
        except (KeyError, TypeError, ValueError):
            return
        head = os.pread(f.fd, length, 0) if length else b""
        same = len(head) == length and _digest(head) == saved.get("fingerprint") and offset <= size
        if same:
            f.position = f.committed = offset
            f.line = f.committed_line = line
            f.generation = generation
            if isinstance(saved.get("nonce"), str):
                f.nonce = saved["nonce"]
        else:
            # Recycled inode, or truncated while we were away (perhaps written past the saved
            # offset again since): a new file as far as we know. Either way a file that starts
            # as the saved one did is its copy, and goes on from the saved offset.
            f.generation = generation + 1
            if offset > size or len(head) < length:
                self.truncations += 1
            self._remember_copy_source(None, saved)
            log.info("%s changed while the agent was away; reading it from the start", f.path)

    # --- reading -----------------------------------------------------------------------------

    def discover(self) -> None:
        """Open files the glob matches that are not followed yet."""
        seen = set()
        found = []
        for path in sorted(globbing.glob(self.pattern)):
            try:
                st = os.stat(path)
            except OSError:
                continue
            found.append((path, st))
        # Files with a saved position first: one truncated while the agent was away must be
        # known as such before its copy is opened, whatever the copy is named.
        found.sort(key=lambda item: (item[1].st_dev, item[1].st_ino) not in self._saved)
        for path, st in found:
            identity = (st.st_dev, st.st_ino)
            seen.add(identity)
            done = self._finished.get(identity)
            if done is not None and st.st_size >= done["offset"]:
                if st.st_size == done["offset"]:
                    continue
                # Written to again after it was let go (a writer kept it open): follow it again.
                self._saved[identity] = self._finished.pop(identity)
            if identity not in self.files and stats.S_ISREG(st.st_mode):
                self._open(path)
        for identity in [i for i in self._finished if i not in seen]:
            del self._finished[identity]
        for identity in [i for i in self._deferred if i not in seen]:
            del self._deferred[identity]

    def poll(self, budget: int | None = None, *, final: bool = False) -> list[Chunk]:
        """New complete lines from every file, at most about ``budget`` bytes in all.

        ``final`` also hands out partial last lines (on shutdown, when no more will come).
        """
        for f in self.files.values():
            self._check_truncated(f)
        self.discover()
        if self._copies:
            self._expire_copies()
        chunks: list[Chunk] = []
        left = self.read_size * max(1, len(self.files)) if budget is None else budget
        for f in list(self.files.values()):
            if left <= 0:
                break
            chunk = self._read(f, min(self.read_size, left), final=final)
            if chunk is not None:
                chunks.append(chunk)
                left -= len(chunk.data)
                continue  # a file that had data is looked at for rotation at the next poll
            last = self._check_rotated(f)
            if last is not None:
                chunks.append(last)
        return chunks

    def _read(self, f: TailedFile, limit: int, *, final: bool) -> Chunk | None:
        try:
            size = os.fstat(f.fd).st_size
        except OSError:
            return None
        if size < f.position:
            self._check_truncated(f)
        else:
            f.size_seen = size
        if f.fingerprint_len < FINGERPRINT_BYTES and size > f.fingerprint_len:
            _take_fingerprint(f, size)
        start = f.position + len(f.partial)
        if start >= size:
            if final and (f.partial or f.skipping):
                return self._emit(f, b"", final=True)
            return None
        held = len(f.partial)
        if 0 < held <= _REREAD:
            # Read the unfinished line again with what follows: cheaper than joining copies.
            data = os.pread(f.fd, min(limit + held, size - f.position), f.position)
            if len(data) <= held:
                return None
            self.bytes_read += len(data) - held
            f.partial = b""
            return self._emit(f, data, final=final and f.position + len(data) >= size)
        data = os.pread(f.fd, min(limit, size - start), start)
        if not data:
            return None
        self.bytes_read += len(data)
        return self._emit(f, data, final=final and start + len(data) >= size)

    def _check_truncated(self, f: TailedFile) -> None:
        """``copytruncate``: the file got shorter than what was read, or no longer starts as it
        did (truncated, then written past where reading had got to before this look); read it
        again from 0."""
        try:
            size = os.fstat(f.fd).st_size
            if size >= f.position and (
                not f.position or not f.head or os.pread(f.fd, len(f.head), 0) == f.head
            ):
                return
        except OSError:
            return
        self.truncations += 1
        self._remember_copy_source(f)
        f.generation += 1
        f.nonce = secrets.token_hex(6)
        f.position = f.committed = f.line = f.committed_line = 0
        f.partial = b""
        f.skipping = False
        _take_fingerprint(f, size)
        log.warning("%s was truncated; reading it again from the start", f.path)

    def _emit(self, f: TailedFile, data: bytes, *, final: bool) -> Chunk | None:
        if f.partial:
            data = f.partial + data
        consumed = len(data)  # bytes of the file this call accounts for, from f.position
        cut = data.rfind(b"\n") + 1
        if final and cut < len(data):
            body = data + b"\n"
            rest = b""
        else:
            body, rest = data[:cut], data[cut:]
        if f.skipping or _long_line_at(body, self.max_line) >= 0 or len(rest) > self.max_line:
            body, rest = self._long(f, body, rest)
        f.partial = rest
        advance = consumed - len(rest)
        if not body:
            f.position += advance
            return None
        chunk = Chunk(f, body, f.line, f.position + advance, -1, f.generation)
        f.position += advance
        if self.count_lines or final:
            self.counted(chunk, body.count(b"\n"))
        return chunk

    def counted(self, chunk: Chunk, lines: int) -> None:
        """``chunk`` holds ``lines`` lines (with ``count_lines`` off, the caller counts)."""
        chunk.lines = lines
        chunk.file.line += lines
        self.lines_read += lines

    def _long(self, f: TailedFile, body: bytes, rest: bytes) -> tuple[bytes, bytes]:
        """Cut or split lines over ``max_line``; a too-long unfinished line is handled too."""
        limit = self.max_line
        out = bytearray()
        pieces = body.split(b"\n")[:-1]
        if len(rest) > limit:
            pieces.append(rest)
            rest = b""
            trailing = True
        else:
            trailing = False
        for index, piece in enumerate(pieces):
            unfinished = trailing and index == len(pieces) - 1
            if f.skipping:
                if unfinished:
                    self.truncated_bytes += len(piece)
                    continue
                self.truncated_bytes += len(piece)
                f.skipping = False
                continue
            if len(piece) <= limit:
                if unfinished:
                    rest = piece
                else:
                    out += piece + b"\n"
                continue
            self.long_lines_seen += 1
            if self.long_lines == "truncate":
                out += piece[:limit] + b"\n"
                self.truncated_bytes += len(piece) - limit
                f.skipping = unfinished
            else:
                whole = len(piece) - len(piece) % limit if unfinished else len(piece)
                for at in range(0, whole, limit):
                    out += piece[at : at + limit] + b"\n"
                if unfinished:
                    rest = piece[whole:]
        return bytes(out), rest

    def _check_rotated(self, f: TailedFile) -> Chunk | None:
        """Notice that ``f`` was renamed away or deleted; hand out its unfinished last line."""
        if not f.gone:
            try:
                st = os.stat(f.path)
                moved = (st.st_dev, st.st_ino) != f.identity
            except OSError:
                moved = True
            if not moved:
                return None
            try:
                size = os.fstat(f.fd).st_size
            except OSError:
                size = f.position
            if f.position + len(f.partial) < size:
                return None  # still draining what was written before the rename
            f.gone = True
        chunk = self._emit(f, b"", final=True) if f.partial or f.skipping else None
        self._forget_if_done(f)
        return chunk

    def _forget_if_done(self, f: TailedFile) -> None:
        if f.gone and f.committed >= f.position and not f.partial:
            os.close(f.fd)
            self.files.pop(f.identity, None)
            self._finished[f.identity] = {
                **self._entry(f),
                "offset": f.position,
                "line": f.line,
            }

    def commit(self, identity: tuple[int, int], generation: int, offset: int, line: int) -> None:
        """Everything in the file before ``offset`` (``line`` lines) was delivered."""
        f = self.files.get(identity)
        if f is None or f.generation != generation:
            alias = self._aliases.get((identity, generation))
            f = self.files.get(alias) if alias is not None else None
            if f is None:
                return
        if offset <= f.committed:
            return
        f.committed, f.committed_line = offset, line
        self._forget_if_done(f)

    def lag(self) -> dict[str, int]:
        """Bytes written but not yet delivered, per file."""
        out = {}
        for f in self.files.values():
            try:
                out[f.path] = max(0, os.fstat(f.fd).st_size - f.committed)
            except OSError:
                continue
        return out

    def close(self) -> None:
        for f in self.files.values():
            os.close(f.fd)
        self.files.clear()


class StdinTailer(Tailer):
    """Lines from a pipe (stdin by default) instead of files: ``app | sidecarkit agent logs``.

    A pipe cannot be read again, so there are no offsets to save: what was read is in flight
    until the sinks confirm it, and a crash loses that much. ``ended`` turns true at end of
    input; the agent then ships what is left and exits.
    """

    def __init__(self, fd: int = 0, **kwargs: Any) -> None:
        super().__init__("-", **kwargs)
        self.fd = fd
        self.ended = False
        os.set_blocking(fd, False)
        self.file = TailedFile("-", 0, 0, fd, "", 0)

    def discover(self) -> None:
        return None

    def restore(self, entries: list[dict[str, Any]]) -> None:
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        return []

    def poll(self, budget: int | None = None, *, final: bool = False) -> list[Chunk]:
        f = self.file
        limit = self.read_size if budget is None else min(self.read_size, budget)
        data = b""
        if not self.ended and limit > 0:
            try:
                data = os.read(self.fd, limit)
                if not data:
                    self.ended = True
            except BlockingIOError:
                data = b""
        self.bytes_read += len(data)
        if not data and not ((final or self.ended) and (f.partial or f.skipping)):
            return []
        chunk = self._emit(f, data, final=final or self.ended)
        return [chunk] if chunk is not None else []

    def commit(self, identity: tuple[int, int], generation: int, offset: int, line: int) -> None:
        return None

    def lag(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None
