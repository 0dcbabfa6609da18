"""Routing in the agent process: named sinks with rules, against real receivers on loopback.

The agent reads a YAML config with a ``sinks:`` mapping; each sink is a local NDJSON receiver
that counts numbered lines (``SequenceReceiver``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from sidecarkit.agents.logs import offsets
from tests.agents.logs.agentproc import numbered, wait_for
from tests.agents.logs.sequences import SequenceReceiver
from tests.support.receivers.elasticsearch import ElasticsearchReceiver
from tests.support.receivers.ndjson import NdjsonReceiver
from tests.support.webhooks import free_port


class RoutedAgent:
    """``sidecarkit agent logs --config`` with ``config`` (JSON is YAML) on a free port."""

    def __init__(self, tmp: Path, config: dict[str, Any], log: IO[bytes]) -> None:
        self.port = free_port()
        path = tmp / "logs.yaml"
        path.write_text(json.dumps({**config, "port": self.port}))
        self.args = [sys.executable, "-m", "sidecarkit", "agent", "logs", "--config", str(path)]
        self.log = log
        self.proc = self.spawn()

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log)

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        return {
            name: float(value)
            for name, _, value in (
                line.rpartition(" ") for line in text.splitlines() if not line.startswith("#")
            )
            if name
        }

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _missing(receiver: SequenceReceiver, numbers: range) -> list[int]:
    return [n for n in numbers if receiver.counts[n] == 0]


def _offsets_at_end(store: offsets.OffsetStore, files: list[Path]) -> bool:
    saved = {e.get("path"): e.get("offset") for e in store.load().get("default", [])}
    return all(saved.get(str(f)) == f.stat().st_size for f in files)


def _stalled_config(tmp_path: Path, healthy: str, stalled: str) -> dict[str, Any]:
    """``everything`` takes every line; ``audit`` only audit.log's. ``everything`` is the one
    that stalls: reading all of both files needs many times ``max_lead``."""
    logs = tmp_path / "logs"
    return {
        "sources": [{"name": "default", "paths": str(logs / "*.log")}],
        "offsets_dir": str(tmp_path / "state"),
        "batch_bytes": 32768,
        "batch_wait": "100ms",
        "max_inflight": 262144,
        "max_lead": STALL_LEAD,
        "spool_after": "1s",
        "sinks": {
            "everything": {"kind": "http", "endpoint": f"{stalled}/ingest"},
            "audit": {
                "kind": "http",
                "endpoint": f"{healthy}/ingest",
                "match": {"files": "*/audit.log"},
            },
        },
    }


STALL_LEAD = 1 << 20
STALL_TOTAL, STALL_SEGMENT = 120_000, 10_000
"""Lines written while the catch-all sink is down (about 5 MB, five times ``max_lead``), in
segments of 10,000 alternating between audit.log (even segments) and app.log (odd ones)."""


def _write_segments(logs: Path, first_segment: int, last_segment: int) -> None:
    for segment in range(first_segment, last_segment):
        name = "audit.log" if segment % 2 == 0 else "app.log"
        with (logs / name).open("ab") as f:
            for first in range(segment * STALL_SEGMENT, (segment + 1) * STALL_SEGMENT, 1000):
                f.write(numbered(first, 1000))


def _audit_numbers() -> list[int]:
    return [
        n
        for segment in range(0, STALL_TOTAL // STALL_SEGMENT, 2)
        for n in range(segment * STALL_SEGMENT, (segment + 1) * STALL_SEGMENT)
    ]


def test_a_sink_stalled_far_past_max_lead_does_not_stop_the_others_and_gets_every_line_once_when_back(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    segments = STALL_TOTAL // STALL_SEGMENT
    audit_numbers = _audit_numbers()
    with (
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as audit,
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as everything,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        agent = RoutedAgent(tmp_path, _stalled_config(tmp_path, audit.url, everything.url), log)
        try:
            _write_segments(logs, 0, 2)
            assert wait_for(lambda: everything.unique == 2 * STALL_SEGMENT, 30)
            assert wait_for(lambda: audit.unique == STALL_SEGMENT, 10)
            assert sum(audit.counts[STALL_SEGMENT : 2 * STALL_SEGMENT]) == 0, "app.log: not audit"

            everything.down()
            before = everything.unique
            _write_segments(logs, 2, segments)
            # The healthy sink gets every audit line although reading them all means reading
            # about five times max_lead past the stalled sink's oldest batch.
            assert wait_for(lambda: audit.unique == len(audit_numbers), 90), (
                f"the healthy sink stopped with the stalled one at {audit.unique} lines"
            )
            assert everything.unique == before, "the stalled sink was down"
            store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
            files = [logs / "audit.log", logs / "app.log"]
            assert wait_for(lambda: _offsets_at_end(store, files), 10), (
                "offsets wait for the stalled sink although its batches are spooled"
            )
            samples = agent.metrics()
            assert samples['sidecarkit_logs_sink_pending_bytes{sink="everything"}'] > STALL_LEAD
            assert samples['sidecarkit_logs_sink_pending_bytes{sink="audit"}'] == 0
            assert any((tmp_path / "state" / "spool" / "everything").iterdir())

            everything.up()
            assert wait_for(lambda: everything.unique == STALL_TOTAL, 90), (
                f"{len(_missing(everything, range(STALL_TOTAL)))} lines missing on everything"
            )
            assert wait_for(
                lambda: not any((tmp_path / "state" / "spool" / "everything").iterdir()), 10
            ), "the spool is emptied once its sink took it"
        finally:
            assert agent.stop() == 0
        assert list(everything.counts) == [1] * STALL_TOTAL, "every line exactly once"
        assert [audit.counts[n] for n in audit_numbers] == [1] * len(audit_numbers)
        assert audit.received == len(audit_numbers), "only audit.log went to the audit sink"
        assert everything.out_of_order == 0
        assert audit.out_of_order == 0
        assert _offsets_at_end(store, files)
    said = (tmp_path / "agent.log").read_text()
    assert "spooling its batches" in said


def test_a_full_spool_brings_back_the_pause_for_every_sink_and_loses_nothing(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    audit_numbers = _audit_numbers()
    limit = 256 << 10
    with (
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as audit,
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as everything,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        config = _stalled_config(tmp_path, audit.url, everything.url)
        agent = RoutedAgent(tmp_path, {**config, "spool_max": limit}, log)
        spool = tmp_path / "state" / "spool" / "everything"
        try:
            _write_segments(logs, 0, 2)
            assert wait_for(lambda: everything.unique == 2 * STALL_SEGMENT, 30)
            everything.down()
            _write_segments(logs, 2, STALL_TOTAL // STALL_SEGMENT)
            assert wait_for(lambda: spool.is_dir() and any(spool.iterdir()), 60)
            settled = -1
            for _ in range(30):  # until two looks 2 s apart agree, at most a minute
                if audit.unique == settled:
                    break
                settled = audit.unique
                time.sleep(2.0)
            assert audit.unique == settled, "the healthy sink never settled"
            assert audit.unique < len(audit_numbers), "a full spool pauses reading for all"
            stored = sum(f.stat().st_size for f in spool.iterdir())
            assert limit <= stored <= limit + (256 << 10), "the spool stops near spool_max"
            everything.up()
            assert wait_for(lambda: everything.unique == STALL_TOTAL, 90), (
                f"{len(_missing(everything, range(STALL_TOTAL)))} lines missing on everything"
            )
            assert wait_for(lambda: audit.unique == len(audit_numbers), 30)
        finally:
            assert agent.stop() == 0
        assert list(everything.counts) == [1] * STALL_TOTAL, "every line exactly once"
        assert audit.received == len(audit_numbers)
        assert everything.out_of_order == 0
        assert not any(spool.iterdir())


def test_a_spooled_sink_sent_elsewhere_by_a_reload_delivers_its_spool_to_the_new_endpoint(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    with (
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as audit,
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as everything,
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as moved,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        config = _stalled_config(tmp_path, audit.url, everything.url)
        agent = RoutedAgent(tmp_path, config, log)
        spool = tmp_path / "state" / "spool" / "everything"
        try:
            _write_segments(logs, 0, 2)
            assert wait_for(lambda: everything.unique == 2 * STALL_SEGMENT, 30)
            everything.down()
            _write_segments(logs, 2, 8)
            assert wait_for(lambda: spool.is_dir() and len(list(spool.iterdir())) > 10, 60)
            sinks = {**config["sinks"], "everything": {"kind": "http"}}
            sinks["everything"]["endpoint"] = f"{moved.url}/ingest"
            (tmp_path / "logs.yaml").write_text(
                json.dumps({**config, "sinks": sinks, "port": agent.port})
            )
            agent.proc.send_signal(signal.SIGHUP)
            _write_segments(logs, 8, STALL_TOTAL // STALL_SEGMENT)

            def both() -> int:
                return sum(
                    1 for a, b in zip(everything.counts, moved.counts, strict=True) if a or b
                )

            assert wait_for(lambda: both() == STALL_TOTAL, 90), (
                f"{STALL_TOTAL - both()} lines reached neither endpoint"
            )
            assert wait_for(lambda: not any(spool.iterdir()), 10)
        finally:
            assert agent.stop() == 0
        combined = [a + b for a, b in zip(everything.counts, moved.counts, strict=True)]
        assert combined == [1] * STALL_TOTAL, "every line once, on the old or the new endpoint"
        assert moved.out_of_order == 0
        assert everything.unique == 2 * STALL_SEGMENT, "the old endpoint stayed down"
    said = (tmp_path / "agent.log").read_text()
    assert "config reloaded (SIGHUP)" in said
    assert "spooling its batches" in said


def test_a_spooled_sink_a_reload_removes_gives_its_spool_up_after_drain_timeout_counted(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    audit_numbers = _audit_numbers()
    with (
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as audit,
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as everything,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        config = {**_stalled_config(tmp_path, audit.url, everything.url), "drain_timeout": "2s"}
        agent = RoutedAgent(tmp_path, config, log)
        spool = tmp_path / "state" / "spool" / "everything"
        try:
            _write_segments(logs, 0, 2)
            assert wait_for(lambda: everything.unique == 2 * STALL_SEGMENT, 30)
            everything.down()
            _write_segments(logs, 2, 8)
            assert wait_for(lambda: spool.is_dir() and len(list(spool.iterdir())) > 10, 60)
            sinks = {"audit": config["sinks"]["audit"]}
            (tmp_path / "logs.yaml").write_text(
                json.dumps({**config, "sinks": sinks, "port": agent.port})
            )
            agent.proc.send_signal(signal.SIGHUP)
            _write_segments(logs, 8, STALL_TOTAL // STALL_SEGMENT)
            assert wait_for(lambda: audit.unique == len(audit_numbers), 60)
            assert wait_for(lambda: not any(spool.iterdir()), 30), "the spool is given up"
            dropped = agent.metrics()['sidecarkit_logs_events_dropped_total{sink="everything"}']
        finally:
            assert agent.stop() == 0
        assert everything.unique == 2 * STALL_SEGMENT
        assert dropped > 0, "what the removed sink did not take is counted"
        assert audit.received == len(audit_numbers)
        store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
        assert _offsets_at_end(store, [logs / "audit.log", logs / "app.log"])


def test_an_agent_killed_while_a_sink_is_spooled_sends_the_spool_after_a_restart_with_bounded_duplicates(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    segments = STALL_TOTAL // STALL_SEGMENT
    audit_numbers = _audit_numbers()
    lead_lines = STALL_LEAD // len(numbered(0, 1))
    with (
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as audit,
        SequenceReceiver(STALL_TOTAL, STALL_SEGMENT) as everything,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        agent = RoutedAgent(tmp_path, _stalled_config(tmp_path, audit.url, everything.url), log)
        spool = tmp_path / "state" / "spool" / "everything"
        try:
            _write_segments(logs, 0, 2)
            assert wait_for(lambda: everything.unique == 2 * STALL_SEGMENT, 30)
            everything.down()
            _write_segments(logs, 2, 8)
            assert wait_for(lambda: spool.is_dir() and len(list(spool.iterdir())) > 10, 60)
            agent.proc.kill()  # SIGKILL while the stalled sink's batches are spooled
            agent.proc.wait()
            agent.proc = agent.spawn()
            _write_segments(logs, 8, segments)
            assert wait_for(lambda: audit.unique == len(audit_numbers), 90), (
                f"after the restart the healthy sink stopped at {audit.unique} lines"
            )
            everything.up()
            assert wait_for(lambda: everything.unique == STALL_TOTAL, 90), (
                f"{len(_missing(everything, range(STALL_TOTAL)))} lines missing on everything"
            )
            assert wait_for(lambda: not any(spool.iterdir()), 10)
        finally:
            assert agent.stop() == 0
        # What a restart may send again: what was read past the committed offsets (max_lead)
        # and, on the spooled sink, the batch it was sending.
        bound = lead_lines + 32768 // len(numbered(0, 1)) + 1000
        assert everything.received - STALL_TOTAL <= bound, "duplicates beyond what a crash replays"
        assert audit.received - len(audit_numbers) <= bound
        assert audit.received == sum(audit.counts[n] for n in audit_numbers)
        store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
        assert _offsets_at_end(store, [logs / "audit.log", logs / "app.log"])
    said = (tmp_path / "agent.log").read_text()
    assert "batches to send from the last run" in said, "the restart found the spool"


def test_records_a_sink_refuses_are_counted_and_logged_with_a_sample_and_never_block_the_others(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    total = 5_000
    tens = set(range(0, total, 10))

    def every_tenth(index: str, doc_id: str, source: dict[str, Any]) -> bool:
        return int(str(source["message"])[4:11]) in tens

    with (
        SequenceReceiver(total, total) as everything,
        NdjsonReceiver() as picky,
        ElasticsearchReceiver() as es,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        picky.fail_next(10**6, 400, body=b"field 'seq' is not allowed here")
        es.fail_items(every_tenth, 400, "mapper_parsing_exception", requests=None)
        agent = RoutedAgent(
            tmp_path,
            {
                "paths": str(logs / "*.log"),
                "offsets_dir": str(tmp_path / "state"),
                "batch_bytes": 32768,
                "batch_wait": "100ms",
                "sinks": {
                    "everything": {"kind": "http", "endpoint": f"{everything.url}/ingest"},
                    "picky": {"kind": "http", "endpoint": f"{picky.url}/ingest"},
                    "es": {"kind": "elasticsearch", "endpoint": es.url},
                },
            },
            log,
        )
        app = logs / "app.log"
        try:
            app.write_bytes(numbered(0, total))
            assert wait_for(lambda: everything.unique == total, 30)
            assert wait_for(lambda: len(es.docs("logs-sidecarkit")) == total - len(tens), 30)
            store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
            assert wait_for(
                lambda: store.load().get("app", [{}])[0].get("offset") == app.stat().st_size, 10
            ), "offsets move although two sinks refused records"
            requests = picky.requests
            time.sleep(1.5)
            assert picky.requests == requests, "refused records are not sent again"
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    refused = 'sidecarkit_logs_events_rejected_total{sink="%s",reason="%s"}'
    assert samples[refused % ("picky", "http 400")] == total
    assert samples[refused % ("es", "mapper_parsing_exception")] == len(tens)
    assert samples['sidecarkit_logs_events_shipped_total{sink="everything"}'] == total
    said = (tmp_path / "agent.log").read_text()
    assert "sink picky refused" in said
    assert "field 'seq' is not allowed here" in said
    assert f"e.g. {app}:1: 'seq=0000000 level=info a numbered line'" in said
    assert "sink es refused" in said
    assert "mapper_parsing_exception" in said
    assert said.count("sink picky refused") <= 2, "one warning per sink every 10 s"
