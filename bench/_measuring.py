"""What the logs benchmarks share: timing a subject against a receiver, and measuring processes.

A **subject** is a process that ships a file (the agent, a peer daemon, a bare sender); a
**receiver** is a process of ``tests.support`` that prints ``READY <port>``, then one JSON line
with ``done_at`` (CLOCK_MONOTONIC) once every record arrived, and a last JSON line with its
counts on SIGTERM, dumping what it got into a folder to be checked after the timed run.
CPU seconds and peak RSS are those of the subject's process tree at the moment the last record
arrived (``/proc``), or from ``wait4`` once it exited.
"""

from __future__ import annotations

import array
import compileall
import contextlib
import functools
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sidecarkit

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")

AGENT = Path(sys.executable).parent / "sidecarkit"

Start = Callable[[Path, int, Path], subprocess.Popen[bytes]]
"""Starts a subject on (input path, receiver port, run folder)."""

Check = Callable[[list[Path], "array.array[int]"], "Verdict"]
"""Matches what a receiver dumped against the input's CRC-32 by line number."""


def warm(path: Path) -> None:
    """Read ``path`` once so that every subject starts from the page cache."""
    with path.open("rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


@functools.cache
def compiled() -> None:
    """Compile the agent's modules to bytecode once, as installing its wheel does.

    With ``PYTHONDONTWRITEBYTECODE`` set (as in CI) an editable install would otherwise compile
    every module from source at each start, about 0.08 CPU-s that an installed agent never
    spends, counted against it in every run."""
    compileall.compile_dir(Path(sidecarkit.__file__).parent, quiet=1)


def start_agent(paths: str, sink: str, run: Path) -> subprocess.Popen[bytes]:
    """The agent following ``paths`` (a path or glob) into ``sink`` (a ``--sink`` value),
    saving offsets after each confirmed batch, as in production (its modules compiled, as
    installed)."""
    compiled()
    env = dict(os.environ, SIDECARKIT_POD_NAME="bench-0", SIDECARKIT_POD_NAMESPACE="bench")
    command = [str(AGENT), "agent", "logs", "--paths", paths, "--sink", sink]
    command += ["--offsets-dir", str(run / "offsets"), "--port", "0"]
    with (run / "agent.log").open("wb") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env
        )


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{current}/task/{task}/children").read_text()
                    todo.extend(int(c) for c in text.split())
    return found


def tree_cpu(pid: int) -> float | None:
    """User+system CPU seconds of ``pid`` and its descendants, or ``None`` once it is gone."""
    total = 0
    try:
        for member in _tree(pid):
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        return None
    return total / TICK


def exited(pid: int) -> bool:
    """Whether the child ``pid`` exited, leaving it to be reaped by ``reap``."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    return os.waitid(os.P_PID, pid, flags) is not None


def reap(process: subprocess.Popen[bytes], *, grace: float = 30.0) -> tuple[float, float]:
    """SIGTERM ``process`` if it runs, reap it: its (CPU seconds, peak RSS MB) from ``wait4``."""
    if not exited(process.pid):
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            process.kill()
            deadline = time.monotonic() + 5
        time.sleep(0.02)


@dataclass
class Subject:
    name: str
    start: Callable[[Path, int, Path], subprocess.Popen[bytes]]
    exits: bool = False
    """Exits by itself once everything was sent (the bare sender)."""
    start_many: Callable[[Path, tuple[int, ...], Path], subprocess.Popen[bytes]] | None = None
    """Starts it against several receivers (``run_once(receivers=N)``)."""


@dataclass
class Result:
    ok: bool
    wall: float = 0.0
    cpu: float = 0.0
    rss: float = 0.0
    frame_bytes: float = 0.0
    note: str = ""

    def rate(self, lines: int) -> float:
        return lines / self.wall if self.wall else 0.0

    def per_cpu(self, lines: int) -> float:
        return lines / self.cpu if self.cpu else 0.0


@dataclass
class Verdict:
    frames: int = 0
    good: int = 0
    duplicates: int = 0
    damaged: int = 0
    bytes: int = 0
    examples: list[str] = field(default_factory=list)


def count_line(verdict: Verdict, message: bytes, crcs: array.array[int], seen: bytearray) -> None:
    """Count one delivered line in ``verdict``: intact (its number's CRC matches) and new, a
    duplicate, or damaged (with the first few kept as examples)."""
    verdict.frames += 1
    try:
        number = int(message[message.rindex(b"seq") + 3 :].strip(b'":=}'))
        intact = 0 <= number < len(crcs) and zlib.crc32(message) == crcs[number]
    except ValueError:
        intact, number = False, -1
    if not intact:
        verdict.damaged += 1
        if len(verdict.examples) < 3:
            verdict.examples.append(repr(message[:120]))
    elif seen[number]:
        verdict.duplicates += 1
    else:
        seen[number] = 1
        verdict.good += 1


class Lines:
    """The lines a child process prints, read by one thread, handed out with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        stream = process.stdout
        assert stream is not None

        def read() -> None:
            for line in stream:
                self.queue.put(line)

        threading.Thread(target=read, name="receiver-output", daemon=True).start()

    def json(self, timeout: float) -> dict[str, Any] | None:
        """The next line as JSON, or ``None`` if none came within ``timeout``."""
        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        answer: dict[str, Any] = json.loads(line)
        return answer


def run_once(
    subject: Subject,
    path: Path,
    crcs: array.array[int],
    work: Path,
    timeout: float,
    *,
    receiver_module: str = "tests.support.syslogd",
    check: Check,
    during: Callable[[], None] | None = None,
    receivers: int = 1,
) -> Result:
    """One timed run of ``subject`` against fresh receivers (``receiver_module``, a module of
    ``tests.support``), then the untimed ``check`` of everything each received.

    With ``receivers`` > 1 the subject gets every receiver's port (``Subject.start_many``) and
    must deliver every line to each; the run ends when the last one has them all.
    ``during`` runs in a thread of its own from the moment the subject started (writers)."""
    lines = len(crcs)
    run = Path(tempfile.mkdtemp(prefix=f"{subject.name}-", dir=work))
    dumps = [run / f"streams-{n}" for n in range(receivers)]
    started_receivers: list[subprocess.Popen[str]] = []
    try:
        for dump in dumps:
            dump.mkdir()
            started_receivers.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", receiver_module, "receive"),
                        *("--expect", str(lines), "--dump", str(dump)),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        ports = []
        for receiver in started_receivers:
            assert receiver.stdout is not None
            ports.append(int(receiver.stdout.readline().split()[1]))
        outputs = [Lines(receiver) for receiver in started_receivers]
        if path.is_file():
            warm(path)
        started = time.monotonic()
        if receivers == 1:
            process = subject.start(path, ports[0], run)
        else:
            assert subject.start_many is not None, f"{subject.name} takes one receiver"
            process = subject.start_many(path, tuple(ports), run)
        if during is not None:
            threading.Thread(target=during, name="writers", daemon=True).start()
        done: dict[str, Any] | None = {}
        at_done: tuple[float, float] | None = None
        note = ""
        try:
            for output in outputs:  # the last "done" is when the run ended
                one, at_done, note = wait_done(subject, process, output, started + timeout)
                if one is None or done is None:
                    done = None
                    break
                done = one if float(one["done_at"]) > float(done.get("done_at", 0)) else done
        finally:
            cpu, rss = reap(process)
            if process.stdout is not None:  # the bare sender says its peak RSS (in KiB)
                rss = int(process.stdout.read() or 0) / 1024
                process.stdout.close()
        finals: list[dict[str, Any]] = []
        for receiver, output in zip(started_receivers, outputs, strict=True):
            receiver.send_signal(signal.SIGTERM)
            final: dict[str, Any] = {}
            while (said := output.json(30)) is not None:  # past a "done" not yet read
                if "frames" in said:
                    final = said
                    break
            finals.append(final)
        if done is None:
            note = note or f"timed out after {timeout:.0f} s"
            frames = ", ".join(f"{final.get('frames')}" for final in finals)
            return Result(
                False, note=f"{note}; {frames} of {lines} frames arrived; {tail(run, subject.name)}"
            )
        verdicts = [check(sorted(dump.iterdir()), crcs) for dump in dumps]
    finally:
        for receiver in started_receivers:
            if receiver.poll() is None:
                receiver.send_signal(signal.SIGTERM)
            receiver.wait(30)
        shutil.rmtree(run, ignore_errors=True)
    ok = all(v.good == lines and not v.duplicates and not v.damaged for v in verdicts)
    if not ok:
        note = "; ".join(
            f"{v.good} of {lines} lines intact, {v.duplicates} duplicates, "
            f"{v.damaged} damaged {v.examples}"
            for v in verdicts
        )
    if at_done is not None:
        cpu, rss = at_done
    return Result(
        ok,
        wall=float(done["done_at"]) - started,
        cpu=cpu,
        rss=rss,
        frame_bytes=sum(v.bytes for v in verdicts) / max(sum(v.frames for v in verdicts), 1),
        note=note,
    )


def wait_done(
    subject: Subject, process: subprocess.Popen[bytes], output: Lines, deadline: float
) -> tuple[dict[str, Any] | None, tuple[float, float] | None, str]:
    """The receiver's "done" line, the subject's (CPU s, peak RSS MB) at that moment if it
    still ran, and why there is no "done" line if there is none."""
    while time.monotonic() < deadline:
        done = output.json(0.2)
        if done is not None:
            return done, usage(process.pid), ""
        if not subject.exits and exited(process.pid):
            return None, None, f"{subject.name} exited before every line arrived"
    return None, None, ""


def usage(pid: int) -> tuple[float, float] | None:
    """CPU seconds and peak RSS (VmHWM, MB) of ``pid``'s tree now, or ``None`` if it exited."""
    if exited(pid):
        return None
    cpu = tree_cpu(pid)
    peak = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak += int(line.split()[1])
    return (cpu, peak / 1024) if cpu is not None and peak else None


def tail(run: Path, name: str) -> str:
    for log in sorted(run.glob("*.log")):
        text = log.read_text(errors="replace").strip().splitlines()[-5:]
        if text:
            return f"{log.name}: " + " | ".join(text)
    return f"no output from {name}"


def spread(values: list[float], fmt: str, unit: str = "") -> str:
    """Median (min-max)."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{fmt}}{unit}"
    mid = statistics.median(values)
    return f"{mid:{fmt}}{unit} ({min(values):{fmt}}-{max(values):{fmt}}{unit})"


def steal() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[7], sum(values)


def table(results: dict[str, list[Result]], lines: int) -> dict[str, dict[str, float]]:
    """Print one row per subject (medians, with min-max) and any notes; the medians of the
    subjects with at least one good run."""
    header = (
        f"{'subject':<14} {'ok':>4}  {'wall s':<20} {'CPU s':<20} {'lines/s':<22} "
        f"{'lines/CPU-s':<22} {'peak RSS MB':<20} {'B/frame':>7}"
    )
    print(header)
    print("-" * len(header))
    medians: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        good = [r for r in runs if r.ok]
        rates = [r.rate(lines) / 1000 for r in good]
        per_cpu = [r.per_cpu(lines) / 1000 for r in good]
        print(
            f"{name:<14} {len(good)}/{len(runs):<2}  "
            f"{spread([r.wall for r in good], '.2f'):<20} "
            f"{spread([r.cpu for r in good], '.2f'):<20} "
            f"{spread(rates, '.0f', 'k'):<22} {spread(per_cpu, '.0f', 'k'):<22} "
            f"{spread([r.rss for r in good], '.1f'):<20} "
            f"{statistics.median([r.frame_bytes for r in good]) if good else 0:>7.1f}"
        )
        for r in runs:
            if r.note:
                print(f"{'':<14} ! {r.note}")
        if good:
            medians[name] = {
                "per_cpu": statistics.median(r.per_cpu(lines) for r in good),
                "rss": statistics.median(r.rss for r in good),
                "wall": statistics.median(r.wall for r in good),
                "cpu": statistics.median(r.cpu for r in good),
            }
    print()
    return medians


def target(what: str, value: float, bound: float, unit: str, *, most: bool = False) -> list[str]:
    """Print ``what`` against its target (at least ``bound``, or at most with ``most``); the
    miss, if it is one, as a one-element list."""
    ok = value <= bound if most else value >= bound
    shown = f"{value:.2f}{unit}" if value < 10 else f"{value:,.1f}{unit}"
    line = f"{what}: {shown} (target {'<=' if most else '>='} {bound:,}{unit})"
    print(("  " if ok else "  MISSED ") + line)
    return [] if ok else [line]


def rounds(
    subjects: list[Subject],
    repeat: int,
    run: Callable[[Subject], Result],
) -> dict[str, list[Result]]:
    """``repeat`` rounds of every subject, interleaved, each result printed as it comes."""
    results: dict[str, list[Result]] = {s.name: [] for s in subjects}
    for number in range(repeat):
        for subject in subjects:
            result = run(subject)
            results[subject.name].append(result)
            print(
                f"  round {number + 1} {subject.name:<14} {'ok' if result.ok else 'FAILED':<6} "
                f"wall {result.wall:6.2f} s  CPU {result.cpu:6.2f} s  RSS {result.rss:5.1f} MB",
                flush=True,
            )
    return results
