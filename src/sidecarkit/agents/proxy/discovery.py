"""Where a service's endpoints come from: a static list, or a file re-read when it changes.

An endpoints file holds one ``host:port`` a line; blank lines and ``#`` comments are ignored.
It is polled once a second (``watching.FileWatch``: sees ConfigMap symlink swaps and renames that
inotify on the file misses). A file that cannot be read or has a bad line keeps the last good
endpoint set: a half-written update must not empty a service. That is logged once per change
and counted in ``discovery_errors_total``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sidecarkit import watching
from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["FileSource", "parse_endpoints"]

log = logging.getLogger("sidecarkit.agent.proxy")


def parse_endpoints(text: str, *, source: str) -> list[tuple[str, int]]:
    """The endpoints in an endpoints file's text; ValueError names the line and the fix."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(
                proxy_settings.parse_address(line, f"{source}:{number}", default_host="127.0.0.1")
            )
    return out


class FileSource:
    """The endpoints listed in one file, as of the last good read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.watch = watching.FileWatch((Path(path),))
        self.endpoints: list[tuple[str, int]] | None = None
        self.errors = 0
        self._last_error = ""

    def poll(self) -> list[tuple[str, int]] | None:
        """A new endpoint set when the file changed to a good one, else None."""
        try:
            contents = self.watch.changed()
        except OSError as exc:
            self._fail(f"cannot read {self.path}: {exc.strerror}; keeping the last endpoints")
            return None
        if contents is None:
            return None
        try:
            endpoints = parse_endpoints(contents[0].decode("utf-8", "replace"), source=self.path)
        except ValueError as exc:
            self._fail(f"{exc}; keeping the last endpoints")
            return None
        self.watch.accept(contents)
        self._last_error = ""
        self.endpoints = endpoints
        return endpoints

    def _fail(self, message: str) -> None:
        self.errors += 1
        if message != self._last_error:
            log.warning("%s", message)
            self._last_error = message
