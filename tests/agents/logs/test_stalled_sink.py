"""A sink that stalls for a minute costs no memory and no lines: the file is the buffer.

The app keeps writing while the receiver is gone for 60 s. The agent's resident memory is
sampled all along and must stay under 64 MB; once the receiver is back, every line arrives.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.agents.logs.agentproc import wait_for
from tests.agents.logs.sequences import SequenceReceiver

TOTAL = 1_400_000
RATE = 20_000.0
STALL = 60.0
LIMIT_KB = 64 * 1024


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def test_rss_stays_bounded_while_the_sink_is_down_and_nothing_is_lost(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    with SequenceReceiver(TOTAL, TOTAL) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecarkit",
                "agent",
                "logs",
                "--paths",
                str(folder / "*"),
                "--sink",
                f"http={receiver.url}/ingest",
                "--offsets-dir",
                str(tmp_path / "state"),
                "--port",
                "0",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        writer = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("writer.py")),
                str(folder),
                str(TOTAL),
                str(TOTAL),
                str(RATE),
            ],
            stdout=subprocess.DEVNULL,
        )
        peak = 0
        try:
            # The agent and the writer start (seconds, on a busy machine) and lines flow.
            assert wait_for(lambda: receiver.unique > 0, 60), "shipping before the stall"
            receiver.down()
            stalled_at = receiver.received
            end = time.monotonic() + STALL
            while time.monotonic() < end:
                peak = max(peak, _rss_kb(agent.pid))
                time.sleep(0.25)
            assert receiver.received == stalled_at
            written = (folder / "app.log").stat().st_size
            receiver.up()
            deadline = time.monotonic() + 120
            while receiver.unique < TOTAL and time.monotonic() < deadline:
                peak = max(peak, _rss_kb(agent.pid))
                time.sleep(0.25)
            assert writer.wait(30) == 0
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(60)
            writer.kill()
            writer.wait()
        print(f"peak RSS {peak / 1024:.1f} MB; {written / 1e6:.0f} MB written during the stall")
        assert written > 50e6, "the app kept writing through the stall"
        assert 0 < peak < LIMIT_KB, f"peak RSS {peak / 1024:.1f} MB"
        missing = sum(1 for n in range(TOTAL) if receiver.counts[n] == 0)
        assert missing == 0, f"{missing} lines lost"
        assert receiver.out_of_order == 0
        assert agent.returncode == 0
