"""The shipper: offsets move only for confirmed bytes, reading pauses when sinks stall."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sidecarkit.agents.logs import offsets, parsing, records, shipping, tailing


class _Lines:
    """The simplest parser: one event per line, nothing held."""

    held_bytes = 0
    held_lines = 0

    def feed(self, lines: list[str], first: int, now: float) -> list[records.Event]:
        return [(n, s, None, None) for n, s in enumerate(lines, first)]

    def flush(self, now: float, *, force: bool = False) -> list[records.Event]:
        return []


class _Sink:
    """Records what it was sent; fails the first ``failures`` sends; can be held shut."""

    def __init__(self, name: str = "test", failures: int = 0) -> None:
        self.name = name
        self.failures = failures
        self.got: list[str] = []
        self.sends = 0
        self.open = asyncio.Event()
        self.open.set()

    async def send(self, batch: records.Batch) -> records.Outcome:
        self.sends += 1
        await self.open.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("receiver down")
        self.got.extend(e[1] for g in batch.groups for e in g.events)
        return records.Outcome()

    async def close(self) -> None:
        return None


def _shipper(
    tmp: Path, sinks: list[records.Sink], **tuning: float | int
) -> tuple[shipping.Shipper, offsets.OffsetStore]:
    store = offsets.OffsetStore(tmp / "state" / "offsets.json")
    source = shipping.Source("app", tailing.Tailer(str(tmp / "*.log"), read_size=4096), _Lines)
    params: dict[str, float | int] = {"batch_wait": 0.01, "poll": 0.01, "retry_initial": 0.01}
    params.update(tuning)
    shipper = shipping.Shipper(
        [source],
        sinks,
        labels={"pod": "p"},
        store=store,
        tuning=shipping.Tuning(checkpoint_interval=0.0, **params),  # type: ignore[arg-type]
    )
    return shipper, store


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _offset(store: offsets.OffsetStore) -> int:
    saved = store.load().get("app", [])
    return int(saved[0]["offset"]) if saved else 0


def test_offsets_move_only_after_every_sink_confirmed(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))

    async def main() -> None:
        fast, slow = _Sink("fast"), _Sink("slow")
        slow.open.clear()
        shipper, store = _shipper(tmp_path, [fast, slow])
        shipper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await _until(lambda: len(fast.got) == 100)
        await asyncio.sleep(0.1)
        assert _offset(store) == 0, "one sink has not confirmed: nothing is committed"
        slow.open.set()
        await _until(lambda: _offset(store) == log.stat().st_size)
        assert slow.got == fast.got == [f"line {i}" for i in range(100)]
        stop.set()
        await task
        await shipper.close()

    asyncio.run(main())


def test_failures_are_retried_until_delivered_and_counted(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("a\nb\n")

    async def main() -> None:
        sink = _Sink(failures=3)
        shipper, store = _shipper(tmp_path, [sink])
        shipper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await _until(lambda: sink.got == ["a", "b"])
        await _until(lambda: _offset(store) == 4)
        text = shipper.metrics.render().decode()
        assert 'sidecarkit_logs_retries_total{sink="test"} 3' in text
        assert (
            'sidecarkit_logs_sink_errors_total{sink="test",error="ConnectionRefusedError"} 3'
            in (text)
        )
        assert 'sidecarkit_logs_events_shipped_total{sink="test"} 2' in text
        stop.set()
        await task
        await shipper.close()

    asyncio.run(main())


def test_a_stalled_sink_stops_reading_so_memory_stays_bounded(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"{i:08d} {'x' * 90}\n" for i in range(20_000)))  # 2 MB

    async def main() -> None:
        sink = _Sink()
        sink.open.clear()
        shipper, store = _shipper(tmp_path, [sink], max_inflight=64 << 10, batch_bytes=8 << 10)
        shipper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await asyncio.sleep(0.5)
        read = shipper.sources[0].tailer.bytes_read
        assert read <= (64 << 10) + 4096, f"read {read} bytes while nothing was confirmed"
        assert shipper.inflight <= (64 << 10) + 4096, "at most one read past the limit"
        sink.open.set()
        await _until(lambda: len(sink.got) == 20_000)
        assert sink.got == [f"{i:08d} {'x' * 90}" for i in range(20_000)]
        await _until(lambda: _offset(store) == log.stat().st_size)
        stop.set()
        await task
        await shipper.close()

    asyncio.run(main())


def test_refused_events_are_counted_not_retried(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("good\nbad\n")

    class Picky(_Sink):
        async def send(self, batch: records.Batch) -> records.Outcome:
            self.sends += 1
            return records.Outcome(rejected=1, reasons={"mapping": 1})

    async def main() -> None:
        sink = Picky()
        shipper, store = _shipper(tmp_path, [sink])
        shipper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await _until(lambda: _offset(store) == 9)
        text = shipper.metrics.render().decode()
        assert 'sidecarkit_logs_events_rejected_total{sink="test",reason="mapping"} 1' in text
        assert sink.sends == 1
        stop.set()
        await task
        await shipper.close()

    asyncio.run(main())


def test_max_retries_gives_up_and_counts_the_dropped_events(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("a\nb\nc\n")

    async def main() -> None:
        sink = _Sink(failures=100)
        shipper, store = _shipper(tmp_path, [sink], max_retries=2)
        shipper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await _until(lambda: _offset(store) == 6)
        assert sink.sends == 3
        assert 'sidecarkit_logs_events_dropped_total{sink="test"} 3' in (
            shipper.metrics.render().decode()
        )
        stop.set()
        await task
        await shipper.close()

    asyncio.run(main())


def test_drain_ships_the_partial_last_line_and_saves(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("a\nno newline")

    async def main() -> None:
        sink = _Sink()
        shipper, store = _shipper(tmp_path, [sink])
        shipper.start()
        assert await shipper.drain(time.monotonic() + 5)
        assert sink.got == ["a", "no newline"]
        assert _offset(store) == 12
        await shipper.close()

    asyncio.run(main())


def test_held_multiline_lines_are_committed_with_their_record(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(
        "first\nException in thread main java.lang.IllegalStateException: boom\n"
        "\tat com.example.App.run(App.java:10)\n"
    )

    def shipper_with(sink: _Sink) -> tuple[shipping.Shipper, offsets.OffsetStore]:
        shipper, store = _shipper(tmp_path, [sink])
        shipper.sources[0].make_parser = parsing.compile(
            parsing.ParserSpec(multiline="java", flush_timeout=60.0)
        )
        return shipper, store

    async def main() -> None:
        sink = _Sink()
        shipper, store = shipper_with(sink)
        shipper.restore()
        shipper.start()
        shipper.read()
        shipper.seal()
        await _until(lambda: _offset(store) > 0)
        assert sink.got == ["first"]
        saved = store.load()["app"][0]
        assert (saved["offset"], saved["line"]) == (6, 1), "the held trace is not committed"
        await shipper.close()  # killed before the trace was flushed

        again = _Sink()
        seen: list[records.Event] = []

        class Keeping(_Sink):
            async def send(self, batch: records.Batch) -> records.Outcome:
                seen.extend(e for g in batch.groups for e in g.events)
                return await again.send(batch)

        shipper, store = shipper_with(Keeping())
        shipper.restore()
        shipper.start()
        assert await shipper.drain(time.monotonic() + 5)
        assert [e[0] for e in seen] == [1], "the trace keeps its line number after a restart"
        assert seen[0][1].startswith("Exception in thread main")
        await shipper.close()

    asyncio.run(main())
