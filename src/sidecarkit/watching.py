"""Noticing that a file changed, by polling: what works for mounted ConfigMaps and Secrets.

Kubernetes updates a mounted ConfigMap or Secret by swapping a ``..data`` symlink, which
inotify on the file itself misses; cert-manager and ``sidecarkit certs`` replace files by
rename. Polling the content's hash every few seconds sees all of these, costs one small read,
and never reports a change that did not happen.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FileWatch"]


@dataclass(slots=True)
class FileWatch:
    """The last seen content hash of a set of files."""

    paths: tuple[Path, ...]
    _seen: bytes | None = field(default=None, init=False)

    def changed(self) -> tuple[bytes, ...] | None:
        """The files' contents if any changed since the last call (or on the first), else None.

        Raises OSError when a file cannot be read; the previous state is kept, so the next call
        reports the change again once the files are readable.
        """
        contents = tuple(p.read_bytes() for p in self.paths)
        digest = hashlib.sha256(b"\0".join(hashlib.sha256(c).digest() for c in contents)).digest()
        if digest == self._seen:
            return None
        return contents

    def accept(self, contents: tuple[bytes, ...]) -> None:
        """Remember ``contents`` as seen: call after they were put to use (or refused for good)."""
        self._seen = hashlib.sha256(
            b"\0".join(hashlib.sha256(c).digest() for c in contents)
        ).digest()
