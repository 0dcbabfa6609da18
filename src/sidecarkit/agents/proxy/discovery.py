"""Where a service's endpoints come from: a static list, a file re-read when it changes, or
the A/AAAA records of a DNS name re-resolved every few seconds.

An endpoints file holds one ``host:port`` a line; blank lines and ``#`` comments are ignored.
A line may end in ``mtls`` (the endpoint has a sidecar: mTLS to it) or ``plaintext``.
It is polled once a second (``watching.FileWatch``: sees ConfigMap symlink swaps and renames that
inotify on the file misses). A file that cannot be read or has a bad line keeps the last good
endpoint set: a half-written update must not empty a service. That is logged once per change
and counted in ``discovery_errors_total``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from sidecarkit import watching
from sidecarkit.agents.proxy import settings as proxy_settings

__all__ = ["DNS_INTERVAL", "MARKS", "DnsSource", "FileSource", "parse_endpoints", "parse_marked"]

DNS_INTERVAL = 5.0
"""Seconds between resolutions of a DNS source. The system resolver does not expose record
TTLs, and cluster DNS answers with 5-30 s TTLs: five seconds follows a rollout closely at one
query per name per interval."""

log = logging.getLogger("sidecarkit.agent.proxy")


MARKS = ("mtls", "plaintext")
"""What an endpoints file line may say after the address: the endpoint has a sidecar (speak
mTLS to it) or has none (plaintext, even in an upstream with ``mtls: true``)."""


def parse_marked(text: str, *, source: str) -> list[tuple[tuple[str, int], str | None]]:
    """The endpoints in an endpoints file's text with their marks; ValueError names the line
    and the fix."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        address, _, mark = raw.split("#", 1)[0].strip().partition(" ")
        if not address:
            continue
        where = f"{source}:{number}"
        mark = mark.strip()
        if mark and mark not in MARKS:
            raise ValueError(
                f"{where}: {mark!r} after the address is unknown; write HOST:PORT, "
                "HOST:PORT mtls (it has a sidecar) or HOST:PORT plaintext"
            )
        endpoint = proxy_settings.parse_address(address, where, default_host="127.0.0.1")
        out.append((endpoint, mark or None))
    return out


def parse_endpoints(text: str, *, source: str) -> list[tuple[str, int]]:
    """The endpoints in an endpoints file's text; ValueError names the line and the fix."""
    return [address for address, _ in parse_marked(text, source=source)]


class DnsSource:
    """The A/AAAA records of one name, as of the last good answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.path = f"dns:{host}:{port}"
        """Names the source in logs and metrics."""
        self.errors = 0
        self.reported = 0
        """``errors`` already added to the metric."""
        self.due = 0.0
        self.last: list[tuple[str, int]] | None = None
        self._last_error = ""

    async def resolve(self) -> list[tuple[str, int]] | None:
        """A new endpoint set when the answer changed, else None; a failed lookup keeps the
        last good set (a DNS outage must not empty a service)."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.errors += 1
            message = f"cannot resolve {self.host}: {exc}; keeping the last endpoints"
            if message != self._last_error:
                log.warning("%s", message)
                self._last_error = message
            return None
        self._last_error = ""
        found = sorted({(str(info[4][0]), int(info[4][1])) for info in infos})
        if found == self.last:
            return None
        self.last = found
        return found


class FileSource:
    """The endpoints listed in one file, as of the last good read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.watch = watching.FileWatch((Path(path),))
        self.endpoints: list[tuple[str, int]] | None = None
        self.marks: dict[tuple[str, int], str] = {}
        """Endpoints the file marks ``mtls`` or ``plaintext``."""
        self.errors = 0
        self.reported = 0
        """``errors`` already added to the metric."""
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
            marked = parse_marked(contents[0].decode("utf-8", "replace"), source=self.path)
        except ValueError as exc:
            self._fail(f"{exc}; keeping the last endpoints")
            return None
        self.watch.accept(contents)
        self._last_error = ""
        self.endpoints = [address for address, _ in marked]
        self.marks = {address: mark for address, mark in marked if mark}
        return self.endpoints

    def _fail(self, message: str) -> None:
        self.errors += 1
        if message != self._last_error:
            log.warning("%s", message)
            self._last_error = message
