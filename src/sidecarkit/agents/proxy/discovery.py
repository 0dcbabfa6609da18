"""Where a service's endpoints come from: a static list, a file re-read when it changes, or
a DNS name's A/AAAA or SRV records, asked again when their TTL runs out.

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

__all__ = [
    "DNS_INTERVAL",
    "MARKS",
    "MAX_TTL",
    "MIN_TTL",
    "DnsSource",
    "FileSource",
    "parse_endpoints",
    "parse_marked",
]

DNS_INTERVAL = 5.0
"""Seconds before a failed DNS question is asked again."""
MIN_TTL = 1.0
"""A TTL of 0 (or 1) is asked again after a second, not in a loop."""
MAX_TTL = 60.0
"""A long TTL is cut to a minute: a Service's pods change faster than external names do, and
one question a minute per name costs nothing."""
ZERO_WEIGHT = 0.01
"""The weight an SRV record of weight 0 gets beside heavier ones: RFC 2782 gives it "a very
small chance of being selected", not none (weights are 1-65535 otherwise)."""

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
    """The endpoints behind one DNS name, as of the last good answer.

    ``NAME:PORT`` takes the A and AAAA records (a headless Service: one per ready pod) with the
    given port; a name starting with ``_`` and no port (``_http._tcp.payments.shop``) takes its
    SRV records, each target's addresses with the record's port, from the lowest priority that
    has any, weighted as RFC 2782 says: a target's weight is shared by its addresses, and a
    weight of 0 gets a very small share (``ZERO_WEIGHT``) unless all are 0. The name is
    asked again when the answer's TTL runs out, between ``MIN_TTL`` and ``MAX_TTL`` seconds,
    through the servers of ``/etc/resolv.conf`` with its search list, or one given server.
    A NAME:PORT that DNS does not know is then looked up as ``getaddrinfo`` would (the hosts
    file, a pod's ``hostAliases``), and asked again every ``DNS_INTERVAL`` seconds.
    """

    def __init__(self, host: str, port: int, *, server: tuple[str, int] | None = None) -> None:
        import dns.asyncresolver  # noqa: PLC0415 - only a proxy with a DNS upstream pays for it

        self.host = host
        self.port = port
        self.path = f"dns:{host}:{port}" if port else f"dns:{host}"
        """Names the source in logs and metrics."""
        self.errors = 0
        self.reported = 0
        """``errors`` already added to the metric."""
        self.due = 0.0
        self.interval = DNS_INTERVAL
        """Seconds until the next question: the last answer's TTL, or ``DNS_INTERVAL`` after
        a failure."""
        self.last: list[tuple[str, int]] | None = None
        self.weights: dict[tuple[str, int], float] = {}
        """Per endpoint, from SRV records; empty for A/AAAA records (all weigh the same)."""
        self._weights_seen: dict[tuple[str, int], float] = {}
        self.stale = False
        """True while the last question failed (the endpoints in use may be out of date)."""
        self._last_error = ""
        self._system = server is None
        if server is None:
            self._resolver = dns.asyncresolver.Resolver()
        else:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [server[0]]
            self._resolver.port = server[1]
        self._resolver.lifetime = 2.0

    async def resolve(self) -> list[tuple[str, int]] | None:
        """A new endpoint set when the answer changed, else None; a failed lookup keeps the
        last good set (a DNS outage must not empty a service)."""
        import dns.exception  # noqa: PLC0415

        ttl: float
        try:
            try:
                found, ttl = await (self._srv() if not self.port else self._addresses(self.host))
            except (dns.exception.DNSException, OSError):
                if not self.port or not self._system:
                    raise
                found, ttl = await self._hosts()
        except (dns.exception.DNSException, OSError) as exc:
            self.errors += 1
            self.stale = True
            self.interval = DNS_INTERVAL
            reason = str(exc) or type(exc).__name__
            message = f"cannot resolve {self.path}: {reason}; keeping the last endpoints"
            if message != self._last_error:
                log.warning("%s", message)
                self._last_error = message
            return None
        self._last_error = ""
        self.stale = False
        if self.port:  # A/AAAA records: no weights
            self.weights = {}
        self.interval = min(max(float(ttl), MIN_TTL), MAX_TTL)
        found = sorted(set(found))
        if found == self.last and self.weights == self._weights_seen:
            return None
        self.last = found
        self._weights_seen = dict(self.weights)
        return found

    async def _addresses(self, name: str, port: int = 0) -> tuple[list[tuple[str, int]], int]:
        """A and AAAA records of ``name`` and the smaller TTL; NoAnswer for one family is
        fine, for both an error."""
        import dns.resolver  # noqa: PLC0415

        out: list[tuple[str, int]] = []
        ttls = []
        missing: Exception | None = None
        for kind in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(name, kind, search=True)
            except dns.resolver.NoAnswer as exc:
                missing = exc
                continue
            ttls.append(answer.rrset.ttl if answer.rrset is not None else 0)
            out += [(record.address, port or self.port) for record in answer]
        if not out:
            raise missing or OSError(f"no A or AAAA records for {name}")
        return out, min(ttls)

    async def _hosts(self) -> tuple[list[tuple[str, int]], float]:
        """The system resolver's answer (``/etc/hosts``, a pod's ``hostAliases``, mDNS...),
        for a name DNS does not know; it gives no TTL."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        return [(str(info[4][0]), int(info[4][1])) for info in infos], DNS_INTERVAL

    async def _srv(self) -> tuple[list[tuple[str, int]], int]:
        answer = await self._resolver.resolve(self.host, "SRV", search=True)
        ttl = answer.rrset.ttl if answer.rrset is not None else 0
        records = sorted(answer, key=lambda r: r.priority)
        out: list[tuple[str, int]] = []
        weights: dict[tuple[str, int], float] = {}
        for priority in dict.fromkeys(r.priority for r in records):
            group = [r for r in records if r.priority == priority]
            every_zero = all(r.weight == 0 for r in group)
            for record in group:
                target = record.target.to_text()
                if target == ".":  # "the service is decidedly not available" (RFC 2782)
                    continue
                addresses, target_ttl = await self._addresses(target, record.port)
                out += addresses
                ttl = min(ttl, target_ttl)
                weight = 1.0 if every_zero else float(record.weight) or ZERO_WEIGHT
                for address in addresses:
                    weights[address] = weights.get(address, 0.0) + weight / len(addresses)
            if out:
                break
        self.weights = weights
        return out, ttl


class FileSource:
    """The endpoints listed in one file, as of the last good read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.watch = watching.FileWatch((Path(path),))
        self.endpoints: list[tuple[str, int]] | None = None
        self.stale = False
        """True while the file cannot be read or is bad (the last good endpoints are used)."""
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
        self.stale = False
        self.endpoints = [address for address, _ in marked]
        self.marks = {address: mark for address, mark in marked if mark}
        return self.endpoints

    def _fail(self, message: str) -> None:
        self.errors += 1
        self.stale = True
        if message != self._last_error:
            log.warning("%s", message)
            self._last_error = message
