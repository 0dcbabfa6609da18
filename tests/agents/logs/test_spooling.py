"""The sink spool's files: what goes in comes back whole, in order, across a restart."""

from __future__ import annotations

from pathlib import Path

from sidecarkit.agents.logs import records, spooling


def _batch(seq: int) -> records.Batch:
    events: list[records.Event] = [
        (7, "caf\udcc3 bytes that are not UTF-8", {"level": "error", "n": [1, 2.5, None]}, 5),
        (8, "plain", None, None),
    ]
    groups = [
        records.Group("/var/log/a.log", "1:2:abc", events, 1000),
        records.Group("/var/log/b.log", "3:4:def", [], 2000, b"one\ntwo\n", first=40),
    ]
    return records.Batch(groups, {"pod": "p"}, 4, 123, seq)


def test_spooled_batches_come_back_whole_and_oldest_first_after_a_restart(tmp_path: Path) -> None:
    spool = spooling.Spool(tmp_path / "s", 1 << 20)
    first, second = spool.write(_batch(1)), spool.write(_batch(2))
    assert first is not None
    assert second is not None
    again = spooling.Spool(tmp_path / "s", 1 << 20)  # a restart
    assert again.bytes == spool.bytes > 0
    stored = again.oldest()
    assert stored is not None
    path, batch, _ = stored
    assert path == first
    assert (batch.seq, batch.events, batch.size, batch.labels) == (1, 4, 123, {"pod": "p"})
    assert batch.groups[0].events == _batch(1).groups[0].events
    assert batch.groups[1].raw_lines == [b"one", b"two"]
    assert batch.groups[1].materialized()[0][:2] == (40, "one")
    again.remove(path)
    assert not path.exists()
    stored = again.oldest()
    assert stored is not None
    assert stored[1].seq == 2
    assert spooling.Spool(tmp_path / "s", 1 << 20).write(_batch(3)) == tmp_path / "s" / (
        "0000000000000002.batch"
    ), "numbering goes on after the newest file"


def test_a_full_spool_takes_no_more_and_a_damaged_file_is_skipped(tmp_path: Path) -> None:
    spool = spooling.Spool(tmp_path / "s", 10)
    damaged = spool.write(_batch(1))
    assert damaged is not None
    assert spool.write(_batch(2)) is None, "full: the batch stays in memory"
    damaged.write_bytes(damaged.read_bytes()[:-3])
    assert spool.oldest() is None
    assert spool.bytes == 0
    assert not damaged.exists()
