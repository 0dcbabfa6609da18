"""Following log files: new complete lines, in order, across rotation, from saved offsets.

A ``Tailer`` watches a glob. Each file is identified by its inode. On each ``poll`` it reads
what was appended since the last position, hands out complete lines (a partial last line waits
for its newline, or for the end), and notices rotation:

- **rename** (the path now names another inode): the old file is read to its end through the
  descriptor already open, then the new file is read from its start;
- **copytruncate** (the same inode became shorter than the position): reading restarts at 0;
  what was written between the last read and the truncation cannot be known, and is counted as
  possibly lost rather than hidden.

Positions are only *proposed* by ``poll``; the caller ``commit``s them once the lines were
delivered, and ``save`` writes committed positions atomically, so a crash replays at most the
undelivered lines (at least once, never lost).
"""

from __future__ import annotations

import glob as globbing
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Line", "Tailer"]

_MAX_READ = 1 << 20  # bytes per file per poll: bounds memory whatever the writer does


@dataclass(slots=True)
class Line:
    path: str
    text: str
    inode: int
    end: int
    """Offset just after this line: committing it means everything before is delivered."""


@dataclass(slots=True)
class _File:
    path: str
    inode: int
    fd: int
    position: int
    committed: int
    partial: bytes = b""
    gone: bool = False
    """Renamed away and read to its end: dropped once its last line is committed."""


@dataclass(slots=True)
class Tailer:
    pattern: str
    offsets_path: Path | None = None
    files: dict[int, _File] = field(default_factory=dict)
    possibly_lost: int = 0
    """Truncations that may have dropped unread lines (copytruncate's known race)."""
    bytes_read: int = 0

    def load(self) -> None:
        """Resume from saved offsets, for files that still have the same inode."""
        if self.offsets_path is None or not self.offsets_path.exists():
            return
        try:
            saved = json.loads(self.offsets_path.read_text())
        except (OSError, ValueError):
            return
        for entry in saved.get("files", []):
            try:
                stat = os.stat(entry["path"])
            except OSError:
                continue
            if stat.st_ino == entry["inode"]:
                fd = os.open(entry["path"], os.O_RDONLY)
                offset = min(int(entry["offset"]), stat.st_size)
                self.files[stat.st_ino] = _File(entry["path"], stat.st_ino, fd, offset, offset)

    def _discover(self) -> None:
        for path in sorted(globbing.glob(self.pattern)):
            try:
                stat = os.stat(path)
            except OSError:
                continue
            if stat.st_ino in self.files or not os.path.isfile(path):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            self.files[stat.st_ino] = _File(path, stat.st_ino, fd, 0, 0)

    def poll(self, *, final: bool = False) -> list[Line]:
        """New complete lines from every file; ``final`` also hands out partial last lines."""
        self._discover()
        lines: list[Line] = []
        for f in list(self.files.values()):
            size = os.fstat(f.fd).st_size
            if size < f.position:  # copytruncate
                self.possibly_lost += 1
                f.position = f.committed = 0
                f.partial = b""
            while f.position < size:
                chunk = os.pread(f.fd, min(_MAX_READ, size - f.position), f.position)
                if not chunk:
                    break
                self.bytes_read += len(chunk)
                data = f.partial + chunk
                start = f.position - len(f.partial)
                f.position += len(chunk)
                cut = data.rfind(b"\n") + 1
                for raw in data[:cut].split(b"\n")[:-1]:
                    start += len(raw) + 1
                    lines.append(Line(f.path, raw.decode("utf-8", "replace"), f.inode, start))
                f.partial = data[cut:]
                if len(lines) > 10_000:
                    break
            if final and f.partial:
                lines.append(
                    Line(f.path, f.partial.decode("utf-8", "replace"), f.inode, f.position)
                )
                f.partial = b""
            try:
                current = os.stat(f.path).st_ino
            except OSError:
                current = -1
            if current != f.inode and f.position >= size and not f.partial:
                f.gone = True
                self._drop_if_done(f)
        return lines

    def _drop_if_done(self, f: _File) -> None:
        if f.gone and f.committed >= f.position:
            os.close(f.fd)
            self.files.pop(f.inode, None)

    def commit(self, lines: list[Line]) -> None:
        """Mark ``lines`` (and everything before them in their files) delivered."""
        for line in lines:
            f = self.files.get(line.inode)
            if f is not None and line.end > f.committed:
                f.committed = line.end
        for f in list(self.files.values()):
            self._drop_if_done(f)

    def save(self) -> None:
        """Write the committed offsets atomically (write, fsync, rename)."""
        if self.offsets_path is None:
            return
        self.offsets_path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "files": [
                {"path": f.path, "inode": f.inode, "offset": f.committed}
                for f in self.files.values()
            ]
        }
        temp = self.offsets_path.with_suffix(".tmp")
        with open(temp, "w") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.offsets_path)

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
