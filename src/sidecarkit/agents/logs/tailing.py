"""Following log files: new complete lines, in order, across rotation, from saved offsets.

A ``Tailer`` follows the files one glob matches (``files.TailedFile``: device, inode and a
fingerprint of the first bytes). Each ``poll`` opens new files, reads what was appended, in
chunks that end at a newline, taking the files in turn with a byte budget each so one busy file
cannot hold the others back, and notices what happened to each file:

- **rename or delete**: the file is read on through the descriptor already open, to its end,
  and kept until it has been quiet for ``rotate_wait`` (an app goes on writing to a renamed log
  until it reopens it); then forgotten once everything read was committed. The new file is
  picked up from its start. Discovery and these checks go on while the sinks hold reading back
  (``poll`` with a budget of 0): descriptors are kept, not data, so the files on disk stay the
  buffer even when they are renamed or deleted during an outage.
- **copytruncate** (the file became shorter than what was read): reading restarts at 0 under a
  new generation. What had not been read yet is looked for in the copy (``copies``), read up to
  where the original had got, so the truncation loses only what was written between the copy
  and the truncation; what cannot be found is counted in ``lost_bytes`` and named in a warning.
- **restart**: a saved file the glob no longer matches is looked for by device and inode in its
  directory and finished wherever it went; one that is gone counts its undelivered bytes lost.

At most ``max_open`` files are open: idle ones (everything read and committed) are closed when
others wait, and reopened by inode and fingerprint when they grow. Which files to follow and
from where (discovery, moved files, copies) is ``finding``'s half; reading is this module's.

Positions are only *proposed* by ``poll``; the caller ``commit``s (offset, line number) pairs
once what came before was delivered, and ``offsets.OffsetStore`` saves committed positions so
that a crash at any moment leaves a complete copy; a restart replays at most what was not yet
delivered: at least once, never lost.
"""

from __future__ import annotations

import logging
import os
import resource
import stat as stats
import time
from dataclasses import dataclass, field
from typing import Any, Final

from sidecarkit.agents.logs import copies
from sidecarkit.agents.logs.files import (
    FINGERPRINT_BYTES,
    Chunk,
    LongLines,
    TailedFile,
    long_line_at,
    take_fingerprint,
)
from sidecarkit.agents.logs.finding import Finding

__all__ = ["Chunk", "StdinTailer", "TailedFile", "Tailer"]

log = logging.getLogger("sidecarkit.agent.logs")

_REREAD: Final = 64 << 10
"""An unfinished line up to this long is read again from the file rather than kept and joined."""
COPY_WAIT: Final = 10.0
"""Seconds a file that starts like a followed one waits for that one to be truncated."""
ROTATE_WAIT: Final = 5.0
"""Seconds a renamed or deleted file is still followed after it last grew (as Fluent Bit's
``Rotate_Wait``)."""
TURN_BYTES: Final = 64 << 10
"""Bytes each file may read in its first turn of a poll; what is left is shared among the files
that still have data. A file written at full speed cannot keep a slow one waiting."""


def _default_max_open() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 8192
    return max(16, min(8192, soft * 3 // 4))


@dataclass(slots=True)
class Tailer(Finding):
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
    rotate_wait: float = ROTATE_WAIT
    look_every: float = 0.0
    """Seconds between looks at every file and the glob (truncations, new files, rotations);
    polls in between read only the files that had data. Many idle files then cost nothing
    while a few are busy. 0: look at every poll."""
    look_now: bool = False
    """Set when something changed (inotify): the next poll looks at everything."""
    max_open: int = 0
    """Most files open at once; 0: three quarters of the open-files limit (at most 8192)."""
    files: dict[tuple[int, int], TailedFile] = field(default_factory=dict)
    truncations: int = 0
    """Truncations (copytruncate) seen: each may have dropped lines written just before it."""
    lost_bytes: int = 0
    """Bytes known to be written and never delivered: truncated or deleted before they were."""
    lost_lines: int = 0
    """Lines of ``lost_bytes`` whose number is known: those read (and counted) but not yet
    delivered when the agent stopped, of a file gone at the next start. Bytes lost before
    they were read have no known number of lines and add nothing here."""
    losses: dict[str, int] = field(default_factory=dict)
    """Loss events by reason (``truncated``, ``truncated_past_copy``, ``deleted``): each
    added to ``lost_bytes``, whether or not its lines are known."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """Files the glob matches that could not be opened at the last look, with the reason."""
    bytes_read: int = 0
    lines_read: int = 0
    changes: int = 0
    """Moves whenever a file is opened, renamed away, truncated or let go: worth saving at once
    even if nothing was delivered, so a crash while a sink is down does not forget files that
    left the glob meanwhile."""
    grown: int = 0
    """Bytes the files were seen to grow by: the saved sizes tell a restart what was lost."""
    dirty: set[tuple[int, int]] = field(default_factory=set)
    """Files whose saved entry changed (or went) since the last ``delta``: what a save of
    changes only writes, so its cost follows what changed, not how many files are followed."""
    cutter: LongLines = field(init=False)
    _saved: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    """Positions of files not open: restored at start, or closed while idle."""
    _finished: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    """Files read to their end and let go, still matched by the glob (rotated copies): they are
    not read again, and stay in the saved state so a restart does not read them again either."""
    _copies: copies.Copies = field(default_factory=copies.Copies)
    _restored: list[dict[str, Any]] | None = None
    """Entries restored at start, until the first look has dealt with them."""
    saved_at: float = 0.0
    """Wall-clock time of the saved offsets restored (0: unknown)."""
    _turn: int = 0
    _looked_at: float = float("-inf")
    _looked_wall: float = 0.0
    """Wall-clock time the last full look began (0: none yet)."""
    _missed: dict[str, tuple[float, set[str]]] = field(default_factory=dict)
    """Directories where a rotation was seen since the last look: the wall-clock time of the
    look before it, and the rotated paths. Files named as their rotations that appeared since
    may hold lines no look saw (``finding.Finding._follow_missed``)."""
    _head_index: Any = None
    _active: set[tuple[int, int]] = field(default_factory=set)
    _uncounted: dict[tuple[int, int], Chunk] = field(default_factory=dict)
    """This poll's last chunk per file while ``count_lines`` is off and the caller counts."""

    def __post_init__(self) -> None:
        self.cutter = LongLines(self.max_line, self.long_lines)
        if self.max_open <= 0:
            self.max_open = _default_max_open()

    @property
    def long_lines_seen(self) -> int:
        return self.cutter.seen

    @property
    def truncated_bytes(self) -> int:
        """Bytes dropped from too-long lines in ``truncate`` mode."""
        return self.cutter.truncated_bytes

    # --- state -------------------------------------------------------------------------------

    def restore(self, entries: list[dict[str, Any]], saved_at: float = 0.0) -> None:
        """Resume from saved positions (saved at ``saved_at``, wall clock); applied when each
        file is next seen."""
        for entry in entries:
            try:
                self._saved[(int(entry["dev"]), int(entry["inode"]))] = entry
            except (KeyError, TypeError, ValueError):
                continue
        self._restored = list(entries)
        self.saved_at = saved_at

    def delta(self) -> tuple[list[dict[str, Any]], list[list[int]]]:
        """The entries that changed since the last call, and the ``[dev, inode]`` of those
        gone; forgets the changes (``snapshot`` gives everything)."""
        changed: list[dict[str, Any]] = []
        gone: list[list[int]] = []
        for identity in self.dirty:
            f = self.files.get(identity)
            entry = f.entry() if f is not None else None
            if entry is None:
                entry = self._finished.get(identity) or self._saved.get(identity)
            if entry is None:
                gone.append(list(identity))
            else:
                changed.append(entry)
        self.dirty.clear()
        return changed, gone

    def snapshot(self) -> list[dict[str, Any]]:
        """Committed positions, to be saved: all of them (so the changes so far are taken)."""
        self.dirty.clear()
        return [
            *(f.entry() for f in self.files.values()),
            *self._finished.values(),
            *self._saved.values(),
        ]

    def _open(self, path: str, saved: dict[str, Any] | None = None) -> TailedFile | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._unreadable(path, exc)
            return None
        self.unreadable.pop(path, None)
        st = os.fstat(fd)
        if not stats.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in self.files:
            os.close(fd)
            return None
        f = TailedFile(path, st.st_dev, st.st_ino, fd, "", 0, quiet_since=time.monotonic())
        f.size_seen = st.st_size
        take_fingerprint(f, st.st_size)
        saved = self._saved.pop(f.identity, None) if saved is None else saved
        if saved is not None:
            self._resume(f, saved, st.st_size)
        if saved is None or (
            saved and not saved.get("idle") and not f.position and not f.generation
        ):
            # Nothing read of it yet (a file saved at offset 0 too: one held as a possible copy
            # when the agent was killed): it may be the copy of a file truncated meanwhile.
            if self._copies.sources:
                self._resume_copy(f, st.st_size)
            if not f.position and self._is_copy_in_progress(f, st.st_size):
                # Held open but not read until the original's truncation shows whether it is
                # its copy; if none comes, a copy someone made on purpose: a file like any.
                f.waiting = time.monotonic() + COPY_WAIT
        self.files[f.identity] = f
        self.dirty.add(f.identity)
        if self._head_index is not None:
            self._head_index.add(f)
        self.changes += 1
        log.debug("following %s (inode %d) from offset %d", f.path, f.inode, f.position)
        return f

    # --- reading -----------------------------------------------------------------------------
    def poll(self, budget: int | None = None, *, final: bool = False) -> list[Chunk]:
        """New complete lines from every file, at most about ``budget`` bytes in all.

        A budget of 0 reads nothing but still opens new files and follows rotations.
        ``final`` also hands out partial last lines (on shutdown, when no more will come).
        """
        now = time.monotonic()
        full = final or self.look_now or now - self._looked_at >= self.look_every
        if full:
            # Every file, and the glob, looked at; in between only files with data to read.
            self._looked_at, self.look_now = now, False
            wall = time.time()
            for f in list(self.files.values()):
                self._check_truncated(f)
                if f.identity in self.files:
                    self._observe(f)
            self.discover()
            self._looked_wall = wall
            for original in self._copies.expire():
                self._lose(original)
            candidates = list(self.files.values())
        else:
            candidates = [f for i, f in self.files.items() if i in self._active]
        chunks: list[Chunk] = []
        self._uncounted.clear()
        left = self.read_size * max(1, len(self.files)) if budget is None else budget
        order = [f for f in candidates if not f.waiting or self._wait_over(f, now)]
        if len(order) > 1:
            self._turn = (self._turn + 1) % len(order)
            order = order[self._turn :] + order[: self._turn]
        share = TURN_BYTES if len(order) > 1 else left
        turn = order
        active = set()
        while turn and left > 0:
            hungry = []
            for f in turn:
                if left <= 0:
                    break
                chunk = self._read(f, min(self.read_size, share, left), final=final)
                if chunk is not None:
                    chunks.append(chunk)
                    left -= len(chunk.data)
                    active.add(f.identity)
                if f.position + len(f.partial) < f.size_seen:
                    hungry.append(f)
            turn = hungry
            share = max(TURN_BYTES, left // max(1, len(hungry)))
        for f in order:
            if f.position + len(f.partial) < f.size_seen:
                active.add(f.identity)
            elif full and f.identity in self.files:
                last = self._check_rotated(f, final=final)
                if last is not None:
                    chunks.append(last)
        self._active = active if full else active | (self._active & set(self.files))
        self._uncounted.clear()  # the caller counts the rest; keep no chunk past the poll
        return chunks

    def _wait_over(self, f: TailedFile, now: float) -> bool:
        """A file held back as a possible copy is read once ``COPY_WAIT`` is over or it left
        its name (then it was no copy in progress)."""
        if now < f.waiting:
            try:
                st = os.stat(f.path)
                if (st.st_dev, st.st_ino) == f.identity:
                    return False
            except OSError:
                pass
        f.waiting = 0.0
        return True

    def _observe(self, f: TailedFile) -> int | None:
        """Look at ``f``'s size and first bytes; its size, or None when it cannot be looked at.

        Done on every read and on every full look, so also while reading is held back: the
        first bytes of a file opened (nearly) empty are known before a ``copytruncate`` can
        replace them, which is how that truncation is told from growth later, after a restart
        too."""
        try:
            size = os.fstat(f.fd).st_size
        except OSError:
            return None
        if size > f.size_seen and not f.gone:
            self._grew(f)
        if size < f.position:
            self._check_truncated(f)
        elif size != f.size_seen:
            self.grown += max(0, size - f.size_seen)
            f.size_seen = size
            f.quiet_since = time.monotonic()
            self.dirty.add(f.identity)
        if f.fingerprint_len < FINGERPRINT_BYTES and size > f.fingerprint_len:
            take_fingerprint(f, size)
        return size

    def _read(self, f: TailedFile, limit: int, *, final: bool) -> Chunk | None:
        size = self._observe(f)
        if size is None:
            return None
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

    def _grew(self, f: TailedFile) -> None:
        """``f`` grew. It may have been truncated and written past where reading had got to
        meanwhile (a whole copytruncate between two reads, while the agent did not run): its
        first bytes then differ from the known ones. With none known (it was empty), the copies
        such a truncation would have left are looked for (``Finding._follow_missed``)."""
        if not f.head:
            if f.position == 0:
                self._note_rotation(f.path)
            return
        try:
            if os.pread(f.fd, len(f.head), 0) != f.head:
                self._check_truncated(f, force=True)  # truncated and written again
        except OSError:
            return

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
        if f.skipping or long_line_at(body, self.max_line) >= 0 or len(rest) > self.max_line:
            body, rest = self.cutter.cut(f, body, rest)
        f.partial = rest
        advance = consumed - len(rest)
        self.dirty.add(f.identity)
        if not body:
            f.position += advance
            return None
        previous = self._uncounted.get(f.identity)
        if previous is not None and previous.lines < 0 and previous.generation == f.generation:
            # Read again in the same poll before the caller counted the last chunk: count it
            # now, so this chunk's first line number follows it.
            self.counted(previous, previous.data.count(b"\n"))
        chunk = Chunk(f, body, f.line, f.position + advance, -1, f.generation)
        f.position += advance
        if self.count_lines or final:
            self.counted(chunk, body.count(b"\n"))
        else:
            self._uncounted[f.identity] = chunk
        return chunk

    def counted(self, chunk: Chunk, lines: int) -> None:
        """``chunk`` holds ``lines`` lines (with ``count_lines`` off, the caller counts)."""
        chunk.lines = lines
        chunk.file.line += lines
        self.lines_read += lines

    def _check_rotated(self, f: TailedFile, *, final: bool) -> Chunk | None:
        """Notice that ``f`` was renamed away or deleted; once it has been quiet for
        ``rotate_wait``, hand out its unfinished last line and let it go."""
        if not f.gone:
            try:
                st = os.stat(f.path)
                moved = (st.st_dev, st.st_ino) != f.identity
            except OSError:
                moved = True
            if not moved:
                return None
            f.gone = True
            f.quiet_since = time.monotonic()
            self.changes += 1
            log.info("%s was renamed or deleted; reading on through its descriptor", f.path)
        if not self._quiet(f) and not final:
            return None
        if f.position + len(f.partial) < f.size_seen:
            return None  # written to since the last read: read on first
        chunk = self._emit(f, b"", final=True) if f.partial or f.skipping else None
        f.skipping = False
        self._forget_if_done(f)
        return chunk

    def _quiet(self, f: TailedFile) -> bool:
        """``f`` did not grow for ``rotate_wait`` (looked at now: reading may have paused)."""
        try:
            size = os.fstat(f.fd).st_size
        except OSError:
            size = f.size_seen
        if size != f.size_seen:
            self.grown += max(0, size - f.size_seen)
            f.size_seen = size
            f.quiet_since = time.monotonic()
            self.dirty.add(f.identity)
        return time.monotonic() - f.quiet_since >= self.rotate_wait

    def _forget_if_done(self, f: TailedFile) -> None:
        if (
            f.gone
            and f.committed >= f.position
            and not f.partial
            and self._quiet(f)
            and f.position >= f.size_seen
        ):
            os.close(f.fd)
            self.files.pop(f.identity, None)
            self.dirty.add(f.identity)
            self.changes += 1
            log.debug(
                "%s (inode %d) read to offset %d, delivered: let go", f.path, f.inode, f.position
            )
            self._finished[f.identity] = {
                **f.entry(),
                "offset": f.position,
                "line": f.line,
                "done": True,
            }

    def commit(self, identity: tuple[int, int], generation: int, offset: int, line: int) -> None:
        """Everything in the file before ``offset`` (``line`` lines) was delivered."""
        f = self.files.get(identity)
        if f is None or f.generation != generation:
            alias = self._copies.aliases.get((identity, generation))
            f = self.files.get(alias) if alias is not None else None
            if f is None:
                return
        if offset <= f.committed:
            return
        f.committed, f.committed_line = offset, line
        self.dirty.add(f.identity)
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
        self.file = TailedFile("-", 0, 0, fd, "", 0, origin="-")

    def discover(self) -> None:
        return None

    def restore(self, entries: list[dict[str, Any]], saved_at: float = 0.0) -> None:
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        return []

    def delta(self) -> tuple[list[dict[str, Any]], list[list[int]]]:
        self.dirty.clear()
        return [], []

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
