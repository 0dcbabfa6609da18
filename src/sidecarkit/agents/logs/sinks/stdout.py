"""The ``stdout`` sink: the streaming sidecar of the Kubernetes logging guide.

Lines go to the agent's own stdout, where the container runtime collects them, so ``kubectl
logs POD -c sidecarkit-logs`` shows them. Endpoint ``raw`` (the default) writes the app's lines
exactly as they were, byte for byte; ``json`` writes one JSON object per record with the pod's
identity and the parsed fields (see ``json_lines``). A batch counts as delivered once
``write(2)`` took all of it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
from datetime import UTC, datetime

import orjson

from sidecarkit.agents.logs import records
from sidecarkit.agents.logs.sinks import Spec

__all__ = ["StdoutSink", "create", "json_lines", "raw_lines", "write_all"]


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def raw_lines(batch: records.Batch) -> bytes:
    """The batch's lines as they were read (messages joined back when parsed)."""
    if len(batch.groups) == 1 and batch.groups[0].raw is not None:
        return batch.groups[0].raw
    parts = []
    for group in batch.groups:
        if group.raw is not None:
            parts.append(group.raw)
        else:
            text = "\n".join(event[1] for event in group.events) + "\n"
            parts.append(text.encode("utf-8", "surrogateescape"))
    return b"".join(parts)


def json_lines(batch: records.Batch) -> bytes:
    """One JSON object per event: ``time`` (RFC 3339, UTC), ``file``, ``message``, the labels,
    then the parsed fields."""
    out = []
    labels = batch.labels
    for group in batch.groups:
        base = group.time_ns
        for index, (_, message, fields, time_ns) in enumerate(group.events):
            record = {
                "time": _iso(time_ns if time_ns is not None else base + index),
                "file": group.source,
                "message": message,
                **labels,
            }
            if fields:
                record.update(fields)
            try:
                out.append(orjson.dumps(record))
            except TypeError:
                record["message"] = records.clean(message)
                out.append(orjson.dumps(record, default=str))
    out.append(b"")
    return b"\n".join(out)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _widen_pipe(fd: int) -> None:
    """Give a pipe on ``fd`` 1 MiB of buffer instead of 64 KiB (Linux), so a batch goes out in
    a few writes instead of sixteen wake-ups of the reader; anything else is left alone."""
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # not allowed (pipe-max-size) or not Linux: the default works, only slower


_F_SETPIPE_SZ = 1031


class StdoutSink:
    def __init__(self, fd: int, mode: str, name: str) -> None:
        _widen_pipe(fd)
        self.fd = fd
        self.mode = mode
        self.name = name
        self.raw = mode == "raw"
        """Raw mode needs no parsed events: sources may hand over bytes untouched."""
        self.local = True
        """Writing costs no request: no reason to wait for a batch to fill."""

    def encode(self, batch: records.Batch) -> bytes:
        return raw_lines(batch) if self.raw else json_lines(batch)

    async def send(self, batch: records.Batch) -> records.Outcome:
        data = self.encode(batch)
        if len(data) < 65536:
            write_all(self.fd, data)
        else:
            await asyncio.to_thread(write_all, self.fd, data)
        return records.Outcome()

    async def close(self) -> None:
        return None


def create(spec: Spec) -> StdoutSink:
    mode = spec.endpoint or "raw"
    if mode not in ("raw", "json"):
        raise ValueError(f"stdout sink: {mode!r} is not a format; use stdout=raw or stdout=json")
    if spec.options:
        raise ValueError(
            f"stdout sink: unknown option(s) {', '.join(sorted(spec.options))}; it takes none"
        )
    return StdoutSink(1, mode, spec.name or "stdout")
