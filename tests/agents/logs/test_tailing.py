"""Following files across appends, partial lines, rotation, truncation, long lines and restarts."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecarkit.agents.logs import copies, offsets, tailing


def _lines(chunks: list[tailing.Chunk]) -> list[str]:
    return [line for c in chunks for line in c.data.decode().split("\n")[:-1]]


def _commit_all(t: tailing.Tailer, chunks: list[tailing.Chunk]) -> None:
    for c in chunks:
        t.commit(c.file.identity, c.generation, c.end, c.first + c.lines)


def _copytruncate(log: Path, copy: Path) -> None:
    """What logrotate's ``copytruncate`` does: copy the file, then truncate it in place."""
    copy.write_bytes(log.read_bytes())
    os.truncate(log, 0)


def test_complete_lines_only_and_partials_at_the_end(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\nthr")
    t = tailing.Tailer(str(tmp_path / "*.log"))
    first = t.poll()
    assert _lines(first) == ["one", "two"]
    assert (first[0].first, first[0].lines, first[0].end) == (0, 2, 8)
    with log.open("a") as f:
        f.write("ee\nfour")
    second = t.poll()
    assert _lines(second) == ["three"]
    assert (second[0].first, second[0].end) == (2, 14)
    assert _lines(t.poll(final=True)) == ["four"]


def test_offsets_resume_without_loss_or_duplicates(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
    log.write_text("a\nb\n")
    t = tailing.Tailer(str(tmp_path / "*.log"), read_size=2)  # one line per poll
    chunks = t.poll()
    assert _lines(chunks) == ["a"]
    key = chunks[0].file.key
    _commit_all(t, chunks)  # only "a" was delivered before the crash
    store.save({"app": t.snapshot()})
    t.close()
    with log.open("a") as f:
        f.write("c\n")
    again = tailing.Tailer(str(tmp_path / "*.log"))
    again.restore(store.load()["app"])
    chunks = again.poll()
    assert _lines(chunks) == ["b", "c"]
    assert chunks[0].first == 1, "line numbers continue where the delivered ones ended"
    assert chunks[0].file.key == key, "the same file keeps its key: replays get the same ids"


def test_a_recycled_inode_with_other_content_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old first line\nold second\n")
    t = tailing.Tailer(str(tmp_path / "*.log"))
    chunks = t.poll()
    _commit_all(t, chunks)
    old_key = chunks[0].file.key
    saved = t.snapshot()
    t.close()
    # Same inode, different content (what a recycled inode or a truncation while away looks like).
    with log.open("r+") as f:
        f.truncate(0)
        f.write("new content that is longer than before, entirely\n")
    again = tailing.Tailer(str(tmp_path / "*.log"))
    again.restore(saved)
    chunks = again.poll()
    assert _lines(chunks) == ["new content that is longer than before, entirely"]
    assert chunks[0].generation == saved[0].get("generation", 0) + 1
    assert chunks[0].file.key != old_key, "new key: ids of the old and new content never collide"


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("1\n")
    t = tailing.Tailer(str(tmp_path / "app.log*"), rotate_wait=0)
    _commit_all(t, t.poll())
    with log.open("a") as f:
        f.write("2\n")
    os.rename(log, tmp_path / "app.log.1")
    log.write_text("3\n")
    chunks = t.poll()
    assert sorted(_lines(chunks)) == ["2", "3"]
    _commit_all(t, chunks)
    t.poll()
    assert len(t.files) == 1, "the rotated file is let go once read and delivered"
    assert _lines(t.poll()) == [], "the rotated copy the glob still matches is not read again"
    assert any(e["path"].endswith("app.log") for e in t.snapshot())


def test_a_deleted_file_is_drained_before_it_is_forgotten(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("1\n")
    t = tailing.Tailer(str(tmp_path / "*.log"), rotate_wait=0)
    _commit_all(t, t.poll())
    with log.open("a") as f:
        f.write("2\nlast without newline")
    log.unlink()
    chunks = t.poll()
    chunks += t.poll()  # the unfinished last line goes once the file is seen to be gone
    assert _lines(chunks) == ["2", "last without newline"]
    _commit_all(t, chunks)
    t.poll()
    assert t.files == {}


def test_copytruncate_restarts_from_zero_and_counts_the_risk(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("1\n2\n")
    t = tailing.Tailer(str(tmp_path / "*.log"))
    before = t.poll()
    _commit_all(t, before)
    with log.open("r+") as f:
        f.truncate(0)
    log.write_text("3\n")
    after = t.poll()
    assert _lines(after) == ["3"]
    assert after[0].first == 0
    assert after[0].generation == before[0].generation + 1
    assert t.truncations == 1
    # A commit from before the truncation must not move the new generation's offset.
    t.commit(before[0].file.identity, before[0].generation, 4, 2)
    assert t.snapshot()[0]["offset"] == 0


def test_long_lines_are_split_or_truncated_never_stalled(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("short\n" + "x" * 25 + "\nend\n")
    split = tailing.Tailer(str(log), max_line=10)
    chunks = split.poll()
    assert _lines(chunks) == ["short", "x" * 10, "x" * 10, "x" * 5, "end"]
    assert chunks[-1].end == log.stat().st_size, "offsets stay file offsets"
    assert split.long_lines_seen == 1
    cut = tailing.Tailer(str(log), max_line=10, long_lines="truncate")
    assert _lines(cut.poll()) == ["short", "x" * 10, "end"]
    assert cut.truncated_bytes == 15


def test_an_unfinished_long_line_is_handed_out_in_pieces(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("y" * 35)
    t = tailing.Tailer(str(log), max_line=10)
    assert _lines(t.poll()) == ["y" * 10] * 3
    with log.open("a") as f:
        f.write("yy\n")
    assert _lines(t.poll()) == ["y" * 7]
    cut = tailing.Tailer(str(log), max_line=10, long_lines="truncate", read_size=16)
    assert _lines(cut.poll()) == ["y" * 10]
    assert _lines(cut.poll()) == []
    assert _lines(cut.poll()) == []
    assert cut.truncated_bytes == 27


def test_reads_are_bounded_by_the_budget(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"{i:04d}\n" for i in range(1000)))
    t = tailing.Tailer(str(log))
    chunks = t.poll(budget=100)
    assert sum(len(c.data) for c in chunks) <= 100
    assert _lines(chunks)[0] == "0000"


def test_the_copy_copytruncate_made_continues_where_delivery_stopped(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    t = tailing.Tailer(str(tmp_path / "app.log*"))
    chunks = t.poll()
    _commit_all(t, chunks)
    with log.open("a") as f:
        f.write("line 10\nline 11\n")  # written, then rotated away before the agent read it
    _copytruncate(log, tmp_path / "app.log.1")
    log.write_text("new 0\n")
    lines = _lines(t.poll())
    assert sorted(lines) == ["line 10", "line 11", "new 0"], "nothing lost, nothing read twice"
    assert t.truncations == 1


@pytest.mark.parametrize("copy_name", ["app.log.1", "app-1.log"])
def test_a_copytruncate_while_away_resumes_the_copy_even_if_the_file_grew_back(
    tmp_path: Path,
    copy_name: str,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    t = tailing.Tailer(str(tmp_path / "app*"))
    _commit_all(t, t.poll())
    saved = t.snapshot()
    t.close()
    # While the agent is down: two more lines, copytruncate, and the app writes more than the
    # saved offset again, so the truncation cannot be seen from the size alone.
    with log.open("a") as f:
        f.write("line 10\nline 11\n")
    _copytruncate(log, tmp_path / copy_name)  # the copy sorts after, or before, the original
    log.write_text("".join(f"new {i}\n" for i in range(20)))
    again = tailing.Tailer(str(tmp_path / "app*"))
    again.restore(saved)
    lines = _lines(again.poll())
    assert sorted(lines) == sorted(["line 10", "line 11", *(f"new {i}" for i in range(20))]), (
        "the copy goes on from the saved offset: nothing delivered before is read again"
    )


def test_a_truncation_is_seen_even_after_the_file_grew_past_the_read_position(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    t = tailing.Tailer(str(tmp_path / "app.log*"))
    _commit_all(t, t.poll())
    # copytruncate, then the app writes more than had been read, all between two looks.
    _copytruncate(log, tmp_path / "app.log.1")
    log.write_text("".join(f"new {i}\n" for i in range(20)))
    lines = _lines(t.poll()) + _lines(t.poll())
    assert sorted(lines) == sorted(f"new {i}" for i in range(20)), (
        "the new content is read from its start, and the copy is not read again"
    )
    assert t.truncations == 1


def test_a_copy_caught_while_still_empty_waits_like_any_copy(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    t = tailing.Tailer(str(tmp_path / "app.log*"))
    _commit_all(t, t.poll())
    copy = tmp_path / "app.log.1"
    copy.touch()  # copytruncate has created the copy and not written to it yet
    assert _lines(t.poll()) == []
    copy.write_bytes(log.read_bytes()[:40])  # half-way through the copy
    assert _lines(t.poll()) == []
    _copytruncate(log, copy)
    log.write_text("new 0\n")
    lines = _lines(t.poll()) + _lines(t.poll())
    assert lines == ["new 0"], "nothing of the copy is read again"


def test_a_copy_seen_before_the_truncation_waits_for_it(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    t = tailing.Tailer(str(tmp_path / "app.log*"))
    read = t.poll()  # read, not yet delivered
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())
    assert _lines(t.poll()) == [], "the copy is not read while its original is not truncated"
    with log.open("r+") as f:
        f.truncate(0)
    assert _lines(t.poll()) == [], "the copy continues where reading had got to"
    _commit_all(t, read)  # the batch in flight is confirmed: its commit lands on the copy
    copy = next(e for e in t.snapshot() if e["path"].endswith("app.log.1"))
    assert copy["offset"] == (tmp_path / "app.log.1").stat().st_size == 70


def test_unread_bytes_of_a_truncated_file_without_a_copy_are_counted_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copies, "COPY_WINDOW", 0.0)
    log = tmp_path / "app.log"
    log.write_text("a\n")
    t = tailing.Tailer(str(log), read_size=2)  # one line per poll: the rest stays unread
    _commit_all(t, t.poll())
    with log.open("a") as f:
        f.write("b\nc\n")
    t.poll()  # reads "b", sees the file is 6 bytes long
    (tmp_path / "archive").mkdir()
    _copytruncate(log, tmp_path / "archive" / "app.log.1")  # not next to it: not found
    t.poll()
    t.poll()
    assert t.truncations == 1
    assert t.lost_bytes == 2, "'c\\n' was written, never read, and no copy was followed"


def test_a_loss_of_bytes_never_read_is_counted_as_an_event_with_no_lines_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncated before it was read, with no copy: how many lines the bytes held is not known,
    so the loss is counted as an event by its reason and adds no lines."""
    monkeypatch.setattr(copies, "COPY_WINDOW", 0.0)
    log = tmp_path / "app.log"
    log.write_text("a\n")
    t = tailing.Tailer(str(log), read_size=2)
    _commit_all(t, t.poll())
    with log.open("a") as f:
        f.write("b\nc\n")
    t.poll()
    (tmp_path / "archive").mkdir()
    _copytruncate(log, tmp_path / "archive" / "app.log.1")
    t.poll()
    t.poll()
    assert (t.lost_bytes, t.losses, t.lost_lines) == (2, {"truncated": 1}, 0)


def test_a_copy_the_glob_does_not_match_is_read_up_to_where_the_file_was_truncated(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("a\n")
    t = tailing.Tailer(str(log), read_size=2, rotate_wait=0)  # one line per poll
    _commit_all(t, t.poll())
    with log.open("a") as f:
        f.write("b\nc\nd\n")
    seen = t.poll()  # reads "b"; "c" and "d" are written and not read yet
    _copytruncate(log, tmp_path / "app.log.1")  # next to it, but outside the glob
    log.write_text("e\n")
    for _ in range(6):
        chunks = t.poll()
        _commit_all(t, chunks)
        seen += chunks
    assert sorted(_lines(seen)) == ["b", "c", "d", "e"]
    assert t.truncations == 1
    assert t.lost_bytes == 0
    assert [f.path for f in t.files.values()] == [str(log)], "the copy is let go once read"


def test_files_take_turns_so_a_busy_file_cannot_starve_a_quiet_one(tmp_path: Path) -> None:
    busy, quiet = tmp_path / "a-busy.log", tmp_path / "b-quiet.log"
    line = b"x" * 63 + b"\n"
    busy.write_bytes(line * 100_000)  # 6.4 MB behind
    quiet.write_bytes(b"")
    t = tailing.Tailer(str(tmp_path / "*.log"))
    t.poll(0)  # both followed, the busy one first
    with quiet.open("ab") as f:
        f.write(b"quiet line\n")
    got: list[str] = []
    for _ in range(3):  # each poll as the shipper makes it: a budget of whole lines
        got += [s for s in _lines(t.poll(65536)) if s != "x" * 63]
    assert got == ["quiet line"]


_EMFILE_RUN = """
import json, logging, os, resource, sys
from sidecarkit.agents.logs import tailing
logging.basicConfig(level=logging.WARNING)
t = tailing.Tailer(sys.argv[1], max_open=1000)  # a cap set above the limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
in_use = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + int(sys.argv[2]), hard))
try:
    first = [c.data.decode() for c in t.poll()]
finally:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
files, unreadable = len(t.files), dict(t.unreadable)
second = [c.data.decode() for c in t.poll()]  # with descriptors to spare again
print(json.dumps([first, files, unreadable, second, t.unreadable]))
t.close()
"""


def test_too_many_open_files_is_reported_per_file_not_swallowed(tmp_path: Path) -> None:
    """In a process of its own: the open-files limit is per process, and a test run's other
    threads would take the few descriptors left."""
    for i in range(40):
        (tmp_path / f"app-{i:02d}.log").write_text(f"line {i}\n")
    run = subprocess.run(
        [sys.executable, "-c", _EMFILE_RUN, str(tmp_path / "*.log"), "10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, files, unreadable, second, left = json.loads(run.stdout)
    lines = [line for data in first for line in data.split("\n")[:-1]]
    assert 0 < len(lines) < 40
    assert len(unreadable) == 40 - files
    assert set(unreadable.values()) == {os.strerror(errno.EMFILE)}
    assert "Too many open files" in run.stderr
    assert "app-39.log" in run.stderr
    lines += [line for data in second for line in data.split("\n")[:-1]]
    assert sorted(lines) == sorted(f"line {i}" for i in range(40))
    assert left == {}


def test_a_directory_it_cannot_list_is_reported_not_taken_for_an_empty_one(
    tmp_path: Path,
) -> None:
    """Python's glob answers "nothing matched" for a directory it cannot list; with not one
    descriptor left the agent must say so, name the directory, and read it once it can."""
    for i in range(40):
        (tmp_path / f"app-{i:02d}.log").write_text(f"line {i}\n")
    run = subprocess.run(
        [sys.executable, "-c", _EMFILE_RUN, str(tmp_path / "*.log"), "-4"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, files, unreadable, second, left = json.loads(run.stdout)
    assert (first, files) == ([], 0)
    assert unreadable == {str(tmp_path): os.strerror(errno.EMFILE)}
    assert f"cannot open {tmp_path}: Too many open files" in run.stderr
    lines = [line for data in second for line in data.split("\n")[:-1]]
    assert sorted(lines) == sorted(f"line {i}" for i in range(40))
    assert left == {}


def test_a_file_read_twice_in_one_poll_numbers_its_second_chunk_after_the_first(
    tmp_path: Path,
) -> None:
    # With count_lines off (the shipper counts), a budget that ends mid-line makes the same
    # poll read the file again for the rest of that line: its chunk must not start at line 0,
    # or Elasticsearch ids (file + line) of two lines collide and one is lost as a "duplicate".
    (tmp_path / "app.log").write_bytes(b"".join(b"line %03d\n" for n in range(100)))
    t = tailing.Tailer(str(tmp_path / "*.log"), read_size=1 << 20, count_lines=False)
    t.discover()
    chunks = t.poll(45)  # four lines and half of the fifth
    assert len(chunks) == 2
    for chunk in chunks:
        if chunk.lines < 0:
            t.counted(chunk, chunk.data.count(b"\n"))
    assert [(c.first, c.lines) for c in chunks] == [(0, 4), (4, 1)]
    more = t.poll(None)
    for chunk in more:
        if chunk.lines < 0:
            t.counted(chunk, chunk.data.count(b"\n"))
    assert more[0].first == 5
    t.close()


_DENIED_RUN = """
import json, logging, sys
from sidecarkit.agents.logs import tailing
logging.basicConfig(level=logging.WARNING)
t = tailing.Tailer(sys.argv[1])
first = [c.data.decode() for c in t.poll()]
print(json.dumps([first, dict(t.unreadable)]), flush=True)
sys.stdin.readline()  # the test makes the file readable
second = [c.data.decode() for c in t.poll()]
print(json.dumps([second, dict(t.unreadable)]), flush=True)
t.close()
"""


def test_a_file_it_may_not_read_is_reported_by_name_and_read_once_it_may(tmp_path: Path) -> None:
    """Root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (as a container's non-root user): a
    mode-000 file is refused with EACCES; the agent names it and counts it unreadable instead of
    skipping it silently, and reads it whole once its mode allows."""
    (tmp_path / "open.log").write_text("open 1\nopen 2\n")
    closed = tmp_path / "closed.log"
    closed.write_text("closed 1\nclosed 2\n")
    closed.chmod(0)
    proc = subprocess.Popen(
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
         sys.executable, "-c", _DENIED_RUN, str(tmp_path / "*.log")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        first, unreadable = json.loads(proc.stdout.readline())
        assert "".join(first).split() == ["open", "1", "open", "2"]
        assert unreadable == {str(closed): os.strerror(errno.EACCES)}
        closed.chmod(0o644)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        second, left = json.loads(proc.stdout.readline())
        assert "".join(second).splitlines() == ["closed 1", "closed 2"]
        assert left == {}
        proc.wait(timeout=30)
        log = proc.stderr.read()
    finally:
        proc.kill()
    assert "closed.log" in log
    assert "Permission denied" in log


def test_a_file_opened_empty_and_copytruncated_while_reading_is_held_back_is_read_from_its_copy(
    tmp_path: Path,
) -> None:
    # The glob names the live file only. While a sink holds reading back (a budget of 0) the
    # file fills, is copied away and truncated, fills again and is renamed away; then the agent
    # is killed. The file's first bytes, known only from the looks made while held back, are
    # what tells the restarted agent that the text it had not read is in the copy.
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    t = tailing.Tailer(str(tmp_path / "*.log"))
    assert t.poll() == []
    with log.open("a") as f:
        f.write("".join(f"old {i}\n" for i in range(50)))
    assert t.poll(0) == []  # held back: nothing read, but the file is looked at
    _copytruncate(log, tmp_path / "app.log.1")
    log.write_text("".join(f"new {i}\n" for i in range(80)))
    os.rename(log, tmp_path / "app.log.2")
    log.write_text("".join(f"newer {i}\n" for i in range(5)))
    saved = t.snapshot()
    t.close()  # the agent is killed before it looks again
    again = tailing.Tailer(str(tmp_path / "*.log"))
    again.restore(saved)
    lines: list[str] = []
    for _ in range(10):
        lines += _lines(again.poll())
    again.close()
    expected = [
        *(f"old {i}" for i in range(50)),
        *(f"new {i}" for i in range(80)),
        *(f"newer {i}" for i in range(5)),
    ]
    assert sorted(lines) == sorted(expected)
