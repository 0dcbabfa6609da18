"""The logs benchmark's HTTP scenario: the agent to Elasticsearch ``_bulk`` and to Loki.

One file of 100-byte lines (numbered, half JSON, half access-log lines) is shipped from the page
cache to ``tests.support.bulkd``, a lean local server implementing the documented ``_bulk`` and
Loki push APIs (it answers each request in the documented shape and keeps the bodies, checked
after each timed run: every line intact, exactly once). Subjects, interleaved round-robin:

- **agent-es**: the agent with ``--sink elasticsearch=...`` (``create`` with stable ids, every
  answer read: acks kept);
- **rsyslog-es**: rsyslog's ``omelasticsearch`` (Debian's ``rsyslog-elasticsearch``, unpacked by
  ``.ci/run`` next to rsyslog and loaded by path) in bulk mode, its action queue taking batches
  of 5,000, documents of the same shape from a template;
- **agent-loki**: the agent with ``--sink loki=...`` (no Loki peer exists to run here);
- **agent-syslog**: the agent's syslog path on the same input, the ratio's reference.

Targets: the agent ships at least 1 M lines per CPU-second to Elasticsearch and to Loki, with a
peak RSS of at most 50 MB, and more lines per CPU-second than omelasticsearch.
"""

from __future__ import annotations

import array
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import _measuring as m
import orjson

from tests.support import bulkd, syslogd

PEERS = Path("/opt/sidecarkit-peers")
LINE = 100
"""Bytes per line, newline included."""


def generate(path: Path, lines: int, *, seed: int = 20261204) -> array.array[int]:
    """Write ``lines`` numbered lines of ``LINE`` bytes to ``path``; the CRC-32 of each."""
    rng = random.Random(seed)
    crcs = array.array("I", bytes(4 * lines))
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for seq in range(lines):
            if seq % 2:
                head = (
                    b'{"ts":"2026-12-04T09:%02d:%02d.%03dZ","level":"info","svc":"cart",'
                    b'"msg":"request done","pad":"'
                    % (seq // 60000 % 60, seq // 1000 % 60, seq % 1000)
                )
                end = b'","seq":%d}' % seq
            else:
                head = (
                    b'10.1.%d.%d - - [04/Dec/2026:09:00:00 +0000] "GET /api/v1/cart HTTP/1.1" %d '
                    % (
                        rng.randint(0, 255),
                        rng.randint(1, 254),
                        rng.choice((200, 200, 304, 404)),
                    )
                )
                end = b" seq=%d" % seq
            pad = LINE - 1 - len(head) - len(end)
            data = head + b"x" * pad + end
            crcs[seq] = zlib.crc32(data)
            chunk.append(data)
            if len(chunk) == 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    return crcs


def verify_bulk(dumps: list[Path], crcs: array.array[int]) -> m.Verdict:
    """Match the ``message`` of every document of every ``_bulk`` body to its line."""
    verdict, seen = m.Verdict(), bytearray(len(crcs))
    for dump in dumps:
        for body in bulkd.bodies(dump):
            verdict.bytes += len(body)
            for doc in body.split(b"\n")[1::2]:
                m.count_line(verdict, orjson.loads(doc)["message"].encode(), crcs, seen)
    return verdict


def verify_loki(dumps: list[Path], crcs: array.array[int]) -> m.Verdict:
    """Match every entry of every Loki push body to its line."""
    verdict, seen = m.Verdict(), bytearray(len(crcs))
    for dump in dumps:
        for body in bulkd.bodies(dump):
            verdict.bytes += len(body)
            for stream in orjson.loads(body)["streams"]:
                for value in stream["values"]:
                    m.count_line(verdict, value[1].encode(), crcs, seen)
    return verdict


def omelasticsearch() -> tuple[syslogd.Daemon, str] | None:
    """rsyslog and how to load its omelasticsearch (a path to the unpacked one), or ``None``."""
    daemon = syslogd.rsyslog()
    if daemon is None:
        return None
    unpacked = sorted(
        (PEERS / "rsyslog-elasticsearch").glob("usr/lib/*/rsyslog/omelasticsearch.so")
    )
    if unpacked:
        return daemon, str(unpacked[0])
    installed = sorted(Path("/usr/lib").glob("*/rsyslog/omelasticsearch.so"))
    if daemon.modules is None and installed:
        return daemon, "omelasticsearch"
    return None


def _rsyslog_es(daemon: syslogd.Daemon, module: str) -> m.Start:
    def start(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
        config = f"""
global(workDirectory="{run}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
module(load="{module}")
template(name="doc" type="list" option.json="on") {{
  constant(value="{{\\"@timestamp\\":\\"")
  property(name="timereported" dateFormat="rfc3339")
  constant(value="\\",\\"message\\":\\"")
  property(name="msg")
  constant(value="\\",\\"log\\":{{\\"file\\":{{\\"path\\":\\"{path}\\"}}}},\\"pod\\":\\"bench-0\\",\\"namespace\\":\\"bench\\"}}")
}}
input(type="imfile" file="{path}" tag="app" ruleset="es")
ruleset(name="es") {{
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" template="doc"
         searchIndex="logs-bench" bulkmode="on" esVersion.major="8"
         queue.type="linkedlist" queue.size="100000" queue.dequeueBatchSize="5000"
         action.resumeRetryCount="-1")
}}
"""
        return daemon.start(config, run)

    return start


def _agent(sink: str) -> m.Start:
    def start(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
        return m.start_agent(str(path), sink.format(port=port), run)

    return start


def run(work: Path, *, lines: int, repeat: int, syslog_check: m.Check) -> list[str]:
    """The scenario, printed; the targets missed (a missing peer is one)."""
    path = work / "http.log"
    crcs = generate(path, lines)
    print(f"\n== HTTP sinks: {lines:,} lines of {LINE} B, {repeat} round(s), interleaved")
    peer = omelasticsearch()
    missed = []
    subjects = [
        (m.Subject("agent-es", _agent("elasticsearch=http://127.0.0.1:{port}")), verify_bulk),
        (m.Subject("agent-loki", _agent("loki=http://127.0.0.1:{port}")), verify_loki),
        (m.Subject("agent-syslog", _agent("syslog=tcp://127.0.0.1:{port}")), syslog_check),
    ]
    if peer is None:
        missed.append(f"no rsyslog with omelasticsearch; {syslogd.INSTALL_HINT}")
        print(f"  MISSED {missed[-1]}")
    else:
        subjects.insert(1, (m.Subject("rsyslog-es", _rsyslog_es(*peer)), verify_bulk))
    checks = {s.name: check for s, check in subjects}
    timeout = max(60.0, lines / 20_000 * 3)

    def one(subject: m.Subject) -> m.Result:
        module = (
            "tests.support.syslogd" if subject.name == "agent-syslog" else "tests.support.bulkd"
        )
        return m.run_once(
            subject, path, crcs, work, timeout, receiver_module=module, check=checks[subject.name]
        )

    results = m.rounds([s for s, _ in subjects], repeat, one)
    path.unlink()
    print()
    medians = m.table(results, lines)
    for name in checks:
        if name not in medians:
            missed.append(f"{name}: no good run")
    es, loki = medians.get("agent-es"), medians.get("agent-loki")
    plain, rsyslog = medians.get("agent-syslog"), medians.get("rsyslog-es")
    if es and rsyslog:
        missed += m.target(
            "agent-es lines/CPU-s / rsyslog-es", es["per_cpu"] / rsyslog["per_cpu"], 1, "x"
        )
    for name, sink in (("agent-es", es), ("agent-loki", loki)):
        if sink is None:
            continue
        missed += m.target(f"{name} lines/CPU-s", sink["per_cpu"] / 1e6, 1.0, " M")
        missed += m.target(f"{name} peak RSS", sink["rss"], 50, " MB", most=True)
        if plain:
            print(f"  {name} lines/CPU-s / agent-syslog: {sink['per_cpu'] / plain['per_cpu']:.2f}x")
    shutil.rmtree(work / "http", ignore_errors=True)
    return missed
