"""The offsets file: two checksummed slots, so a torn write never loses the saved positions."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sidecarkit.agents.logs import offsets, tailing


def _entries(offset: int) -> dict[str, list[dict[str, object]]]:
    return {"app": [{"path": "/x.log", "dev": 1, "inode": 2, "offset": offset, "line": 1}]}


def test_offsets_survive_a_torn_write_and_grow_as_needed(tmp_path: Path) -> None:
    path = tmp_path / "offsets.json"
    store = offsets.OffsetStore(path)
    for offset in range(1, 6):
        store.save(_entries(offset), sync=False)
    assert offsets.OffsetStore(path).load()["app"][0]["offset"] == 5
    # A crash in the middle of the next save tears the slot being written (the older one).
    raw = bytearray(path.read_bytes())
    half = len(raw) // 2
    torn = 0 if raw[:half].split(b" ")[1] < raw[half:].split(b" ")[1] else half
    raw[torn + 30 : torn + 40] = b"XXXXXXXXXX"
    path.write_bytes(bytes(raw))
    assert offsets.OffsetStore(path).load()["app"][0]["offset"] == 5, "the intact slot wins"
    raw[(half - torn) + 30 : (half - torn) + 40] = b"XXXXXXXXXX"
    path.write_bytes(bytes(raw))
    assert offsets.OffsetStore(path).load() == {}, "both torn: start over, never garbage"
    big = {"app": [_entries(n)["app"][0] for n in range(200)]}
    store.save(big)
    assert len(offsets.OffsetStore(path).load()["app"]) == 200
    path.write_text('{"version":1,"sources":{"app":[{"offset":7}]}}')
    assert offsets.OffsetStore(path).load()["app"][0]["offset"] == 7, "plain JSON still reads"


def test_the_offsets_of_thousands_of_files_stay_about_twice_their_size(tmp_path: Path) -> None:
    store = offsets.OffsetStore(tmp_path / "offsets.json")
    entries = [
        {
            "path": f"/var/log/app/app-{i:05d}.log",
            "dev": 2049,
            "inode": 1_000_000 + i,
            "fingerprint": f"{i:032x}",
            "offset": 12_345 + i,
            "line": 120 + i,
        }
        for i in range(10_000)
    ]
    store.save({"app": entries})
    body = len(offsets.OffsetStore.encode({"app": entries}))
    size = (tmp_path / "offsets.json").stat().st_size
    assert size <= 2 * (body * 5 // 4 + 4096), f"{size} bytes for {body} bytes of offsets"
    assert offsets.OffsetStore(tmp_path / "offsets.json").load()["app"] == entries


def _followed(tmp_path: Path, count: int) -> tuple[tailing.Tailer, list[Path]]:
    folder = tmp_path / "logs"
    folder.mkdir()
    paths = [folder / f"app-{i:05d}.log" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_bytes(b"line 1 of %05d\n" % i)
    t = tailing.Tailer(str(folder / "*.log"))
    for chunk in t.poll():
        t.commit(chunk.file.identity, chunk.generation, chunk.end, chunk.file.line)
    return t, paths


def test_a_save_after_one_of_thousands_of_files_moved_on_writes_that_file_only(
    tmp_path: Path,
) -> None:
    """With thousands of files, a save after a batch costs what changed, not what is
    followed: the whole state is written once, then only the changed entry is appended."""
    t, paths = _followed(tmp_path, 2_000)
    try:
        store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
        assert store.wants_full
        store.save({"app": t.snapshot()})
        full = (tmp_path / "state" / "offsets.json").read_bytes()
        with paths[1234].open("ab") as out:
            out.write(b"second line\n")
        for chunk in t.poll():
            t.commit(chunk.file.identity, chunk.generation, chunk.end, chunk.file.line)
        assert not store.wants_full
        store.append({"app": t.delta()})
        journal = store.journal.stat().st_size
        assert journal < 1024, f"{journal} bytes appended for one file's new offset"
        assert (tmp_path / "state" / "offsets.json").read_bytes() == full, "the state not rewritten"
        loaded = offsets.OffsetStore(tmp_path / "state" / "offsets.json").load()["app"]
        assert len(loaded) == 2_000
        moved = next(e for e in loaded if e["path"] == str(paths[1234]))
        assert (moved["offset"], moved["line"]) == (28, 2)
        store.append({"app": t.delta()})
        assert store.journal.stat().st_size == journal, "nothing changed: nothing appended"
    finally:
        t.close()  # its 2,000 descriptors, not left to the test run


def test_a_torn_journal_line_is_ignored_with_what_follows_and_the_next_save_is_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "offsets.json"
    store = offsets.OffsetStore(path)
    store.save(_entries(1))
    for offset in (2, 3):
        store.append({"app": (_entries(offset)["app"], [])})
    raw = store.journal.read_bytes()
    store.journal.write_bytes(raw[: len(raw) - 10])  # the last append torn by a crash
    again = offsets.OffsetStore(path)
    assert again.load()["app"][0]["offset"] == 2
    assert again.wants_full, "a torn journal is compacted away before anything is appended"
    again.save(_entries(4))
    assert again.journal.stat().st_size == 0
    again.append({"app": ([], [[1, 2]])})
    assert offsets.OffsetStore(path).load() == {"app": []}, "a dropped entry stays dropped"


_SAVER = """
import sys, time
from pathlib import Path
from sidecarkit.agents.logs import offsets
store = offsets.OffsetStore(Path(sys.argv[1]))
state = store.load().get("app", [])
offsets_now = {e["inode"]: e["offset"] for e in state}
n = max(offsets_now.values(), default=0)
files = 300
while True:
    n += 1
    if store.wants_full or n % 97 == 0:
        entries = [
            {"path": f"/x/{i}.log", "dev": 1, "inode": i, "offset": n, "line": n}
            for i in range(files)
        ]
        store.save({"app": entries}, sync=n % 5 == 0)
    else:
        changed = [{"path": f"/x/{n % files}.log", "dev": 1, "inode": n % files,
                    "offset": n, "line": n}]
        store.append({"app": (changed, [])}, sync=n % 5 == 0)
    sys.stdout.write(f"{n}\\n")
    sys.stdout.flush()
"""


def test_the_offsets_stay_readable_and_never_go_back_when_killed_at_any_moment(
    tmp_path: Path,
) -> None:
    """A process saving (whole states and appended changes, synced and not) is SIGKILLed at
    30 varied moments: every time, what it had reported saved loads back, complete."""
    path = tmp_path / "offsets.json"
    rng = random.Random(3)
    last = 0
    for _ in range(30):
        saver = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert saver.stdout is not None
        first = saver.stdout.readline()  # running: loaded, and saved once
        assert first, "the saver did not start"
        time.sleep(rng.uniform(0.0, 0.05))
        saver.send_signal(signal.SIGKILL)
        reported = [first, *saver.stdout.read().split()]
        saver.wait()
        done = int(reported[-1]) if reported[-1].strip() else int(first)
        entries = offsets.OffsetStore(path).load()["app"]
        assert len(entries) == 300, "every file's entry is there"
        newest = max(int(e["offset"]) for e in entries)
        assert newest >= done, f"reported saved up to {done}, loaded {newest}"
        assert newest >= last, "a later run never loads an older state"
        last = newest
