"""The ``file`` sink: append records to a file, raw or as JSON lines.

The endpoint is the file's path. Options: ``format`` (``raw``, the default, or ``json``, the
same record shape as ``stdout=json``) and ``fsync`` (default false: a batch counts as delivered
once written; true: once on disk).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from sidecarkit.agents.logs import records
from sidecarkit.agents.logs.sinks import Spec
from sidecarkit.agents.logs.sinks.stdout import json_lines, raw_lines, write_all

__all__ = ["FileSink", "create"]

_OPTIONS = ("format", "fsync")


class FileSink:
    def __init__(self, path: str, *, json: bool, fsync: bool, name: str) -> None:
        self.path = path
        self.json = json
        self.fsync = fsync
        self.name = name
        self.raw = not json
        self.local = True
        self.fd: int | None = None

    def _write(self, data: bytes) -> None:
        if self.fd is None:
            self.fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        write_all(self.fd, data)
        if self.fsync:
            os.fsync(self.fd)

    async def send(self, batch: records.Batch) -> records.Outcome:
        data = json_lines(batch) if self.json else raw_lines(batch)
        await asyncio.to_thread(self._write, data)
        return records.Outcome()

    async def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _options(options: Mapping[str, Any]) -> tuple[bool, bool]:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(
            f"file sink: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(_OPTIONS)}"
        )
    fmt = options.get("format", "raw")
    if fmt not in ("raw", "json"):
        raise ValueError(f"file sink: format {fmt!r} is not raw or json")
    fsync = options.get("fsync", False)
    if not isinstance(fsync, bool):
        raise ValueError(f"file sink: fsync must be true or false, not {fsync!r}")
    return fmt == "json", fsync


def create(spec: Spec) -> FileSink:
    if not spec.endpoint:
        raise ValueError("file sink: give the path to write to, e.g. file=/var/log/out.log")
    json, fsync = _options(spec.options)
    return FileSink(spec.endpoint, json=json, fsync=fsync, name=spec.name or "file")
