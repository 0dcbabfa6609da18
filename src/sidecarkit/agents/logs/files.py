"""What the tailer knows of one followed file, how it tells files apart, and long-line cutting.

A file is known by device and inode plus a fingerprint of its first bytes, so a recycled inode
is not mistaken for the file it replaced. Records carry a key made of the same identity (the
device, the inode, a digest of the file's first line and the truncation generation): nothing
random, so a file read again after a crash gives its lines the same key, and a sink that derives
ids from it (Elasticsearch ``_id``) sees the same ids on every replay.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "FINGERPRINT_BYTES",
    "Chunk",
    "LongLines",
    "TailedFile",
    "digest",
    "read_head",
    "read_lines",
]

FINGERPRINT_BYTES: Final = 256
"""How many first bytes of a file make its fingerprint (fewer while the file is shorter)."""


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
    """Renamed away or deleted: followed by its descriptor until it has been quiet for
    ``rotate_wait``, read to its end and committed; then forgotten."""
    quiet_since: float = 0.0
    """Monotonic time the file was last seen growing (or was found gone)."""
    waiting: float = 0.0
    """While not 0: held open, not read, until this monotonic time, as a possible copy that
    ``copytruncate`` is making of another followed file."""
    origin: str | None = None
    """Digest of the first line (at most ``FINGERPRINT_BYTES``), once that line is complete."""

    @property
    def key(self) -> str:
        """The file's identity for records: the same on every read, new after a truncation."""
        if self.origin is None:
            head = read_head(self.fd, FINGERPRINT_BYTES) if self.fd >= 0 else b""
            newline = head.find(b"\n")
            if newline >= 0 or len(head) == FINGERPRINT_BYTES:
                self.origin = digest(head[: newline + 1] if newline >= 0 else head)[:16]
            else:
                return f"{self.dev:x}:{self.inode:x}:{digest(head)[:16]}:{self.generation}"
        return f"{self.dev:x}:{self.inode:x}:{self.origin}:{self.generation}"

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.inode)

    def entry(self) -> dict[str, Any]:
        """Committed position, to be saved; ``size`` is what was known to be written. Values
        that are the usual ones are left out, so that thousands of files save small."""
        out: dict[str, Any] = {
            "path": self.path,
            "dev": self.dev,
            "inode": self.inode,
            "fingerprint": self.fingerprint,
            "offset": self.committed,
            "line": self.committed_line,
        }
        if self.fingerprint_len != FINGERPRINT_BYTES:
            out["fingerprint_len"] = self.fingerprint_len
        if self.generation:
            out["generation"] = self.generation
        if self.size_seen > self.committed:
            out["size"] = self.size_seen
        if self.position > self.committed:
            # Read but not yet delivered: if the file is gone at the next start, these lines
            # are lost and their number is known.
            out["read"] = [self.position, self.line]
        return out


def read_lines(entry: dict[str, Any]) -> int:
    """Lines a saved entry had read past its delivered offset (0 when none or not known)."""
    try:
        read = entry.get("read")
        return max(0, int(read[1]) - int(entry["line"])) if read else 0
    except (KeyError, TypeError, ValueError, IndexError):
        return 0


def read_head(fd: int, size: int) -> bytes:
    length = min(size, FINGERPRINT_BYTES)
    return os.pread(fd, length, 0) if length > 0 else b""


def take_fingerprint(f: TailedFile, size: int) -> None:
    f.head = read_head(f.fd, size)
    f.fingerprint = digest(f.head)
    f.fingerprint_len = len(f.head)


def digest(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=16).hexdigest()


def long_line_at(data: bytes | bytearray, limit: int) -> int:
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
class LongLines:
    """Cuts or splits lines over ``limit`` bytes, counting what it did."""

    limit: int
    mode: str
    """``split`` a longer line into pieces, or ``truncate`` it (the rest is dropped, counted)."""
    seen: int = 0
    truncated_bytes: int = 0

    def cut(self, f: TailedFile, body: bytes, rest: bytes) -> tuple[bytes, bytes]:
        """``body`` (complete lines) and ``rest`` (an unfinished one) with long lines handled."""
        limit = self.limit
        out = bytearray()
        pieces = body.split(b"\n")[:-1]
        trailing = len(rest) > limit
        if trailing:
            pieces.append(rest)
            rest = b""
        for index, piece in enumerate(pieces):
            unfinished = trailing and index == len(pieces) - 1
            if f.skipping:
                self.truncated_bytes += len(piece)
                if not unfinished:
                    f.skipping = False
                continue
            if len(piece) <= limit:
                if unfinished:
                    rest = piece
                else:
                    out += piece + b"\n"
                continue
            self.seen += 1
            if self.mode == "truncate":
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
