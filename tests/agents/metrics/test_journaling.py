"""remote_write's WAL on real files: replay in order, torn and damaged records, the size bound."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sidecarkit.agents.metrics import journaling


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def test_bodies_not_acknowledged_are_replayed_in_order_after_reopening(tmp_path: Path) -> None:
    journal = journaling.Journal(tmp_path)
    entries = [journal.append(f"t{i % 2}", b"body-%d" % i, i) for i in range(6)]
    journal.acknowledge(entries[0])
    journal.acknowledge(entries[3])
    journal.close()  # or not: a killed process leaves the same bytes behind

    again = journaling.Journal(tmp_path)
    replayed = again.replayed
    assert [(e.source, e.samples) for e in replayed] == [
        ("t1", 1),
        ("t0", 2),
        ("t0", 4),
        ("t1", 5),
    ]
    assert [again.read(e) for e in replayed] == [b"body-1", b"body-2", b"body-4", b"body-5"]
    assert again.corrupt_records == 0
    # What is acknowledged now is not replayed by the next opening either.
    for entry in replayed[:3]:
        again.acknowledge(entry)
    third = journaling.Journal(tmp_path)
    assert [third.read(e) for e in third.replayed] == [b"body-5"]


def test_a_torn_last_record_is_skipped_and_counted_never_returned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = journaling.Journal(tmp_path)
    journal.append("t", b"first", 1)
    journal.append("t", b"second" * 100, 2)
    (segment,) = _segments(tmp_path)
    # A kill -9 in the middle of the last write: the record is cut anywhere in it.
    with segment.open("r+b") as file:
        file.truncate(segment.stat().st_size - 250)

    with caplog.at_level(logging.WARNING):
        again = journaling.Journal(tmp_path)
    assert [again.read(e) for e in again.replayed] == [b"first"]
    assert again.corrupt_records == 1
    assert "cut short" in caplog.text
    assert segment.name in caplog.text
    # New records go to a new segment, never after the torn one, and are read back whole.
    again.append("t", b"third", 3)
    reopened = journaling.Journal(tmp_path)
    assert [reopened.read(e) for e in reopened.replayed] == [b"first", b"third"]


def test_a_torn_header_is_skipped_as_well(tmp_path: Path) -> None:
    journal = journaling.Journal(tmp_path)
    journal.append("t", b"whole", 1)
    (segment,) = _segments(tmp_path)
    with segment.open("ab") as file:
        file.write(b"\x40\x00")  # two bytes of the next record's header
    again = journaling.Journal(tmp_path)
    assert [again.read(e) for e in again.replayed] == [b"whole"]
    assert again.corrupt_records == 1


def test_a_damaged_record_fails_its_checksum_and_is_never_returned(tmp_path: Path) -> None:
    journal = journaling.Journal(tmp_path)
    journal.append("t", b"A" * 100, 1)
    journal.append("t", b"B" * 100, 2)
    journal.append("t", b"C" * 100, 3)
    (segment,) = _segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[data.index(b"B" * 100) + 50] ^= 0x01  # one bit flipped on the disk
    segment.write_bytes(bytes(data))

    again = journaling.Journal(tmp_path)
    bodies = [again.read(e) for e in again.replayed]
    # Past a damaged record nothing in the segment can be trusted: the rest is skipped.
    assert bodies == [b"A" * 100]
    assert again.corrupt_records == 1


def test_a_file_that_is_not_a_segment_does_not_stop_the_agent(tmp_path: Path) -> None:
    (tmp_path / "00000001.wal").write_bytes(b"something else entirely")
    journal = journaling.Journal(tmp_path)
    assert journal.replayed == []
    assert journal.corrupt_records == 1
    entry = journal.append("t", b"fine", 1)
    assert journal.read(entry) == b"fine"


def test_past_its_size_the_oldest_bodies_are_dropped_and_counted(tmp_path: Path) -> None:
    journal = journaling.Journal(tmp_path, max_bytes=256 << 10)  # four 64 KiB segments
    body = os.urandom(10_000)
    entries = [journal.append("t", body, 100) for _ in range(100)]  # ~1 MB
    on_disk = sum(p.stat().st_size for p in _segments(tmp_path))
    assert on_disk <= (256 << 10) + journal.segment_bytes
    assert journal.size == on_disk
    dropped = [e for e in entries if e.dropped]
    kept = [e for e in entries if not e.dropped]
    # The oldest go, the newest stay, and every one dropped is counted with its samples.
    assert dropped
    assert kept
    assert max(e.seq for e in dropped) < min(e.seq for e in kept)
    assert journal.dropped_bodies == len(dropped)
    assert journal.dropped_samples == 100 * len(dropped)
    again = journaling.Journal(tmp_path, max_bytes=256 << 10)
    assert [e.seq for e in again.replayed] == [e.seq for e in kept]


def test_segments_whose_bodies_were_all_taken_are_deleted(tmp_path: Path) -> None:
    journal = journaling.Journal(tmp_path, max_bytes=1 << 20)  # 128 KiB segments
    body = os.urandom(20_000)
    for _ in range(40):
        journal.acknowledge(journal.append("t", body, 1))
    # Everything was taken: only the segment being written stays.
    assert len(_segments(tmp_path)) == 1
    assert journal.dropped_bodies == 0
    journal.close()
    assert journaling.Journal(tmp_path).replayed == []


def test_after_closing_appends_fail_clearly_and_acknowledgements_are_kept_in_memory(
    tmp_path: Path,
) -> None:
    journal = journaling.Journal(tmp_path)
    entry = journal.append("t", b"late", 1)
    journal.close()
    journal.acknowledge(entry)  # a push finishing while the agent stops: no error
    assert entry.done
    with pytest.raises(OSError, match="closed"):
        journal.append("t", b"later", 1)
    # Its acknowledgement never reached the disk: sent again after a restart, not lost.
    assert [e.seq for e in journaling.Journal(tmp_path).replayed] == [entry.seq]
