"""Pushing: Prometheus remote_write 1.0 and the Pushgateway.

remote_write 1.0: a ``WriteRequest`` protobuf (encoded here by hand: four small messages),
snappy block compression, and the headers the spec requires. Each series carries its labels
sorted by name with ``__name__`` and no empty values. A series present in the previous push and
gone from this one gets a stale marker (the NaN with bits ``0x7ff0000000000002``), so the
receiver ends it at once instead of after five minutes. Retries: 5xx and 429 are retried with
exponential backoff and jitter, until the next push is due; any other 4xx is final and logged
with the receiver's answer; 2xx is done.

Pushgateway: ``PUT /metrics/job/<job>/<label>/<value>...`` in text format, the grouping key made
of the pod's identity, values base64-encoded when they hold a ``/``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import random
import ssl
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import cramjam

from sidecarkit.agents.metrics import exposition, journaling, rendering, settings
from sidecarkit.agents.metrics.journaling import Entry

__all__ = [
    "STALE_NAN",
    "Auth",
    "PushResult",
    "RemoteWriter",
    "encode_write_request",
    "grouping_path",
    "push_gateway",
    "series_of",
    "writer_for",
]

log = logging.getLogger("sidecarkit.agent.metrics.push")

STALE_NAN: Final = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
_HEADERS: Final = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "User-Agent": "sidecarkit/0.1.0",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}

Labels = tuple[tuple[str, str], ...]


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_write_request(series: Iterable[tuple[Labels, Sequence[tuple[float, int]]]]) -> bytes:
    """``WriteRequest{timeseries: [TimeSeries{labels, samples}]}`` in protobuf wire format."""
    out = bytearray()
    for labels, samples in series:
        ts = bytearray()
        for name, text in labels:
            ts += _field(1, _field(1, name.encode()) + _field(2, text.encode()))
        for value, timestamp_ms in samples:
            sample = b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(timestamp_ms)
            ts += _field(2, sample)
        out += _field(1, bytes(ts))
    return bytes(out)


def series_of(families: Iterable[exposition.Family]) -> dict[Labels, tuple[float, int | None]]:
    """Every sample as a remote_write series: sorted labels with ``__name__``, empty ones out."""
    out: dict[Labels, tuple[float, int | None]] = {}
    for family in families:
        for s in family.samples:
            labels = tuple(sorted([("__name__", s.name), *((k, v) for k, v in s.labels if v)]))
            ts = None if s.timestamp is None else round(s.timestamp * 1000)
            out[labels] = (s.value, ts)
    return out


@dataclass(frozen=True, slots=True)
class Auth:
    """remote_write credentials: basic auth (a user and a password file) or a bearer token
    file. Files are read before every push, so a rotated secret is used at once."""

    username: str | None = None
    password_file: str | None = None
    bearer_token_file: str | None = None

    def header(self) -> str:
        """The ``Authorization`` header; OSError when a file cannot be read."""
        if self.bearer_token_file:
            token = Path(self.bearer_token_file).read_text().strip()
            return f"Bearer {token}"
        password = Path(self.password_file or "").read_text().rstrip("\r\n")
        pair = f"{self.username}:{password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


@dataclass(frozen=True, slots=True)
class PushResult:
    ok: bool
    attempts: int
    status: int | None
    detail: str = ""


_PACK_DOUBLE: Final = struct.Struct("<d").pack
#: Length prefixes (varints) of the sizes a series usually has, made once.
_LENGTHS: Final = [_varint(n) for n in range(1 << 14)]


def _length(n: int) -> bytes:
    return _LENGTHS[n] if n < 1 << 14 else _varint(n)


def _encoded_labels(name: str, labels: Labels) -> bytes:
    """The ``labels`` fields of a TimeSeries: sorted, with ``__name__``, empty values left
    out. Written out by hand: this runs once per new series, 100,000 times for a large
    target's first push."""
    out = []
    lengths = _LENGTHS
    for k, v in sorted([("__name__", name), *((k, v) for k, v in labels if v)]):
        key, value = k.encode(), v.encode()
        if len(key) < 1 << 14 and len(value) < 1 << 14:
            pair = b"\x0a" + lengths[len(key)] + key + b"\x12" + lengths[len(value)] + value
        else:
            pair = _field(1, key) + _field(2, value)
        out.append(b"\x0a" + _length(len(pair)) + pair)
    return b"".join(out)


_Series = tuple[bytes, bytes]
"""A series' cached encodings: its TimeSeries up to its sample's value (for a sample with the
push's timestamp), and its labels alone."""


def _prefix(encoded: bytes, sample_head: bytes) -> bytes:
    """A TimeSeries' bytes up to its sample's value: only the value and timestamp follow."""
    size = len(encoded) + len(sample_head) + 8 + sample_head[1] - 9
    return b"\x0a" + _length(size) + encoded + sample_head


@dataclass(slots=True)
class RemoteWriter:
    """remote_write to one URL.

    Series come from several sources (each target, and the agent's own); each source's last
    push is remembered, so a series gone from its next push gets a stale marker, and so are
    the encoded labels of every series, which a series keeps from push to push: only the
    sample is encoded anew.
    """

    url: str
    timeout: float = 10.0
    max_backoff: float = 5.0
    auth: Auth | None = None
    tls: ssl.SSLContext | None = None
    """The TLS context for an https receiver; None for the system's CAs."""
    _labels: dict[str, dict[tuple[str, Labels], _Series]] = field(default_factory=dict)
    _fixed: dict[str, int] = field(default_factory=dict)
    """By source, the size of a sample with the push's timestamp, which its cached prefixes
    hold."""
    max_backlog_bytes: int = 32 << 20
    """Room for pushes the receiver has not taken yet (snappy-compressed bodies)."""
    journal: journaling.Journal | None = None
    """The WAL on disk; None keeps the backlog in memory only."""
    _backlog: dict[str, collections.deque[Entry]] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _encoding: dict[str, asyncio.Lock] = field(default_factory=dict)
    backlog_bytes: int = 0
    dropped_bodies: int = 0
    dropped_samples: int = 0
    sent_samples: int = 0
    failed_pushes: int = 0

    def __post_init__(self) -> None:
        if self.journal is not None:
            for entry in self.journal.replayed:
                self._backlog.setdefault(entry.source, collections.deque()).append(entry)

    def sources(self) -> list[str]:
        """The sources pushed so far."""
        return list(self._labels)

    def dropped(self) -> tuple[int, int]:
        """Bodies and samples dropped before the receiver took them: past the backlog's room
        (memory or the WAL's size), or when the WAL could not be written."""
        journal = self.journal
        if journal is None:
            return self.dropped_bodies, self.dropped_samples
        return (
            self.dropped_bodies + journal.dropped_bodies,
            self.dropped_samples + journal.dropped_samples,
        )

    def body(
        self, families: Iterable[exposition.Family], *, now_ms: int, source: str = ""
    ) -> bytes:
        """The request body for ``source``'s series (see ``_encode``)."""
        return self._encode(families, now_ms=now_ms, source=source)[0]

    def _encode(
        self, families: Iterable[exposition.Family], *, now_ms: int, source: str = ""
    ) -> tuple[bytes, int]:
        """The request body for ``source``'s series and its number of samples: samples
        without a timestamp get ``now_ms`` (the scrape's time), and series of the source's
        previous push that are gone get a stale marker."""
        old = self._labels.get(source, {})
        new: dict[tuple[str, Labels], _Series] = {}
        parts: list[bytes] = []
        add = parts.extend
        known = old.get
        default_ts = b"\x10" + _varint(now_ms)
        pack = _PACK_DOUBLE
        lengths = _LENGTHS
        sample_head = b"\x12" + lengths[9 + len(default_ts)] + b"\x09"
        fixed = len(sample_head) + 8 + len(default_ts)
        if fixed != self._fixed.get(source):  # the timestamp's length changed: new prefixes
            self._fixed[source] = fixed
            old = {
                key: (_prefix(encoded, sample_head), encoded) for key, (_, encoded) in old.items()
            }
            known = old.get
        for family in families:
            for s in family.samples:
                key = (s.name, s.labels)
                series = known(key)
                if series is None:
                    encoded = _encoded_labels(s.name, s.labels)
                    series = (_prefix(encoded, sample_head), encoded)
                count = len(new)
                new[key] = series
                if len(new) == count:
                    continue  # a series twice in one push: the receiver would refuse it
                if s.timestamp is None:  # the usual case: the scrape's time, one sample size
                    add((series[0], pack(s.value), default_ts))
                    continue
                encoded = series[1]
                sample = b"\x09" + pack(s.value) + b"\x10" + _varint(round(s.timestamp * 1000))
                size = len(encoded) + 2 + len(sample)
                add((b"\x0a", _length(size), encoded, b"\x12", lengths[len(sample)], sample))
        stale = b"\x09" + pack(STALE_NAN) + default_ts
        gone = old.keys() - new.keys()
        for key in gone:
            encoded = old[key][1]
            size = len(encoded) + 2 + len(stale)
            add((b"\x0a", _length(size), encoded, b"\x12", lengths[len(stale)], stale))
        out = b"".join(parts)
        self._labels[source] = new
        return bytes(cramjam.snappy.compress_raw(out)), len(new) + len(gone)

    async def push(
        self,
        session: aiohttp.ClientSession,
        families: Iterable[exposition.Family],
        *,
        deadline: float,
        source: str = "",
        now_ms: int | None = None,
    ) -> PushResult:
        """Send ``source``'s series, after any of its earlier pushes the receiver has not
        taken yet, oldest first (samples of one series must arrive in order). The body is
        encoded (and written to the WAL, if there is one) in a worker thread, off the event
        loop that reads scrapes.

        Each body is retried on 5xx, 429 and network errors until ``deadline`` (monotonic),
        each attempt's timeout ending there too; then it waits in the backlog for the next
        push, so an outage shorter than the backlog's room (``max_backlog_bytes`` in memory,
        the WAL's size on disk) loses nothing. A body the receiver refuses for good (another
        4xx) is dropped, as Prometheus drops it. Past the room, the oldest bodies are dropped
        and counted."""
        stamp = int(time.time() * 1000) if now_ms is None else now_ms
        async with self._encoding.setdefault(source, asyncio.Lock()):  # bodies in push order
            entry = await asyncio.to_thread(self._keep, list(families), stamp, source)
            if entry is None:
                return PushResult(False, 0, None, "the WAL cannot be written")
            self.sent_samples += entry.samples
            self._backlog.setdefault(source, collections.deque()).append(entry)
        if self.journal is None:
            self.backlog_bytes += entry.length
            self._bound_memory(source)
        elif self._locks.setdefault(source, asyncio.Lock()).locked():
            # The bodies before it are being sent: this one joins them, read back from disk
            # when its turn comes, so a slow receiver costs disk, not memory.
            entry.body = None
            return PushResult(True, 0, None, "queued in the WAL behind earlier bodies")
        return await self.drain(session, source, deadline=deadline)

    def _keep(self, families: list[exposition.Family], now_ms: int, source: str) -> Entry | None:
        """Encode the body and write it to the WAL (a worker thread's part of ``push``)."""
        body, samples = self._encode(families, now_ms=now_ms, source=source)
        if self.journal is None:
            return journaling.Entry(0, source, samples, -1, 0, len(body), body)
        try:
            return self.journal.append(source, body, samples)
        except OSError as exc:
            self.dropped_bodies += 1
            self.dropped_samples += samples
            log.error(
                "remote_write WAL in %s cannot be written (%s): this push is dropped; give the "
                "agent a writable remote_write_wal_dir with room",
                self.journal.directory,
                exc,
            )
            return None

    def _bound_memory(self, source: str) -> None:
        backlog = self._backlog[source]
        while self.backlog_bytes > self.max_backlog_bytes and len(backlog) > 1:
            entry = backlog.popleft()
            self.backlog_bytes -= entry.length
            self.dropped_bodies += 1
            self.dropped_samples += entry.samples
            log.warning(
                "remote_write to %s: the backlog passed %d bytes; its oldest push is dropped "
                '(counted in sidecarkit_metrics_pushes_total{result="dropped"}); give '
                "remote_write_wal_dir to keep more on disk",
                self.url,
                self.max_backlog_bytes,
            )

    def pending_sources(self) -> list[str]:
        """Sources with bodies the receiver has not taken yet (after a restart, the WAL's)."""
        return [source for source, backlog in self._backlog.items() if backlog]

    async def drain(
        self, session: aiohttp.ClientSession, source: str, *, deadline: float
    ) -> PushResult:
        """Send ``source``'s waiting bodies in order until one fails or ``deadline``; one
        drain per source at a time, so no body is sent twice at once. With a WAL the drain
        goes on past ``deadline`` while the receiver takes bodies, and each request has the
        whole ``timeout``: pushes made meanwhile queue on disk behind it."""
        backlog = self._backlog.get(source)
        lock = self._locks.setdefault(source, asyncio.Lock())
        result = PushResult(True, 0, None)
        async with lock:
            while backlog:
                entry = backlog[0]
                if self.journal is None and result.attempts and time.monotonic() >= deadline:
                    break  # the rest goes with the next push, in order
                if entry.dropped:
                    backlog.popleft()
                    continue
                try:
                    body = entry.body
                    if body is None and self.journal is not None:
                        body = await asyncio.to_thread(self.journal.read, entry)
                except OSError as exc:
                    log.warning("remote_write WAL: record %d cannot be read: %s", entry.seq, exc)
                    backlog.popleft()
                    continue
                assert body is not None
                if self.journal is not None:
                    # Pushes queue behind this one instead of being skipped, so a request
                    # gets its whole timeout: one cut at the push's deadline may have reached
                    # the receiver, and its resending would be a duplicate.
                    deadline = max(deadline, time.monotonic() + self.timeout)
                result = await self._send(session, body, deadline, entry)
                if entry.dropped and not result.ok:
                    backlog.popleft()  # counted as dropped when its segment went
                    continue
                if not result.ok and (
                    result.status is None or result.status in (429,) or result.status >= 500
                ):
                    if self.journal is not None:
                        entry.body = None  # on disk; read back when it is sent again
                    return result  # retryable: it waits for the next push
                backlog.popleft()
                if self.journal is None:
                    self.backlog_bytes -= entry.length
                else:
                    await asyncio.to_thread(self.journal.acknowledge, entry)
        return result

    async def _send(
        self, session: aiohttp.ClientSession, body: bytes, deadline: float, entry: Entry
    ) -> PushResult:
        """One request body, retried until ``deadline``, or until the WAL's size bound
        drops it (then it is counted as dropped, and so must not arrive)."""
        attempt, delay = 0, 0.05
        while True:
            attempt += 1
            status: int | None = None
            detail = ""
            left = deadline - time.monotonic()
            headers = _HEADERS
            if self.auth is not None:
                try:
                    headers = {**_HEADERS, "Authorization": self.auth.header()}
                except OSError as exc:
                    self.failed_pushes += 1
                    detail = f"cannot read its credentials: {exc}; check the mounted secret"
                    log.warning("remote_write to %s not sent: %s", self.url, detail)
                    return PushResult(False, attempt, None, detail)
            try:
                if left <= 0:
                    raise TimeoutError
                timeout = aiohttp.ClientTimeout(total=min(self.timeout, left))
                async with session.post(
                    self.url,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    ssl=self.tls if self.tls is not None else True,
                ) as response:
                    status = response.status
                    if 200 <= status < 300:
                        return PushResult(True, attempt, status)
                    detail = (await response.text())[:300]
                    if status != 429 and status < 500:
                        self.failed_pushes += 1
                        log.error(
                            "remote_write to %s refused with HTTP %s (not retried): %s",
                            self.url,
                            status,
                            detail.strip(),
                        )
                        return PushResult(False, attempt, status, detail)
            except TimeoutError:
                waited = max(0.0, min(self.timeout, left))
                detail = f"no answer within {waited:.3g} s (the push's deadline)"
            except (aiohttp.ClientError, OSError) as exc:
                detail = str(exc) or type(exc).__name__
            log.debug(
                "remote_write attempt %d to %s: %s %s", attempt, self.url, status or "", detail
            )
            if time.monotonic() + delay >= deadline:
                self.failed_pushes += 1
                log.warning(
                    "remote_write to %s failed after %d attempt(s): %s %s",
                    self.url,
                    attempt,
                    status or "",
                    detail,
                )
                return PushResult(False, attempt, status, detail)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_backoff)
            if entry.dropped:
                return PushResult(False, attempt, status, "dropped at the WAL's size bound")


def _segment(value: str) -> str:
    if "/" in value or not value:
        encoded = base64.urlsafe_b64encode(value.encode()).decode()
        return f"{encoded or '='}@base64"
    return value


def grouping_path(job: str, grouping: Sequence[tuple[str, str]]) -> str:
    """``/metrics/job/<job>/<label>/<value>...`` with values encoded as the Pushgateway wants."""
    parts = [
        f"job@base64/{base64.urlsafe_b64encode(job.encode()).decode()}"
        if "/" in job
        else f"job/{job}"
    ]
    parts += [f"{k}/{_segment(v)}" for k, v in grouping]
    return "/metrics/" + "/".join(parts)


async def push_gateway(
    session: aiohttp.ClientSession,
    base_url: str,
    job: str,
    grouping: Sequence[tuple[str, str]],
    families: Iterable[exposition.Family],
    *,
    timeout: float = 10.0,
) -> PushResult:
    """Replace this pod's group on the Pushgateway with ``families`` (HTTP PUT)."""
    # The Pushgateway refuses samples that carry a grouping label with another value, and any
    # timestamps; it adds push_time_seconds itself.
    keys = {k for k, _ in grouping}
    clean = [
        exposition.Family(
            f.name,
            f.type,
            f.help,
            f.unit,
            [
                exposition.Sample(
                    s.name, tuple((k, v) for k, v in s.labels if k not in keys), s.value
                )
                for s in f.samples
            ],
        )
        for f in families
    ]
    url = base_url.rstrip("/") + grouping_path(job, grouping)
    try:
        async with session.put(
            url,
            data=rendering.render_text(clean),
            headers={"Content-Type": "text/plain; version=0.0.4"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            text = (await response.text())[:300]
            if 200 <= response.status < 300:
                return PushResult(True, 1, response.status)
            log.error("push to %s refused with HTTP %s: %s", url, response.status, text.strip())
            return PushResult(False, 1, response.status, text)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("push to %s failed: %s", url, exc or type(exc).__name__)
        return PushResult(False, 1, None, str(exc))


def writer_for(config: settings.Settings) -> RemoteWriter | None:
    """The remote_write client the settings ask for, with its credentials and TLS;
    ValueError names a CA file that cannot be loaded."""
    if not config.remote_write_url:
        return None
    auth = None
    if config.remote_write_bearer_token_file or config.remote_write_username:
        auth = Auth(
            config.remote_write_username,
            config.remote_write_password_file,
            config.remote_write_bearer_token_file,
        )
    tls = None
    if config.remote_write_ca_file:
        try:
            tls = ssl.create_default_context(cafile=config.remote_write_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"remote_write_ca_file {config.remote_write_ca_file}: cannot load CA "
                f"certificates ({exc}); give a readable PEM file"
            ) from exc
    journal = None
    if config.remote_write_wal_dir:
        try:
            journal = journaling.Journal(
                config.remote_write_wal_dir, max_bytes=config.remote_write_wal_size
            )
        except OSError as exc:
            raise ValueError(
                f"remote_write_wal_dir {config.remote_write_wal_dir}: cannot be written ({exc}); "
                "give a writable directory (an emptyDir volume in a pod)"
            ) from exc
    return RemoteWriter(config.remote_write_url, auth=auth, tls=tls, journal=journal)
