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
import logging
import random
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import cramjam

from sidecarkit.agents.metrics import exposition, rendering

__all__ = [
    "STALE_NAN",
    "PushResult",
    "RemoteWriter",
    "encode_write_request",
    "grouping_path",
    "push_gateway",
    "series_of",
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
class PushResult:
    ok: bool
    attempts: int
    status: int | None
    detail: str = ""


@dataclass(slots=True)
class RemoteWriter:
    """remote_write to one URL, remembering the last push's series for stale markers."""

    url: str
    timeout: float = 10.0
    max_backoff: float = 5.0
    _previous: set[Labels] = field(default_factory=set)
    sent_samples: int = 0
    failed_pushes: int = 0

    def body(self, families: Iterable[exposition.Family], *, now_ms: int) -> bytes:
        current = series_of(families)
        series: list[tuple[Labels, Sequence[tuple[float, int]]]] = [
            (labels, [(value, now_ms if ts is None else ts)])
            for labels, (value, ts) in current.items()
        ]
        series += [(labels, [(STALE_NAN, now_ms)]) for labels in self._previous - set(current)]
        self._previous = set(current)
        self.sent_samples += len(series)
        return bytes(cramjam.snappy.compress_raw(encode_write_request(series)))

    async def push(
        self,
        session: aiohttp.ClientSession,
        families: Iterable[exposition.Family],
        *,
        deadline: float,
    ) -> PushResult:
        body = self.body(families, now_ms=int(time.time() * 1000))
        attempt, delay = 0, 0.05
        while True:
            attempt += 1
            status: int | None = None
            detail = ""
            try:
                timeout = aiohttp.ClientTimeout(total=self.timeout)
                async with session.post(
                    self.url, data=body, headers=_HEADERS, timeout=timeout
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
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                detail = str(exc) or type(exc).__name__
            log.debug(
                "remote_write attempt %d to %s: %s %s", attempt, self.url, status or "", detail
            )
            loop_time = time.monotonic()
            if loop_time + delay >= deadline:
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
