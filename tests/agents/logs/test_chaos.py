"""At least once under chaos: rotations both ways, SIGKILLs, and a receiver that goes away.

A writer process appends 1,000,000 numbered lines, rotating every 50,000 (rename and
copytruncate, alternately). The agent follows ``app.log*`` and ships to an HTTP NDJSON receiver
over loopback. Meanwhile it is SIGKILLed three times at random points and restarted, and the
receiver stops listening for several seconds, twice. At the end every number must have arrived,
the first arrival of each number must be in order within the file it was written to, and the
duplicates must stay within one request per crash or outage.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from tests.agents.logs.sequences import SequenceReceiver

TOTAL = 1_000_000
EVERY = 50_000
RATE = 60_000.0
KILLS = 3
OUTAGES = 2


def _agent(folder: Path, url: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "agent",
            "logs",
            "--paths",
            str(folder / "app.log*"),
            "--sink",
            f"http={url}/ingest",
            "--offsets-dir",
            str(folder / ".state"),
            "--port",
            "0",
            "--batch-bytes",
            "65536",
            "--batch-wait",
            "0.2",
            "--max-inflight",
            "1048576",
            "--log-level",
            "info",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def _agent_notes(path: Path) -> str:
    """What the agents said about rotations, restarts and sinks: the story behind a failure."""
    said = [line for line in path.read_text().splitlines() if "logs agent" not in line]
    return "\nagent log:\n" + "\n".join(said[-40:])


def _duplicates_by_segment(receiver: SequenceReceiver) -> dict[int, int]:
    found: dict[int, int] = {}
    for n, count in enumerate(receiver.counts):
        if count > 1:
            found[n // EVERY] = found.get(n // EVERY, 0) + count - 1
    return found


def test_every_line_arrives_through_rotations_kills_and_outages(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    rng = random.Random(2026)
    with SequenceReceiver(TOTAL, EVERY) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = _agent(folder, receiver.url, log)
        writer = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("writer.py")),
                str(folder),
                str(TOTAL),
                str(EVERY),
                str(RATE),
            ],
            stdout=subprocess.PIPE,
        )
        span = TOTAL / RATE
        events = sorted(
            [(rng.uniform(1.0, span - 1.0), "kill") for _ in range(KILLS)]
            + [(span * (i + 1) / (OUTAGES + 2), "outage") for i in range(OUTAGES)]
        )
        began = time.monotonic()
        kills = outages = 0
        restore: threading.Timer | None = None
        try:
            for at, what in events:
                time.sleep(max(0.0, began + at - time.monotonic()))
                if what == "kill":
                    agent.send_signal(signal.SIGKILL)
                    agent.wait(10)
                    kills += 1
                    agent = _agent(folder, receiver.url, log)
                else:
                    receiver.down()
                    outages += 1
                    restore = threading.Timer(4.0, receiver.up)
                    restore.start()
                    restore.join()
            assert writer.wait(120) == 0
            deadline = time.monotonic() + 120
            while receiver.unique < TOTAL and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            if restore is not None:
                restore.cancel()
            agent.send_signal(signal.SIGTERM)
            agent.wait(60)
            writer.kill()
            writer.wait()
        missing = [n for n in range(TOTAL) if receiver.counts[n] == 0]
        duplicates = receiver.received - receiver.unique
        print(
            f"received {receiver.received}, unique {receiver.unique}, duplicates {duplicates}, "
            f"largest request {receiver.largest_request} lines, kills {kills}, "
            f"outages {outages}, rotated files {len(os.listdir(folder)) - 2}"
        )
        assert kills == KILLS
        assert outages == OUTAGES
        notes = _agent_notes(tmp_path / "agent.log")
        assert not missing, f"{len(missing)} lines never arrived, first {missing[:5]}{notes}"
        assert receiver.bad == 0
        assert receiver.out_of_order == 0, "first arrivals out of order within a file"
        assert duplicates <= (kills + outages) * receiver.largest_request, (
            f"{duplicates} duplicates: more than one request per crash or outage; "
            f"by file segment: {_duplicates_by_segment(receiver)}{notes}"
        )
        assert agent.returncode == 0
