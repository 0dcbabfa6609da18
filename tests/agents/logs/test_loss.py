"""No line lost without a word: outages, rotations the glob does not follow, restarts.

Each test runs the agent as a process, writes numbered lines to real files, and counts what a
local NDJSON receiver got (``SequenceReceiver``). Lines that cannot be read must show in the
agent's loss counters and log.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from sidecarkit.agents.logs import offsets
from tests.agents.logs.agentproc import AgentProcess, numbered, wait_for
from tests.agents.logs.sequences import SequenceReceiver
from tests.support.receivers.elasticsearch import ElasticsearchReceiver


def _missing(receiver: SequenceReceiver, numbers: range) -> list[int]:
    return [n for n in numbers if receiver.counts[n] == 0]


def _counter(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.split("{", 1)[0] == name)


def _saved_size(store: offsets.OffsetStore) -> int:
    return max((int(e.get("size", 0)) for e in store.load().get("app", [])), default=0)


def _shipped(agent: AgentProcess) -> float:
    return _counter(agent.metrics(), "sidecarkit_logs_events_shipped_total")


def test_a_file_created_and_rotated_away_during_an_outage_is_still_read(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    with SequenceReceiver(40_000, 10_000) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(
            str(logs / "*.log"),
            receiver.url,
            tmp_path / "state",
            log,
            "--max-inflight",
            "65536",
            "--batch-bytes",
            "16384",
        )
        try:
            (logs / "a.log").write_bytes(numbered(0, 1000))
            assert wait_for(lambda: receiver.unique == 1000, 30), "shipping before the outage"
            receiver.down()
            with (logs / "a.log").open("ab") as a:
                a.write(numbered(1000, 9000))  # far more than max_inflight: reading pauses
            time.sleep(1.0)
            (logs / "b.log").write_bytes(numbered(10_000, 5000))
            (logs / "c.log").write_bytes(numbered(20_000, 5000))
            time.sleep(1.5)
            os.rename(logs / "b.log", logs / "b.log.1")  # away from the glob
            os.unlink(logs / "c.log")  # deleted before a line of it was delivered
            time.sleep(0.5)
            receiver.up()
            wanted = [*range(10_000), *range(10_000, 15_000), *range(20_000, 25_000)]
            wait_for(lambda: receiver.unique >= len(wanted), 60)
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    missing = [n for n in wanted if receiver.counts[n] == 0]
    assert not missing, f"{len(missing)} lines never arrived, first {missing[:3]}"
    assert receiver.out_of_order == 0
    assert _counter(samples, "sidecarkit_logs_lines_read_total") >= len(wanted)
    assert _counter(samples, "sidecarkit_logs_lost_bytes_total") == 0


def test_a_renamed_file_is_read_while_the_app_still_writes_to_it(tmp_path: Path) -> None:
    """The glob names only the live file; the app goes on writing to the renamed one for a
    while (until it reopens its log), as most apps do after logrotate's rename."""
    logs = tmp_path / "logs"
    logs.mkdir()
    rounds, per_round = 3, 6000
    total = rounds * per_round
    with SequenceReceiver(total, per_round) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(str(logs / "app.log"), receiver.url, tmp_path / "state", log)
        try:
            agent.wait_ready()
            for r in range(rounds):
                first = r * per_round
                fd = os.open(logs / "app.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, numbered(first, 3000))
                time.sleep(0.6)
                os.rename(logs / "app.log", logs / f"app.log.{r + 1}")
                for burst in range(3):
                    time.sleep(0.7)  # the agent reaches the end of the file in between
                    os.write(fd, numbered(first + 3000 + burst * 1000, 1000))
                os.close(fd)
            wait_for(lambda: receiver.unique >= total, 30)
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    missing = _missing(receiver, range(total))
    assert not missing, f"{len(missing)} lines never arrived, first {missing[:3]}"
    assert receiver.out_of_order == 0
    assert _counter(samples, "sidecarkit_logs_lost_bytes_total") == 0


def test_a_file_renamed_away_from_the_glob_while_the_agent_was_down_is_finished(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    with SequenceReceiver(5000, 5000) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(str(logs / "*.log"), receiver.url, tmp_path / "state", log)
        try:
            (logs / "app.log").write_bytes(numbered(0, 1000))
            assert wait_for(lambda: receiver.unique == 1000, 30)
            time.sleep(1.5)  # the offsets are saved
            agent.kill()
            with (logs / "app.log").open("ab") as app:
                app.write(numbered(1000, 4000))
            os.rename(logs / "app.log", logs / "app.log.1")  # *.log no longer matches it
            agent.restart()
            wait_for(lambda: receiver.unique >= 5000, 30)
        finally:
            assert agent.stop() == 0
    missing = _missing(receiver, range(5000))
    assert not missing, f"{len(missing)} lines never arrived, first {missing[:3]}"
    assert receiver.out_of_order == 0


def test_a_file_deleted_while_the_agent_was_down_is_counted_as_lost_and_named(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    unread = numbered(1000, 1000)
    with SequenceReceiver(2000, 2000) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(str(logs / "*.log"), receiver.url, tmp_path / "state", log)
        try:
            (logs / "gone.log").write_bytes(numbered(0, 1000))
            assert wait_for(lambda: receiver.unique == 1000, 30)
            receiver.down()
            with (logs / "gone.log").open("ab") as app:
                app.write(unread)
            store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
            assert wait_for(lambda: _saved_size(store) >= 2 * len(unread), 20), (
                "the agent saves the size it saw the file grow to"
            )
            agent.kill()
            os.unlink(logs / "gone.log")
            receiver.up()
            agent.restart()
            agent.wait_ready()
            assert wait_for(
                lambda: _counter(agent.metrics(), "sidecarkit_logs_lost_bytes_total") > 0, 10
            )
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    assert _counter(samples, "sidecarkit_logs_lost_bytes_total") == len(unread)
    said = (tmp_path / "agent.log").read_text()
    assert "gone.log was deleted" in said
    assert "lost" in said


def test_lines_read_and_not_delivered_of_a_file_deleted_while_the_agent_was_down_are_lost_lines(
    tmp_path: Path,
) -> None:
    """The agent read 1,000 lines it could not deliver (the receiver was down), then was
    killed and the file deleted: those lines are lost, and their number is known."""
    logs = tmp_path / "logs"
    logs.mkdir()
    unread = numbered(1000, 1000)
    store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")

    def read_ahead() -> int:
        entries = store.load().get("app", [])
        return max((int(e["read"][1]) - int(e["line"]) for e in entries if "read" in e), default=0)

    with SequenceReceiver(2000, 2000) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(str(logs / "*.log"), receiver.url, tmp_path / "state", log)
        try:
            (logs / "gone.log").write_bytes(numbered(0, 1000))
            assert wait_for(lambda: receiver.unique == 1000, 30)
            receiver.down()
            with (logs / "gone.log").open("ab") as app:
                app.write(unread)
            assert wait_for(lambda: read_ahead() == 1000, 20), "the agent saves what it read"
            agent.kill()
            os.unlink(logs / "gone.log")
            receiver.up()
            agent.restart()
            agent.wait_ready()
            assert wait_for(
                lambda: _counter(agent.metrics(), "sidecarkit_logs_lost_bytes_total") > 0, 10
            )
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    assert _counter(samples, "sidecarkit_logs_lost_bytes_total") == len(unread)
    assert _counter(samples, "sidecarkit_logs_lost_lines_total") == 1000
    assert samples['sidecarkit_logs_losses_total{source="app",reason="deleted"}'] == 1


def test_elasticsearch_ids_stay_the_same_when_a_file_is_read_again_from_its_start(
    tmp_path: Path,
) -> None:
    """Nothing was committed (here: no offsets kept at all, as after a crash before the first
    save): the file is read again from 0 and every line must get the id it had, so that
    Elasticsearch refuses the copy (409) instead of storing every line twice."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(numbered(0, 500))
    with ElasticsearchReceiver() as es, (tmp_path / "agent.log").open("ab") as log:
        for run in (1, 2):
            agent = AgentProcess(
                str(logs / "*.log"), es.url, None, log, sink=f"elasticsearch={es.url}"
            )
            try:
                agent.wait_ready()
                shipped = wait_for(lambda a=agent: _shipped(a) >= 500, 30)  # type: ignore[misc]
            finally:
                assert agent.stop() == 0
            assert shipped, f"run {run}: the agent did not ship the file"
        docs = es.docs("logs-sidecarkit")
    assert len(docs) == 500, "the second run's lines got new ids"


class _TimedReceiver(SequenceReceiver):
    """Notes when each line from ``slow_from`` on first arrived."""

    def __init__(self, total: int, every: int, slow_from: int) -> None:
        super().__init__(total, every)
        self.slow_from = slow_from
        self.arrived: dict[int, float] = {}

    async def _ingest(self, request: web.Request, body: bytes) -> web.Response:
        now = time.monotonic()
        marker = b'"message":"seq='
        for line in body.split(b"\n"):
            at = line.find(marker)
            if at >= 0:
                n = int(line[at + len(marker) : at + len(marker) + 7])
                if n >= self.slow_from:
                    with self.lock:
                        self.arrived.setdefault(n, now)
        # A sink slower than the writer, as real ones are: the fast file's backlog then lasts
        # for the whole time the slow file is written, however fast the agent ships.
        await asyncio.sleep(0.03)
        return await super()._ingest(request, body)


def test_a_slow_files_lines_are_not_held_back_by_a_file_written_at_full_speed(
    tmp_path: Path,
) -> None:
    fast_total, slow_total = 600_000, 40
    (tmp_path / "logs" / "fast").mkdir(parents=True)
    (tmp_path / "logs" / "slow").mkdir()
    receiver = _TimedReceiver(fast_total + slow_total, fast_total, fast_total)
    with receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(
            str(tmp_path / "logs" / "*" / "app.log"), receiver.url, tmp_path / "state", log
        )
        written: dict[int, float] = {}
        writer = None
        try:
            agent.wait_ready()
            writer = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("writer.py")),
                    str(tmp_path / "logs" / "fast"),
                    str(fast_total),
                    str(fast_total),
                    "1e9",  # as fast as it can
                ],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(0.5)  # the fast file is followed first
            with (tmp_path / "logs" / "slow" / "app.log").open("ab", buffering=0) as slow:
                for n in range(fast_total, fast_total + slow_total):
                    written[n] = time.monotonic()
                    slow.write(numbered(n, 1, pad=400))
                    time.sleep(0.1)
            backlog = fast_total - receiver.unique
            wait_for(lambda: receiver.unique >= fast_total + slow_total, 120)
        finally:
            if writer is not None:
                writer.kill()
                writer.wait()
            assert agent.stop() == 0
    delays = sorted(receiver.arrived.get(n, float("inf")) - t for n, t in written.items())
    print(
        f"slow lines: median {delays[len(delays) // 2]:.2f} s, worst {delays[-1]:.2f} s, "
        f"while {backlog} fast lines were still to ship"
    )
    assert backlog > 0, "the fast file was still being shipped while the slow one was written"
    # 1 s on an idle machine (bench/logs.py); generous here, for a loaded CI box.
    assert delays[-1] < 5.0, f"a slow line waited {delays[-1]:.1f} s"


def test_more_files_than_the_open_files_limit_are_all_read(tmp_path: Path) -> None:
    """A container's usual soft limit is 1,024 descriptors; here 256 and 600 files."""
    logs = tmp_path / "logs"
    logs.mkdir()
    files, per_file = 600, 3
    for i in range(files):
        (logs / f"app-{i:04d}.log").write_bytes(numbered(i * per_file, per_file))
    total = files * per_file
    with SequenceReceiver(total, per_file) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(
            str(logs / "*.log"), receiver.url, tmp_path / "state", log, open_files=256
        )
        try:
            wait_for(lambda: receiver.unique >= total, 60)
            with (logs / "app-0000.log").open("ab") as first:  # closed while idle by now
                first.write(numbered(0, 1))
            wait_for(lambda: receiver.received > total, 20)
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    missing = _missing(receiver, range(total))
    assert not missing, f"{len(missing)} lines never arrived, first {missing[:3]}"
    assert receiver.received == total + 1, "a file closed while idle is read on when it grows"
    assert _counter(samples, "sidecarkit_logs_files_unreadable") == 0
    assert _counter(samples, "sidecarkit_logs_files") <= 256


def test_copytruncate_with_a_glob_naming_only_the_live_file_loses_nothing(tmp_path: Path) -> None:
    """The writer copies, then truncates, writing nothing in between: nothing is lost for
    anyone who reads the copy, and the agent reads what it had not read yet from there."""
    logs = tmp_path / "logs"
    logs.mkdir()
    total, every = 100_000, 10_000
    with SequenceReceiver(total, every) as receiver, (tmp_path / "agent.log").open("ab") as log:
        agent = AgentProcess(str(logs / "app.log"), receiver.url, tmp_path / "state", log)
        try:
            agent.wait_ready()
            writer = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).with_name("writer.py")),
                    str(logs),
                    str(total),
                    str(every),
                    "20000",
                    "copytruncate",
                ],
                stdout=subprocess.DEVNULL,
                timeout=120,
                check=True,
            )
            assert writer.returncode == 0
            wait_for(lambda: receiver.unique >= total, 60)
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    missing = _missing(receiver, range(total))
    assert not missing, f"{len(missing)} lines never arrived, first {missing[:3]}"
    assert _counter(samples, "sidecarkit_logs_truncations") == total // every - 1
    assert _counter(samples, "sidecarkit_logs_lost_bytes_total") == 0
