"""The logs benchmark's many-files scenario: 1,000 files written at once by small writers.

A folder of ``--files`` log files (1,000 by default), created empty before the subject starts,
as a node's containers would have them; then a writer thread appends to every file in turn, a
few lines per write (``BURST``), round after round with a short pause, until each file holds
``--file-lines`` lines: many small writers, none fast. Each subject follows ``DIR/*.log`` and
ships every line over syslog TCP to the counting receiver of ``tests.support.syslogd``; after
each timed run, every line must have arrived intact exactly once. Subjects, interleaved:

- **agent**: ``sidecarkit agent logs --paths 'DIR/*.log' --sink syslog=...``;
- **rsyslog**: imfile with the same wildcard (inotify), omfwd octet-counted.

Targets: the agent's lines per CPU-second (``MIN_PER_CPU``) and peak RSS (``MAX_RSS``); its
ratio to rsyslog is printed. The writers are not measured.
"""

from __future__ import annotations

import array
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import _measuring as m

from tests.support import syslogd

BURST = 5
"""Lines per write."""
PAUSE = 0.02
"""Seconds between two rounds of writes over every file."""
MIN_PER_CPU = 150_000
"""Lines per CPU-second the agent must reach with 1,000 files (the single-file path does
about ten times that: each file costs a look and a read per round)."""
MAX_RSS = 64.0
"""Peak RSS, MB, the agent may reach with 1,000 files followed."""


def plan(files: int, lines: int) -> tuple[list[list[bytes]], array.array[int]]:
    """The lines of each file (numbered across files, ~100 bytes) and the CRC-32 of each."""
    crcs = array.array("I", bytes(4 * files * lines))
    texts: list[list[bytes]] = []
    for f in range(files):
        own = []
        for n in range(lines):
            seq = n * files + f
            data = b"pod-%04d worker %02d handled request %06d in %3d ms status=200 seq=%d" % (
                f,
                seq % 16,
                n,
                seq % 997,
                seq,
            )
            crcs[seq] = zlib.crc32(data)
            own.append(data)
        texts.append(own)
    return texts, crcs


def _writers(folder: Path, texts: list[list[bytes]]) -> Callable[[], None]:
    def write() -> None:
        fds = [
            os.open(folder / f"app-{f:04d}.log", os.O_WRONLY | os.O_APPEND)
            for f in range(len(texts))
        ]
        try:
            total = len(texts[0])
            for start in range(0, total, BURST):
                for fd, own in zip(fds, texts, strict=True):
                    os.write(fd, b"\n".join(own[start : start + BURST]) + b"\n")
                time.sleep(PAUSE)
        finally:
            for fd in fds:
                os.close(fd)

    return write


def _starter(start: m.Start, folder: Path, count: int) -> m.Start:
    """``start`` on a fresh folder of ``count`` empty files."""

    def fresh(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for f in range(count):
            (folder / f"app-{f:04d}.log").touch()
        return start(folder / "*.log", port, run)

    return fresh


def _agent(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
    return m.start_agent(str(path), f"syslog=tcp://127.0.0.1:{port}", run)


def _rsyslog(daemon: syslogd.Daemon) -> m.Start:
    def start(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
        return daemon.start(syslogd.shipping_config(daemon, path, port, run), run)

    return start


def run(work: Path, *, files: int, lines: int, repeat: int, check: m.Check) -> list[str]:
    """The scenario, printed; the targets missed (a missing peer is one)."""
    folder = work / "files"
    texts, crcs = plan(files, lines)
    total = files * lines
    print(
        f"\n== {files:,} files at once: {lines} lines each, {BURST} per write, "
        f"{total:,} lines; {repeat} round(s), interleaved"
    )
    missed = []
    subjects = [m.Subject("agent", _starter(_agent, folder, files))]
    daemon = syslogd.rsyslog()
    if daemon is None:
        missed.append(f"no rsyslog; {syslogd.INSTALL_HINT}")
        print(f"  MISSED {missed[-1]}")
    else:
        subjects.append(m.Subject("rsyslog", _starter(_rsyslog(daemon), folder, files)))
    timeout = max(60.0, total / 5_000)

    def one(subject: m.Subject) -> m.Result:
        return m.run_once(
            subject, folder, crcs, work, timeout, check=check, during=_writers(folder, texts)
        )

    results = m.rounds(subjects, repeat, one)
    shutil.rmtree(folder, ignore_errors=True)
    print()
    medians = m.table(results, total)
    agent, peer = medians.get("agent"), medians.get("rsyslog")
    if agent is None:
        missed.append("agent: no good run with many files")
        return missed
    missed += m.target("agent lines/CPU-s, many files", agent["per_cpu"], MIN_PER_CPU, "")
    missed += m.target("agent peak RSS, many files", agent["rss"], MAX_RSS, " MB", most=True)
    if peer:
        print(f"  agent lines/CPU-s / rsyslog: {agent['per_cpu'] / peer['per_cpu']:.2f}x")
    return missed
