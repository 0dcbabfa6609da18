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


def test_lines_go_to_the_sinks_their_file_matches_and_a_stalled_sink_holds_back_only_after_a_bounded_lead(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    total, audit_lines = 120_000, 1_000
    lead = 1 << 20
    with (
        SequenceReceiver(total, audit_lines) as everything,
        SequenceReceiver(total, audit_lines) as audit,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        agent = RoutedAgent(
            tmp_path,
            {
                "paths": str(logs / "*.log"),
                "offsets_dir": str(tmp_path / "state"),
                "batch_bytes": 32768,
                "batch_wait": "100ms",
                "max_inflight": 262144,
                "max_lead": lead,
                "sinks": {
                    "everything": {"kind": "http", "endpoint": f"{everything.url}/ingest"},
                    "audit": {
                        "kind": "http",
                        "endpoint": f"{audit.url}/ingest",
                        "match": {"files": "*/audit.log"},
                    },
                },
            },
            log,
        )
        try:
            (logs / "audit.log").write_bytes(numbered(0, audit_lines // 2))
            (logs / "app.log").write_bytes(numbered(audit_lines, 1000))
            assert wait_for(lambda: everything.unique == audit_lines // 2 + 1000, 30)
            assert wait_for(lambda: audit.unique == audit_lines // 2, 10)
            assert audit.counts[audit_lines] == 0, "app.log lines do not go to the audit sink"

            audit.down()
            with (logs / "audit.log").open("ab") as f:
                f.write(numbered(audit_lines // 2, audit_lines // 2))
            before = everything.unique
            with (logs / "app.log").open("ab") as f:
                for first in range(audit_lines + 1000, total, 1000):
                    f.write(numbered(first, min(1000, total - first)))
            # The healthy sink keeps receiving, up to max_lead bytes past the stalled sink's
            # oldest batch, then reading pauses for both.
            assert wait_for(lambda: everything.unique - before > 10_000, 30), (
                "the healthy sink stopped with the stalled one"
            )
            settled = -1
            for _ in range(30):  # until two looks 2 s apart agree, at most a minute
                if everything.unique == settled:
                    break
                settled = everything.unique
                time.sleep(2.0)
            assert everything.unique == settled, "the healthy sink never settled"
            lead_lines = lead // len(numbered(0, 1))
            assert everything.unique - before <= lead_lines + 2000, "reading ran past max_lead"
            assert everything.unique < total, "back-pressure: the rest waits in the file"
            samples = agent.metrics()
            assert samples['sidecarkit_logs_sink_pending_bytes{sink="audit"}'] > 0
            assert samples['sidecarkit_logs_sink_lag_seconds{sink="audit"}'] > 1.0
            assert samples['sidecarkit_logs_sink_pending_bytes{sink="everything"}'] == 0

            audit.up()
            assert wait_for(lambda: everything.unique == total, 90), (
                f"{len(_missing(everything, range(total)))} lines missing on everything"
            )
            assert wait_for(lambda: audit.unique == audit_lines, 30)
        finally:
            assert agent.stop() == 0
        assert _missing(everything, range(total)) == []
        assert _missing(audit, range(audit_lines)) == []
        assert sum(audit.counts[audit_lines:]) == 0, "only audit.log went to the audit sink"
        assert everything.out_of_order == 0
        assert audit.out_of_order == 0


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
