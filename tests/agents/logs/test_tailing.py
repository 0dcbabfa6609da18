"""Following files across appends, partial lines, rotation and restarts."""

from __future__ import annotations

import os
from pathlib import Path

from sidecarkit.agents.logs import tailing


def _texts(lines: list[tailing.Line]) -> list[str]:
    return [line.text for line in lines]


def test_complete_lines_only_and_partials_at_the_end(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\nthr")
    t = tailing.Tailer(str(tmp_path / "*.log"))
    assert _texts(t.poll()) == ["one", "two"]
    with log.open("a") as f:
        f.write("ee\nfour")
    assert _texts(t.poll()) == ["three"]
    assert _texts(t.poll(final=True)) == ["four"]


def test_offsets_resume_without_loss_or_duplicates(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    offsets = tmp_path / "state" / "offsets.json"
    log.write_text("a\nb\n")
    t = tailing.Tailer(str(tmp_path / "*.log"), offsets)
    lines = t.poll()
    t.commit(lines[:1])  # only "a" was delivered before the crash
    t.save()
    t.close()
    with log.open("a") as f:
        f.write("c\n")
    again = tailing.Tailer(str(tmp_path / "*.log"), offsets)
    again.load()
    assert _texts(again.poll()) == ["b", "c"]


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("1\n")
    t = tailing.Tailer(str(tmp_path / "*.log"))
    t.commit(t.poll())
    with log.open("a") as f:
        f.write("2\n")
    os.rename(log, tmp_path / "app.log.1")
    log.write_text("3\n")
    lines = t.poll()
    assert _texts(lines) == ["2", "3"]
    t.commit(lines)
    assert len(t.files) == 1, "the rotated file is let go once read and delivered"


def test_copytruncate_restarts_from_zero_and_counts_the_risk(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("1\n2\n")
    t = tailing.Tailer(str(tmp_path / "*.log"))
    t.commit(t.poll())
    with log.open("r+") as f:
        f.truncate(0)
    log.write_text("3\n")
    assert _texts(t.poll()) == ["3"]
    assert t.possibly_lost == 1
