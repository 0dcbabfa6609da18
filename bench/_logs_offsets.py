"""The many-files scenario's offsets part: what one save after a batch costs as files grow.

After each confirmed batch the agent saves its offsets. A batch comes from a few files, so what
changed is a few entries however many files are followed. This part follows real files with
the agent's own ``Tailer`` (at ``files / 10`` and at ``files``), delivers one batch's worth of
new lines in ``CHANGED`` of them, and times the save two ways, on the same state:

- **whole**: every entry written (``OffsetStore.save``), what every save did before the journal
  and what a compaction still does;
- **journal**: the changed entries appended (``OffsetStore.append``), what a save does now.

Target: a journal save with ``files`` followed costs at most ``MAX_GROWTH`` times one with a
tenth of them (the cost follows what changed, not the file count). CPU time of this process,
unsynced saves (``fdatasync`` is once a second either way).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Final

from sidecarkit.agents.logs import offsets, tailing

CHANGED: Final = 20
"""Files with new lines in one batch."""
SAVES: Final = 200
"""Saves timed per way (fewer for the whole state when it is big)."""
MAX_GROWTH: Final = 2.0


def _follow(folder: Path, count: int) -> tuple[tailing.Tailer, list[Path]]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = [folder / f"app-{i:05d}.log" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_bytes(b"pod-%05d started\n" % i)
    t = tailing.Tailer(str(folder / "*.log"), max_open=count + 16)
    for chunk in t.poll():
        t.commit(chunk.file.identity, chunk.generation, chunk.end, chunk.file.line)
    return t, paths


def _batch(t: tailing.Tailer, paths: list[Path], round_: int) -> None:
    for n in range(CHANGED):
        with paths[(round_ * CHANGED + n) % len(paths)].open("ab") as out:
            out.write(b"request %d handled in 3 ms status=200\n" % round_)
    for chunk in t.poll():
        t.commit(chunk.file.identity, chunk.generation, chunk.end, chunk.file.line)


def _cost(work: Path, count: int) -> tuple[float, float, int]:
    """CPU ms per save, whole and journal, and the bytes a journal save wrote."""
    t, paths = _follow(work / "offsets-files", count)
    store = offsets.OffsetStore(work / "offsets-state" / "offsets.json")
    store.save({"app": t.snapshot()}, sync=False)
    whole_saves = max(5, SAVES * 1000 // max(1000, count))
    spent = 0.0
    for r in range(whole_saves):
        _batch(t, paths, r)
        began = time.process_time()
        store.save({"app": t.snapshot()}, sync=False)
        spent += time.process_time() - began
    whole = spent / whole_saves * 1000
    spent = 0.0
    before = store.journal.stat().st_size
    for r in range(SAVES):
        _batch(t, paths, whole_saves + r)
        began = time.process_time()
        store.append({"app": t.delta()}, sync=False)
        spent += time.process_time() - began
    journal = spent / SAVES * 1000
    written = (store.journal.stat().st_size - before) // SAVES
    loaded = offsets.OffsetStore(store.path).load()["app"]
    assert len(loaded) == count, f"{len(loaded)} of {count} entries loaded back"
    t.close()
    shutil.rmtree(work / "offsets-files", ignore_errors=True)
    shutil.rmtree(work / "offsets-state", ignore_errors=True)
    return whole, journal, written


def run(work: Path, files: int) -> list[str]:
    """Print the save costs at a tenth of ``files`` and at ``files``; the targets missed."""
    print(f"\n== offsets: one save after a batch from {CHANGED} files, CPU ms per save")
    rows = {}
    for count in (max(10, files // 10), files):
        whole, journal, written = _cost(work, count)
        rows[count] = journal
        print(
            f"  {count:>7,} files  whole state {whole:8.2f} ms   journal {journal:6.3f} ms "
            f"({written} bytes)   whole/journal {whole / journal:7.1f}x"
        )
    small, big = rows.values()
    growth = big / small
    print(f"  journal save cost, {files:,} / {max(10, files // 10):,} files: {growth:.2f}x")
    if growth > MAX_GROWTH:
        return [f"offsets journal save grows with the file count: {growth:.2f}x > {MAX_GROWTH}x"]
    return []
