"""Finding the files to follow, and finding their data again when it left the glob's reach.

The half of ``tailing.Tailer`` that decides *which* files to read and from where: discovery
(with the cap on open files), files renamed away while the agent was down, files that appeared
meanwhile, and copytruncate (truncations seen, copies claimed, what no copy holds counted lost).
``tailing`` reads the files; this module keeps no state of its own (``Finding`` is a mixin over
the tailer's fields).
"""

from __future__ import annotations

import errno
import glob as globbing
import logging
import os
import stat as stats
import time
from dataclasses import dataclass, field
from typing import Any, Final

from sidecarkit.agents.logs import copies
from sidecarkit.agents.logs.files import (
    FINGERPRINT_BYTES,
    TailedFile,
    digest,
    read_head,
    read_lines,
    take_fingerprint,
)

__all__ = ["Finding"]

log = logging.getLogger("sidecarkit.agent.logs")

IDLE: Final = 1.0
"""Seconds a file must have been quiet before it is closed to make room for another."""


_KEY: Final = 16
"""Bytes of a file's start that index it among the followed files."""


@dataclass(slots=True)
class _Heads:
    paths: set[str] = field(default_factory=set)
    all: list[TailedFile] = field(default_factory=list)
    by_start: dict[bytes, list[TailedFile]] = field(default_factory=dict)
    short: list[TailedFile] = field(default_factory=list)
    """Followed files shorter than ``_KEY`` bytes so far."""

    def add(self, f: TailedFile) -> None:
        self.paths.add(f.path)
        if f.gone or f.waiting or not f.head:
            return
        self.all.append(f)
        if len(f.head) >= _KEY:
            self.by_start.setdefault(f.head[:_KEY], []).append(f)
        else:
            self.short.append(f)


class Finding:
    """Discovery, moved files and copies, over the fields ``tailing.Tailer`` declares."""

    pattern: str
    max_open: int
    files: dict[tuple[int, int], TailedFile]
    truncations: int
    lost_bytes: int
    lost_lines: int
    losses: dict[str, int]
    dirty: set[tuple[int, int]]
    unreadable: dict[str, str]
    changes: int
    saved_at: float
    _saved: dict[tuple[int, int], dict[str, Any]]
    _finished: dict[tuple[int, int], dict[str, Any]]
    _copies: copies.Copies
    _restored: list[dict[str, Any]] | None
    _head_index: _Heads | None
    _looked_wall: float
    _missed: dict[str, tuple[float, set[str]]]

    def _open(self, path: str, saved: dict[str, Any] | None = None) -> TailedFile | None:
        raise NotImplementedError

    def _unreadable(self, path: str, exc: OSError) -> None:
        reason = exc.strerror or type(exc).__name__
        if self.unreadable.get(path) == reason:
            return
        self.unreadable[path] = reason
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            log.warning(
                "cannot open %s: %s (%d files open); raise the open-files limit "
                "(ulimit -n) or lower max_open_files; it is read once a descriptor is free",
                path,
                reason,
                len(self.files),
            )
        else:
            log.warning("cannot open %s: %s; its lines are not read until it can be", path, reason)

    def _resume_copy(self, f: TailedFile, size: int) -> None:
        original = self._copies.match(f.fd, size)
        if original is None:
            return
        # Read on from where the original was read up to; what was read but not yet
        # delivered is still in flight, and its commits now land on the copy.
        f.position, f.line = original["position"], original["line"]
        f.committed, f.committed_line = original["committed"], original["committed_line"]
        self._copies.alias(original["identity"], f.identity)
        self.dirty.add(f.identity)
        log.info(
            "%s is the copy of %s made before it was truncated; reading it from offset %d",
            f.path,
            original["path"],
            f.position,
        )

    @staticmethod
    def _copy_source(f: TailedFile) -> dict[str, Any]:
        return {
            "path": f.path,
            "fingerprint": f.fingerprint,
            "fingerprint_len": f.fingerprint_len,
            "position": f.position,
            "line": f.line,
            "committed": f.committed,
            "committed_line": f.committed_line,
            "identity": (f.identity, f.generation),
            "unread": max(0, f.size_seen - f.position),
            "size": f.size_seen,
        }

    def _remember(self, entry: dict[str, Any]) -> None:
        for pushed_out in self._copies.remember(entry):
            self._lose(pushed_out)

    def _count_loss(self, reason: str, size: int, lines: int = 0) -> None:
        """``size`` bytes were lost, ``lines`` of them known lines (0: not known)."""
        self.lost_bytes += size
        self.lost_lines += lines
        self.losses[reason] = self.losses.get(reason, 0) + 1

    def _lose(self, original: dict[str, Any]) -> None:
        """No copy of a truncated file turned up: what it held unread is gone."""
        if original["unread"]:
            self._count_loss("truncated", original["unread"])
            log.warning(
                "%s was truncated with %d bytes not yet read, and no copy of it was found: "
                "they are lost (rotate by rename, or keep the copy next to the file)",
                original["path"],
                original["unread"],
            )

    def _is_copy_in_progress(self, new: TailedFile, size: int) -> bool:
        """A new file that starts like a file being followed (or is still too short to tell,
        empty even: ``copytruncate`` may have just created it): a copy whose original may be
        about to be truncated (``copytruncate`` copies first). Not so when a followed file had
        its name: that one was renamed or deleted, and this is its successor."""
        head = read_head(new.fd, size)
        index = self._heads()
        if new.path in index.paths:
            return False
        if len(head) >= _KEY:
            # Only files that start with the same bytes can be its original: look them up.
            candidates = [*index.by_start.get(head[:_KEY], ()), *index.short]
        else:
            candidates = index.all
        for f in candidates:
            if f.gone or f.waiting or not f.head or head[: len(f.head)] != f.head[: len(head)]:
                continue
            if len(head) >= len(f.head) or copies.rotated_name(new.path, f.path):
                return True  # as long as its head, or too short to tell but named like a copy
        return False

    def _unread(self, identity: tuple[int, int]) -> int:
        """Order of opening: files saved with a position, then saved at 0, then new ones."""
        saved = self._saved.get(identity)
        return 2 if saved is None else 0 if saved.get("offset") else 1

    def _heads(self) -> _Heads:
        """The followed files by their first bytes, built once per look (``discover``)."""
        if self._head_index is None:
            index = _Heads()
            for f in self.files.values():
                index.add(f)
            self._head_index = index
        return self._head_index

    def _claim_waiting_copy(self) -> None:
        """A truncation was just seen: a file held back as a possible copy may be its copy."""
        for f in self.files.values():
            if not f.waiting or not self._copies.sources:
                continue
            try:
                size = os.fstat(f.fd).st_size
            except OSError:
                continue
            left = len(self._copies.sources)
            self._resume_copy(f, size)
            if len(self._copies.sources) < left:
                f.waiting = 0.0

    def _resume(self, f: TailedFile, saved: dict[str, Any], size: int) -> None:
        try:
            offset, line = int(saved["offset"]), int(saved["line"])
            length = int(saved.get("fingerprint_len", FINGERPRINT_BYTES))
            generation = int(saved.get("generation", 0))
        except (KeyError, TypeError, ValueError):
            return
        head = os.pread(f.fd, length, 0) if length else b""
        same = len(head) == length and digest(head) == saved.get("fingerprint") and offset <= size
        if same:
            f.position = f.committed = offset
            f.line = f.committed_line = line
            f.generation = generation
            return
        # Recycled inode, or truncated while we were away (perhaps written past the saved
        # offset again since): a new file as far as we know. Either way a file that starts as
        # the saved one did is its copy, and goes on from the saved offset.
        f.generation = generation + 1
        if offset > size or len(head) < length:
            self.truncations += 1
        known = int(saved.get("size", offset))
        original = {
            "path": f.path,
            "fingerprint": str(saved.get("fingerprint")),
            "fingerprint_len": length,
            "position": offset,
            "line": line,
            "committed": offset,
            "committed_line": line,
            "identity": None,
            "unread": max(0, known - offset),
            "size": known,
        }
        log.info("%s changed while the agent was away; reading it from the start", f.path)
        if not self._adopt_copy(original, (f.identity,)):
            self._remember(original)  # a copy the glob matches may still turn up

    def _probe_directory(self) -> None:
        """Python's glob takes a directory it cannot list for an empty one; when nothing
        matched, list the pattern's fixed directory to tell "no files yet" from "cannot look"
        (no descriptor left, no permission), which is then reported like an unreadable file."""
        directory = self._fixed_directory()
        try:
            with os.scandir(directory):
                pass
        except FileNotFoundError:
            return  # not there yet: usual before the app starts
        except OSError as exc:
            self._unreadable(directory, exc)
            return
        self.unreadable.pop(directory, None)

    def _fixed_directory(self) -> str:
        """The directory of the pattern up to its first wildcard: ``/var/log`` of
        ``/var/log/*/app.log``."""
        parts = self.pattern.split(os.sep)
        last = len(parts) - 1  # the file name part
        fixed = next((i for i, part in enumerate(parts[:last]) if globbing.has_magic(part)), last)
        if fixed == 0:
            return "."
        return os.sep.join(parts[:fixed]) or os.sep

    def discover(self) -> None:
        """Open files the glob matches that are not followed yet (as many as ``max_open``)."""
        self._head_index = None
        found = []
        matched = globbing.glob(self.pattern)
        if not matched:
            self._probe_directory()
        elif self.unreadable:
            self.unreadable.pop(self._fixed_directory(), None)
        for path in sorted(matched):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if stats.S_ISREG(st.st_mode):
                found.append((path, st))
            else:
                self.unreadable.pop(path, None)
        # Files with a saved position first: one truncated while the agent was away must be
        # known as such before its copy is opened, whatever the copy is named.
        found.sort(key=lambda item: self._unread((item[1].st_dev, item[1].st_ino)))
        seen = set()
        room = 1024  # idle files closed per look at most, so a look stays cheap
        for path, st in found:
            identity = (st.st_dev, st.st_ino)
            seen.add(identity)
            if identity in self.files:
                continue
            done = self._finished.get(identity)
            if done is not None:
                if st.st_size <= done["offset"]:
                    continue
                # Written to again after it was let go (a writer kept it open): follow it again.
                self._saved[identity] = self._finished.pop(identity)
                self.dirty.add(identity)
            saved = self._saved.get(identity)
            if saved is not None and saved.get("idle") and st.st_size == saved.get("offset"):
                continue  # closed while idle and still unchanged
            if len(self.files) >= self.max_open:
                if room <= 0 or not self._close_idle():
                    continue
                room -= 1
            if saved is None and path in self._heads().paths:
                self._note_rotation(path)  # a new file where a followed one was: renamed away
            self._open(path)
        for path in [p for p in self.unreadable if not os.path.lexists(p)]:
            del self.unreadable[path]
        missing = [
            entry
            for identity, entry in self._saved.items()
            if identity not in seen and (self._restored is not None or entry.get("idle"))
        ]
        if missing:
            self._follow_moved(missing)
        if self._restored is not None:
            self._follow_newcomers(self._restored, seen)
            self._restored = None
        missed, self._missed = self._missed, {}
        for directory, (since, paths) in missed.items():
            self._follow_missed(directory, paths, since, seen)
        for identity in [i for i in self._finished if i not in seen]:
            del self._finished[identity]
            self.dirty.add(identity)

    def _follow_newcomers(self, entries: list[dict[str, Any]], seen: set[tuple[int, int]]) -> None:
        """Files that appeared next to a followed file while the agent was down, named as its
        rotations are (``app.log.3``), written to after the offsets were saved, and out of the
        glob's reach: created and rotated away while the agent was down."""
        if not self.saved_at:
            return
        originals: dict[str, set[str]] = {}
        for entry in entries:
            path = str(entry.get("path", ""))
            originals.setdefault(os.path.dirname(path), set()).add(path)
        for directory, paths in originals.items():
            self._follow_missed(directory, paths, self.saved_at, seen)

    def _note_rotation(self, path: str) -> None:
        """``path`` was rotated (truncated, or a new file took its name): other rotations may
        have come and gone since the last look, in files named as its rotations are."""
        if not self._looked_wall:
            return
        self._missed.setdefault(os.path.dirname(path), (self._looked_wall, set()))[1].add(path)

    def _follow_missed(
        self, directory: str, originals: set[str], since: float, seen: set[tuple[int, int]]
    ) -> None:
        """Files in ``directory`` written after ``since`` (wall clock), named as rotations of
        ``originals``, that the glob does not match and no followed or finished file is: a
        file created, written and rotated away (renamed, or copied and truncated) between two
        looks, when the agent did not run (starved of CPU, or down). Its lines were never
        read: read them, from where a truncated original was read up to if it is that one's
        copy, else from the start."""
        known = {*seen, *self.files, *self._finished, *self._saved}
        for path in copies.newcomers(directory, since - copies.MTIME_SLACK, known):
            if copies.compressed(path) or not any(copies.rotation_of(path, o) for o in originals):
                continue
            f = self._open(path)
            if f is not None:
                f.gone = True
                log.info(
                    "%s appeared since the last look; reading it from offset %d", path, f.position
                )

    def _close_idle(self) -> bool:
        """Close one file with nothing left to read or confirm, to free its descriptor."""
        now = time.monotonic()
        for f in self.files.values():
            if (
                f.gone
                or f.partial
                or f.skipping
                or f.committed < f.position
                or f.size_seen > f.position
                or now - f.quiet_since < IDLE
            ):
                continue
            entry = f.entry()
            entry["idle"] = True
            self._saved[f.identity] = entry
            self.dirty.add(f.identity)
            os.close(f.fd)
            del self.files[f.identity]
            return True
        return False

    def _follow_moved(self, entries: list[dict[str, Any]]) -> None:
        """Saved files the glob no longer matches: finish them wherever they went in their
        directory, or count what was known to be written and not delivered as lost."""
        for entry in entries:
            identity = (int(entry["dev"]), int(entry["inode"]))
            self._saved.pop(identity, None)
            self.dirty.add(identity)
            path = copies.find_moved(entry)
            if path is not None and entry.get("done"):
                try:
                    grew = os.stat(path).st_size > int(entry.get("offset", 0))
                except (OSError, ValueError):
                    grew = False
                if not grew:
                    continue  # read and delivered to its end, and still as it was
            if path is not None:
                f = self._open(path, entry)
                if f is not None:
                    f.gone = True
                    log.info(
                        "%s is now %s; reading it to its end from offset %d",
                        entry.get("path"),
                        path,
                        f.position,
                    )
                    continue
            offset = int(entry.get("offset", 0))
            unread = max(0, int(entry.get("size", offset)) - offset)
            if unread:
                self._count_loss("deleted", unread, read_lines(entry))
                log.warning(
                    "%s was deleted (or moved out of its directory) with %d bytes written "
                    "and not delivered: they are lost",
                    entry.get("path"),
                    unread,
                )

    def _check_truncated(self, f: TailedFile, *, force: bool = False) -> None:
        """``copytruncate``: the file got shorter than it was seen to be, or no longer starts as
        it did (truncated, then written past where reading had got to before this look); read
        it again from 0, and what was not read yet from the copy."""
        try:
            size = os.fstat(f.fd).st_size
            if not force and (
                size >= f.position
                and size >= f.size_seen
                and (
                    size == f.size_seen  # unchanged since the last look: not truncated since
                    or not f.head
                    or os.pread(f.fd, len(f.head), 0) == f.head
                )
            ):
                return
        except OSError:
            return
        self.truncations += 1
        self.changes += 1
        self.dirty.add(f.identity)
        original = self._copy_source(f)
        f.generation += 1
        f.origin = None
        f.position = f.committed = f.line = f.committed_line = 0
        f.partial = b""
        f.skipping = False
        f.size_seen = size
        take_fingerprint(f, size)
        log.warning("%s was truncated; reading it again from the start", f.path)
        if not self._adopt_copy(original):
            self._remember(original)
            self._claim_waiting_copy()
        self._note_rotation(f.path)

    def _adopt_copy(
        self, original: dict[str, Any], exclude: tuple[tuple[int, int], ...] = ()
    ) -> bool:
        """Find the copy of a truncated file next to it, if the glob will not, and read it from
        where the original had been read up to; False to leave it to discovery."""
        if not original["fingerprint_len"]:
            return False
        # The file may have grown since the last look: any copy longer than what was read
        # holds lines not read yet.
        path = copies.find_copy(
            original["path"],
            original["fingerprint"],
            original["fingerprint_len"],
            original["position"] + 1,
            {*self.files, *exclude},
        )
        if path is None or path in globbing.glob(self.pattern):
            return False
        f = self._open(path, {})
        if f is None:
            return False
        f.position, f.line = original["position"], original["line"]
        f.committed, f.committed_line = original["committed"], original["committed_line"]
        f.gone = True
        self._copies.alias(original["identity"], f.identity)
        short = original["size"] - f.size_seen
        if short > 0:
            self._count_loss("truncated_past_copy", short)
            log.warning(
                "%s was truncated %d bytes past the end of its copy %s: they are lost",
                original["path"],
                short,
                path,
            )
        log.info(
            "reading what %s held unread from its copy %s, from offset %d",
            original["path"],
            path,
            f.position,
        )
        return True
