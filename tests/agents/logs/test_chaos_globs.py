"""At least once when the glob names only the live files: every rotation, outage and crash at once.

Two writer processes append 1,000,000 numbered lines in all to ``app.log`` (600,000, rotated
every 50,000 lines, by rename and by copytruncate in turn) and ``web.log`` (400,000, renamed
away every 20,000 lines, so files are created and rotated away during the outages). The agent
follows ``*.log``, which never matches a rotated name (``app.log.3``): whatever it has not read
when a file leaves the glob it must read by descriptor, by inode, or from the copy. Meanwhile it
is SIGKILLed three times and the receiver goes away for 4 s, twice. The writers copy and then
truncate with nothing written in between, so logrotate's copytruncate window is empty and no
line may be missing; duplicates stay within one request per crash or outage, and the loss
counters stay at 0 (nothing was undeliverable).
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.agents.logs.agentproc import AgentProcess
from tests.agents.logs.sequences import SequenceReceiver

APP, WEB = 600_000, 400_000
TOTAL = APP + WEB
SEGMENT = 10_000
"""First arrivals must be in order within each run of this many numbers (one file's share)."""
SPAN = 17.0
"""Seconds the writers take."""
KILLS = 3
OUTAGES = 2


def _writer(folder: Path, total: int, every: int, mode: str, first: int, name: str) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).with_name("writer.py")),
        str(folder),
        str(total),
        str(every),
        str(total / SPAN),
        mode,
        str(first),
        name,
    ]


def _ranges(numbers: list[int]) -> str:
    out: list[list[int]] = []
    for n in numbers:
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(f"{a}-{b}" for a, b in out[:20])


def test_every_line_arrives_when_rotated_files_leave_the_glob_under_kills_and_outages(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    rng = random.Random(11)
    with SequenceReceiver(TOTAL, SEGMENT) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(
            str(folder / "*.log"),
            receiver.url,
            tmp_path / "state",
            log,
            "--batch-bytes",
            "65536",
            "--batch-wait",
            "0.2",
            "--max-inflight",
            "1048576",
            "--log-level",
            "debug",
        )
        agent.wait_ready()
        writers = [
            subprocess.Popen(
                _writer(folder, APP, 50_000, "alternate", 0, "app.log"),
                stdout=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                _writer(folder, WEB, 20_000, "rename", APP, "web.log"),
                stdout=subprocess.DEVNULL,
            ),
        ]
        events = sorted(
            [(rng.uniform(1.0, SPAN - 1.0), "kill") for _ in range(KILLS)]
            + [(SPAN * (i + 1) / (OUTAGES + 2), "outage") for i in range(OUTAGES)]
        )
        began = time.monotonic()
        kills = outages = 0
        restore: threading.Timer | None = None
        samples: dict[str, float] = {}
        try:
            for at, what in events:
                time.sleep(max(0.0, began + at - time.monotonic()))
                if what == "kill":
                    agent.kill()
                    kills += 1
                    agent.restart()
                else:
                    receiver.down()
                    outages += 1
                    restore = threading.Timer(4.0, receiver.up)
                    restore.start()
                    restore.join()
            for writer in writers:
                assert writer.wait(120) == 0
            deadline = time.monotonic() + 120
            while receiver.unique < TOTAL and time.monotonic() < deadline:
                time.sleep(0.2)
            agent.wait_ready()
            samples = agent.metrics()
        finally:
            if restore is not None:
                restore.cancel()
            code = agent.stop()
            for writer in writers:
                writer.kill()
                writer.wait()
    missing = [n for n in range(TOTAL) if receiver.counts[n] == 0]
    duplicates = receiver.received - receiver.unique
    said = (tmp_path / "agent.log").read_text().splitlines()
    notes = "\nagent log:\n" + "\n".join(line for line in said if "logs agent" not in line)[-4000:]
    print(
        f"received {receiver.received}, unique {receiver.unique}, duplicates {duplicates}, "
        f"largest request {receiver.largest_request} lines, kills {kills}, outages {outages}"
    )
    assert (kills, outages) == (KILLS, OUTAGES)
    assert not missing, f"{len(missing)} lines never arrived: {_ranges(missing)}{notes}"
    assert receiver.bad == 0
    assert receiver.out_of_order == 0, "first arrivals out of order within a file"
    assert duplicates <= (kills + outages) * receiver.largest_request, (
        f"{duplicates} duplicates: more than one request per crash or outage{notes}"
    )
    lost = sum(v for k, v in samples.items() if k.startswith("sidecarkit_logs_lost_bytes_total"))
    assert lost == 0, f"{lost} bytes counted lost though every line arrived{notes}"
    assert code == 0
