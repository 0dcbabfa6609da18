"""At least once under chaos with two sinks and a routing rule: no line lost on either.

A writer appends 300,000 numbered lines, rotating every 50,000 (rename and copytruncate in
turn). The agent parses each line with a regex that takes the number's last digit as the field
``digit`` and ships to two local NDJSON receivers: ``everything`` gets every line, ``fives`` only
the lines whose number ends in 0 or 5 (``match: {fields: {digit: [0, 5]}}``). Meanwhile the agent
is SIGKILLed twice and restarted, and each receiver in turn stops listening for a few seconds.
At the end every line must have reached ``everything``, every fifth line ``fives`` and no other
line ``fives``; first arrivals are in order within each file. A crash replays what was read and
not committed, at most ``max_lead`` bytes (while one sink is down the other runs ahead of the
committed offsets by up to that much), so duplicates stay within ``max_lead`` per crash plus one
request per outage.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.agents.logs.sequences import SequenceReceiver
from tests.agents.logs.test_chaos import _agent_notes
from tests.agents.logs.test_routed_agent import RoutedAgent

TOTAL = 300_000
EVERY = 50_000
RATE = 40_000.0
KILLS = 2
MAX_LEAD = 2 << 20
SHORTEST_LINE = 40
"""Bytes of the writer's shortest line (``seq=NNNNNNN level=info`` and four short words)."""


def test_every_line_reaches_each_of_its_sinks_through_rotations_kills_and_outages(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    rng = random.Random(2027)
    with (
        SequenceReceiver(TOTAL, EVERY) as everything,
        SequenceReceiver(TOTAL, EVERY) as fives,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        agent = RoutedAgent(
            tmp_path,
            {
                "paths": str(folder / "app.log*"),
                "parser": {"format": "regex", "regex": r"^(?P<message>seq=\d{6}(?P<digit>\d) .*)$"},
                "offsets_dir": str(tmp_path / "state"),
                "batch_bytes": 65536,
                "batch_wait": "200ms",
                "max_inflight": 1048576,
                "max_lead": MAX_LEAD,
                "sinks": {
                    "everything": {"kind": "http", "endpoint": f"{everything.url}/ingest"},
                    "fives": {
                        "kind": "http",
                        "endpoint": f"{fives.url}/ingest",
                        "match": {"fields": {"digit": [0, 5]}},
                    },
                },
            },
            log,
        )
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
            + [(span * 0.3, "outage everything"), (span * 0.6, "outage fives")]
        )
        began = time.monotonic()
        kills = outages = 0
        try:
            for at, what in events:
                time.sleep(max(0.0, began + at - time.monotonic()))
                if what == "kill":
                    agent.proc.kill()
                    agent.proc.wait(10)
                    kills += 1
                    agent.proc = agent.spawn()
                else:
                    receiver = everything if what.endswith("everything") else fives
                    receiver.down()
                    outages += 1
                    restore = threading.Timer(3.0, receiver.up)
                    restore.start()
                    restore.join()
            assert writer.wait(120) == 0
            deadline = time.monotonic() + 120
            while (
                everything.unique < TOTAL or fives.unique < TOTAL // 5
            ) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            returncode = agent.stop()
            writer.kill()
            writer.wait()
        notes = _agent_notes(tmp_path / "agent.log")
        missing = [n for n in range(TOTAL) if everything.counts[n] == 0]
        missing_fives = [n for n in range(0, TOTAL, 5) if fives.counts[n] == 0]
        strays = [n for n in range(TOTAL) if n % 5 and fives.counts[n]]
        print(
            f"everything: received {everything.received}, unique {everything.unique}; "
            f"fives: received {fives.received}, unique {fives.unique}; kills {kills}, "
            f"outages {outages}"
        )
        assert kills == KILLS
        assert outages == 2
        assert not missing, f"{len(missing)} lines never reached everything: {missing[:5]}{notes}"
        assert not missing_fives, f"{len(missing_fives)} never reached fives: {missing_fives[:5]}"
        assert not strays, f"lines the rule does not take reached fives: {strays[:5]}"
        assert everything.bad == fives.bad == 0
        assert everything.out_of_order == fives.out_of_order == 0
        for receiver, share in ((everything, 1), (fives, 5)):
            duplicates = receiver.received - receiver.unique
            replayed = kills * MAX_LEAD // SHORTEST_LINE // share
            assert duplicates <= replayed + outages * receiver.largest_request, notes
        assert returncode == 0
