"""Reloading the agent's config while lines flow: a real agent process, real files, real receivers.

The config lives in a directory laid out as the kubelet mounts a ConfigMap (``logs.yaml`` a
symlink to ``..data/logs.yaml``, ``..data`` a symlink swapped atomically to a new timestamped
directory on each update); reloads come from that swap and from SIGHUP. Every receiver counts
numbered lines (``SequenceReceiver``), so "exactly once" is checked line by line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from sidecarkit.agents.logs import offsets, reloading
from sidecarkit.agents.logs import settings as logs_settings
from tests.agents.logs.agentproc import numbered, wait_for
from tests.agents.logs.sequences import SequenceReceiver
from tests.support.webhooks import free_port


class ConfigMapDir:
    """A directory as the kubelet keeps a mounted ConfigMap: updates swap ``..data``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.version = 0
        self.path = root / "logs.yaml"

    def write(self, config: dict[str, Any]) -> None:
        self.version += 1
        stamp = self.root / f"..2026_12_04_00_00_{self.version:02d}.{os.getpid()}"
        stamp.mkdir()
        (stamp / "logs.yaml").write_text(json.dumps(config))
        link = self.root / "..data_tmp"
        link.symlink_to(stamp.name)
        link.rename(self.root / "..data")  # the atomic swap
        if not self.path.is_symlink():
            self.path.symlink_to("..data/logs.yaml")


class ReloadingAgent:
    """``sidecarkit agent logs --config DIR/logs.yaml`` on a free port."""

    def __init__(self, config: ConfigMapDir, log: IO[bytes]) -> None:
        self.port = free_port()
        self.config = config
        self.args = [
            sys.executable,
            "-m",
            "sidecarkit",
            "agent",
            "logs",
            "--config",
            str(config.path),
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log)

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

    def metric(self, name: str) -> float:
        try:
            return self.metrics().get(name, -1.0)
        except OSError:
            return -1.0

    def hangup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Writer(threading.Thread):
    """Writes numbered lines in chunks, alternating between two files: ``audit.log`` gets the
    numbers below ``split``, ``app.log`` the rest, both at a pace that ends them together."""

    def __init__(self, logs: Path, split: int, total: int, chunk: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.logs, self.split, self.total, self.chunk, self.pause = (
            logs,
            split,
            total,
            chunk,
            pause,
        )
        self.written = 0

    def run(self) -> None:
        audit, app = 0, self.split
        with (self.logs / "audit.log").open("ab") as a, (self.logs / "app.log").open("ab") as b:
            while audit < self.split or app < self.total:
                if audit < self.split:
                    share = self.chunk * self.split // (self.total - self.split)
                    n = min(max(1, share), self.split - audit)
                    a.write(numbered(audit, n))
                    a.flush()
                    audit += n
                if app < self.total:
                    n = min(self.chunk, self.total - app)
                    b.write(numbered(app, n))
                    b.flush()
                    app += n
                self.written = audit + app - self.split
                time.sleep(self.pause)


def _http(receiver: SequenceReceiver, **more: Any) -> dict[str, Any]:
    return {"kind": "http", "endpoint": f"{receiver.url}/ingest", **more}


def _suffix(receiver: SequenceReceiver, numbers: range) -> tuple[int, list[int]]:
    """Where ``receiver``'s lines of ``numbers`` start, and the ones after that it lacks or got
    more than once: a sink added by a reload gets each later line once, none missing."""
    got = [n for n in numbers if receiver.counts[n]]
    if not got:
        return len(numbers), []
    return got[0], [n for n in range(got[0], numbers.stop) if receiver.counts[n] != 1]


def test_lines_written_across_reloads_reach_every_route_exactly_once_and_a_bad_config_is_refused(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    split, total = 20_000, 80_000
    config = ConfigMapDir(tmp_path / "config")
    base: dict[str, Any] = {
        "paths": str(logs / "*.log"),
        "offsets_dir": str(tmp_path / "state"),
        "batch_bytes": 65536,
        "batch_wait": "100ms",
    }
    with (
        SequenceReceiver(total, total) as everything,
        SequenceReceiver(total, total) as audit,
        SequenceReceiver(total, total) as late,
        SequenceReceiver(total, total) as mirror_old,
        SequenceReceiver(total, total) as mirror_new,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        first = {
            **base,
            "sinks": {
                "everything": _http(everything),
                "audit": _http(audit, match={"files": "*/audit.log"}),
                "mirror": _http(mirror_old),
            },
        }
        config.write(first)
        agent = ReloadingAgent(config, log)
        writer = Writer(logs, split, total, chunk=200, pause=0.02)
        try:
            assert wait_for(
                lambda: agent.metric("sidecarkit_logs_config_last_reload_successful") == 1, 30
            )
            writer.start()

            # 1. A ConfigMap update: a sink added, a stage added.
            assert wait_for(lambda: writer.written >= 15_000, 60)
            second = {
                **first,
                "sinks": {**first["sinks"], "late": _http(late)},
                "stages": [{"type": "modify", "set": {"reloaded": "yes"}}],
            }
            config.write(second)
            ok = 'sidecarkit_logs_config_reloads_total{result="success"}'
            assert wait_for(lambda: agent.metric(ok) == 1, 30), "the ConfigMap swap was not seen"

            # 2. A bad config, then SIGHUP: refused, the old one keeps running.
            assert wait_for(lambda: writer.written >= 30_000, 60)
            config.write({**second, "stages": [{"type": "grep", "keep": "(unclosed"}]})
            agent.hangup()
            bad = 'sidecarkit_logs_config_reloads_total{result="failure"}'
            assert wait_for(lambda: agent.metric(bad) >= 1, 30), "the bad config was not refused"
            assert agent.metric("sidecarkit_logs_config_last_reload_successful") == 0

            # 3. SIGHUP after a sink is removed and another sent elsewhere.
            assert wait_for(lambda: writer.written >= 45_000, 60)
            third = {
                **second,
                "batch_bytes": 32768,
                "sinks": {
                    "everything": _http(everything),
                    "late": _http(late),
                    "mirror": _http(mirror_new),
                },
            }
            before = agent.metric(ok)
            config.write(third)
            agent.hangup()  # the file's poll may see it first: then both reload it
            assert wait_for(lambda: agent.metric(ok) > before, 30)
            assert agent.metric("sidecarkit_logs_config_last_reload_successful") == 1

            # 4. Stages changed again, by a swap alone.
            assert wait_for(lambda: writer.written >= 60_000, 60)
            before = agent.metric(ok)
            config.write({**third, "stages": [{"type": "modify", "set": {"reloaded": "twice"}}]})
            assert wait_for(lambda: agent.metric(ok) > before, 30)

            writer.join(120)
            assert not writer.is_alive()
            assert wait_for(lambda: everything.unique == total, 90), (
                f"everything has {everything.unique} of {total} lines"
            )
            assert wait_for(
                lambda: late.received >= total - _suffix(late, range(split, total))[0], 30
            )
            assert wait_for(lambda: mirror_old.unique + mirror_new.unique >= total, 30)
            store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
            sizes = {str(logs / n): (logs / n).stat().st_size for n in ("app.log", "audit.log")}
            assert wait_for(
                lambda: {e["path"]: e["offset"] for e in store.load().get("app", [])} == sizes, 30
            ), "the committed offsets did not reach the end of the files"
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    said = (tmp_path / "agent.log").read_text()

    # Kept sink: every line exactly once, through four reloads.
    assert [n for n in range(total) if everything.counts[n] != 1] == []
    # Removed sink: what it got is a prefix of its route's lines, each once, nothing after.
    audited = [n for n in range(split) if audit.counts[n]]
    assert audited, "the audit sink got nothing before it was removed"
    assert audited == list(range(len(audited))), "the audit sink has a gap"
    assert all(audit.counts[n] == 1 for n in audited)
    assert len(audited) < split, "the audit sink went on after it was removed"
    assert sum(audit.counts[split:]) == 0, "app.log lines went to the audit sink"
    # Added sink: from where it started, each later line of each file exactly once.
    for numbers in (range(split), range(split, total)):
        start, wrong = _suffix(late, numbers)
        assert start > numbers.start, "the sink added later got lines from before it existed"
        assert wrong == [], f"the added sink lacks or repeats {len(wrong)} lines from {start}"
    # Changed sink: its old and new receivers together got every line exactly once.
    both = [n for n in range(total) if mirror_old.counts[n] + mirror_new.counts[n] != 1]
    assert both == [], f"{len(both)} lines lost or repeated across the changed sink"
    assert mirror_old.unique
    assert mirror_new.unique

    assert samples['sidecarkit_logs_config_reloads_total{result="success"}'] == said.count(
        "INFO sidecarkit.agent.logs: config reloaded"
    )
    assert said.count("config reloaded (the config file changed)") >= 2
    assert "config reloaded (SIGHUP)" in said
    assert samples['sidecarkit_logs_config_reloads_total{result="failure"}'] == said.count(
        "refused: "
    )
    assert "config reload (SIGHUP) refused" in said
    assert samples["sidecarkit_logs_config_last_reload_successful"] == 1
    assert "stages[0].keep[0]: '(unclosed' is not a valid regular expression" in said
    assert "the running config stays" in said


def test_a_reload_hands_a_changed_sinks_unsent_batches_to_its_new_endpoint_and_gives_up_on_a_removed_one(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    total = 5_000
    config = ConfigMapDir(tmp_path / "config")
    with (
        SequenceReceiver(total, total) as everything,
        SequenceReceiver(total, total) as gone,
        SequenceReceiver(total, total) as moved_from,
        SequenceReceiver(total, total) as moved_to,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        gone.down()
        moved_from.down()
        first = {
            "paths": str(logs / "*.log"),
            "offsets_dir": str(tmp_path / "state"),
            "batch_bytes": 16384,
            "batch_wait": "100ms",
            "drain_timeout": "2s",
            "sinks": {
                "everything": _http(everything),
                "gone": _http(gone),
                "moving": _http(moved_from),
            },
        }
        config.write(first)
        agent = ReloadingAgent(config, log)
        app = logs / "app.log"
        try:
            assert wait_for(
                lambda: agent.metric("sidecarkit_logs_config_last_reload_successful") == 1, 30
            )
            app.write_bytes(numbered(0, total))
            assert wait_for(lambda: everything.unique == total, 30)
            retries = 'sidecarkit_logs_retries_total{sink="moving"}'
            assert wait_for(lambda: agent.metric(retries) >= 1, 30)

            config.write(
                {**first, "sinks": {"everything": _http(everything), "moving": _http(moved_to)}}
            )
            agent.hangup()
            assert wait_for(lambda: moved_to.unique == total, 30), (
                f"the new endpoint got {moved_to.unique} of {total} lines"
            )
            store = offsets.OffsetStore(tmp_path / "state" / "offsets.json")
            assert wait_for(
                lambda: store.load().get("app", [{}])[0].get("offset") == app.stat().st_size, 30
            ), "a removed sink that is down holds the offsets back for good"
            samples = agent.metrics()
        finally:
            assert agent.stop() == 0
    said = (tmp_path / "agent.log").read_text()
    assert [n for n in range(total) if moved_to.counts[n] != 1] == []
    assert moved_from.received == 0
    assert gone.received == 0
    assert samples['sidecarkit_logs_events_dropped_total{sink="gone"}'] == total
    assert "sink gone was removed by a reload" in said


def test_a_reload_keeps_the_settings_that_shape_the_open_files_and_names_each_it_kept() -> None:
    old = logs_settings.from_mapping(
        {
            "paths": "/var/log/app/*.log",
            "port": 15100,
            "stages": [{"type": "multiline", "preset": "java"}, {"type": "grep", "drop": "x"}],
        },
        source="old.yaml",
    )
    new = logs_settings.from_mapping(
        {
            "paths": "/var/log/other/*.log",
            "port": 15200,
            "batch_bytes": 4096,
            "stages": [{"type": "multiline", "preset": "python"}, {"type": "grep", "drop": "y"}],
        },
        source="new.yaml",
    )
    assert reloading.fixed_changes(old, new) == ["sources", "port", "stages[0] (multiline)"]
    kept = reloading.keep_fixed(old, new)
    assert kept.sources == old.sources
    assert kept.port == 15100
    assert kept.stages[0] == old.stages[0]
    assert kept.stages[1] == new.stages[1]
    assert kept.tuning.batch_bytes == 4096
    assert reloading.fixed_changes(old, kept) == []


def test_a_syslog_sink_changed_to_http_hands_its_unsent_lines_over_as_records(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    total = 3_000
    config = ConfigMapDir(tmp_path / "config")
    nobody = free_port()  # nothing listens: the syslog sink retries
    with (
        SequenceReceiver(total, total) as receiver,
        (tmp_path / "agent.log").open("ab") as log,
    ):
        first = {
            "paths": str(logs / "*.log"),
            "offsets_dir": str(tmp_path / "state"),
            "batch_bytes": 16384,
            "batch_wait": "100ms",
            "sinks": {"main": {"kind": "syslog", "endpoint": f"tcp://127.0.0.1:{nobody}"}},
        }
        config.write(first)
        agent = ReloadingAgent(config, log)
        try:
            ready = "sidecarkit_logs_config_last_reload_successful"
            assert wait_for(lambda: agent.metric(ready) == 1, 30)
            (logs / "app.log").write_bytes(numbered(0, total))
            retries = 'sidecarkit_logs_retries_total{sink="main"}'
            assert wait_for(lambda: agent.metric(retries) >= 1, 30)
            config.write({**first, "sinks": {"main": _http(receiver)}})
            agent.hangup()
            assert wait_for(lambda: receiver.unique == total, 30), (
                f"the HTTP endpoint got {receiver.unique} of {total} lines"
            )
        finally:
            assert agent.stop() == 0
    assert [n for n in range(total) if receiver.counts[n] != 1] == []
    assert receiver.bad == 0
