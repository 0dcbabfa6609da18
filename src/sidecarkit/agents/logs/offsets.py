"""The offsets file: where every source was delivered up to, kept safe across crashes.

The shipper saves the committed positions of all its sources here after confirmed batches and
loads them at start, so that a restart replays at most what was not yet delivered.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

__all__ = ["OffsetStore"]

log = logging.getLogger("sidecarkit.agent.logs")


class OffsetStore:
    """Committed positions of every source, saved so that a crash at any moment leaves a
    complete copy: the file holds two slots, written in turn.

    Each slot is one line, ``<crc32> <sequence> <json>``, padded with spaces to the slot size;
    the file is two slots long. Saving overwrites the older slot in place (one ``pwrite``, no
    new file, no rename), so it costs microseconds and can follow every confirmed batch. On
    load, the slot with the higher sequence whose checksum holds wins; a slot torn by a crash
    mid-write fails its checksum and the other one is used. When the JSON outgrows the slots,
    the file is rebuilt with bigger ones (write a new file, then rename it over the old).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._slot = 0
        self._seq = 0
        self.saved_at = 0.0
        """Wall-clock time the loaded offsets were saved (0 when unknown)."""

    def load(self) -> dict[str, list[dict[str, Any]]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("offsets in %s unreadable (%s); reading from the start", self.path, exc)
            return {}
        best: tuple[int, Any] | None = None
        candidates: list[tuple[int, bytes | None]]
        if raw.startswith(b"{"):
            candidates = [(0, raw)]  # a plain JSON file, as older versions wrote
        else:
            half = len(raw) // 2
            candidates = [_slot(raw[:half]), _slot(raw[half:])] if half else []
        for seq, body in candidates:
            if body is None:
                continue
            try:
                data = json.loads(body)
            except ValueError:
                continue
            if best is None or seq > best[0]:
                best = (seq, data)
        if best is None:
            if raw:
                log.warning("offsets in %s unreadable; reading from the start", self.path)
            return {}
        self._seq = best[0]
        if isinstance(best[1], dict) and isinstance(best[1].get("time"), int | float):
            self.saved_at = float(best[1]["time"])
        sources = best[1].get("sources") if isinstance(best[1], dict) else None
        if not isinstance(sources, dict):
            return {}
        return {str(k): v for k, v in sources.items() if isinstance(v, list)}

    def save(self, sources: dict[str, list[dict[str, Any]]], *, sync: bool = True) -> None:
        self.write(self.encode(sources), sync=sync)

    @staticmethod
    def encode(sources: dict[str, list[dict[str, Any]]]) -> str:
        return json.dumps(
            {"version": 1, "time": round(time.time(), 3), "sources": sources},
            separators=(",", ":"),
        )

    def write(self, body: str, *, sync: bool = True) -> None:
        """Save ``body``. Without ``sync`` it survives the agent being killed (the kernel has
        it) but not the node crashing; the shipper syncs every ``checkpoint_interval``."""
        self._seq += 1
        data = body.encode()
        record = b"%08x %016x %s\n" % (zlib.crc32(data), self._seq, data)
        if self._fd is None or len(record) > self._slot:
            self._rebuild(record)
        else:
            index = self._seq % 2
            os.pwrite(self._fd, record.ljust(self._slot, b" "), index * self._slot)
        if sync and self._fd is not None:
            os.fdatasync(self._fd)

    def _rebuild(self, record: bytes) -> None:
        # Room to grow by a quarter before the next rebuild, in whole 4 KiB pages.
        slot = max(4096, (len(record) * 5 // 4 + 4095) // 4096 * 4096)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".tmp")
        padded = record.ljust(slot, b" ")
        with open(temp, "wb") as out:
            out.write(padded + padded)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        self._slot = slot

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _slot(raw: bytes) -> tuple[int, bytes | None]:
    """(sequence, JSON) of one slot, or (-1, None) when it is torn or empty."""
    line = raw.split(b"\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) != 3:
        return -1, None
    try:
        crc, seq = int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return -1, None
    if zlib.crc32(parts[2]) != crc:
        return -1, None
    return seq, parts[2]
