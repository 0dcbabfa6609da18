"""The logs benchmark's pipeline scenario: grep + modify + redact, against rsyslog doing the same.

The plain scenario's file (realistic lines, about 13 % of them ``"level":"debug"``, a quarter
carrying an IPv4 address) goes to ``tests.support.bulkd`` (the lean local ``_bulk`` server) as
Elasticsearch documents, each subject applying one rule set on the way:

1. drop the debug lines (a filter on the message);
2. add the field ``env: prod`` (a field added to every document);
3. mask every IPv4 address (the agent's built-in ``ipv4`` pattern writes ``[REDACTED]``,
   rsyslog's ``mmanon`` ``0.0.0.0``).

- **agent-pipeline**: the agent with ``stages: [grep, modify, redact]`` and ``--sink
  elasticsearch``;
- **rsyslog-pipeline**: rsyslog with the equivalent rule set: a property-based filter
  (``if $msg contains ... then stop``), ``set $!env``, ``mmanon`` (IPv4, zero mode, 32 bits),
  and ``omelasticsearch`` in bulk mode with a template carrying ``env``.

With ``sinks=2`` (the **pipeline2** scenario) every kept record goes to two receivers, two
``bulkd`` processes on their own ports: the agent with two named Elasticsearch sinks in its
config (each its own lane, queue and connection), rsyslog with two ``omelasticsearch`` actions
(each its own action queue). The run ends when both have every line.

After each timed run every document is checked, on each receiver: exactly the lines not
dropped, each once, its message the line with its addresses masked, its ``env`` ``prod``.
Target: the agent ships at least twice rsyslog's lines per CPU-second.
"""

from __future__ import annotations

import array
import os
import re
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import _logs_http
import _measuring as m
import orjson

from tests.support import bulkd, syslogd

DEBUG = b'"level":"debug"'
IPV4 = rb"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"
STAGES = r"""
stages:
  - type: grep
    drop: '"level":"debug"'
  - type: modify
    add: {env: prod}
  - type: redact
    patterns: [ipv4]
"""


def expected(path: Path, mask_as: bytes) -> tuple[array.array[int], array.array[int]]:
    """The CRC-32 of each line that should arrive, its addresses masked as ``mask_as``, in
    order; and for each line number of the file, its index among them (-1: dropped)."""
    crcs = array.array("I")
    where = array.array("i")
    mask = re.compile(IPV4)
    with path.open("rb") as f:
        for line in f:
            text = line.rstrip(b"\n")
            if DEBUG in text:
                where.append(-1)
                continue
            where.append(len(crcs))
            crcs.append(zlib.crc32(mask.sub(mask_as, text)))
    return crcs, where


def _verifier(where: array.array[int]) -> m.Check:
    def check(dumps: list[Path], crcs: array.array[int]) -> m.Verdict:
        verdict, seen = m.Verdict(), bytearray(len(crcs))
        for dump in dumps:
            for body in bulkd.bodies(dump):
                verdict.bytes += len(body)
                for doc in body.split(b"\n")[1::2]:
                    verdict.frames += 1
                    fields = orjson.loads(doc)
                    message = fields["message"].encode()
                    try:
                        number = int(message[message.rindex(b"seq") + 3 :].strip(b'":=}'))
                        index = where[number] if 0 <= number < len(where) else -1
                        intact = index >= 0 and zlib.crc32(message) == crcs[index]
                    except ValueError:
                        intact, index = False, -1
                    if not intact or fields.get("env") != "prod":
                        verdict.damaged += 1
                        if len(verdict.examples) < 3:
                            verdict.examples.append(repr(doc[:160]))
                    elif seen[index]:
                        verdict.duplicates += 1
                    else:
                        seen[index] = 1
                        verdict.good += 1
        return verdict

    return check


def _agent(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
    return _agents(path, (port,), run)


def _agents(path: Path, ports: tuple[int, ...], run: Path) -> subprocess.Popen[bytes]:
    config = run / "logs.yaml"
    sinks = "".join(
        f"  es-{n}: {{kind: elasticsearch, endpoint: 'http://127.0.0.1:{port}'}}\n"
        for n, port in enumerate(ports)
    )
    config.write_text(STAGES + "sinks:\n" + sinks)
    m.compiled()
    env = dict(os.environ, SIDECARKIT_POD_NAME="bench-0", SIDECARKIT_POD_NAMESPACE="bench")
    command = [str(m.AGENT), "agent", "logs", "--config", str(config), "--paths", str(path)]
    command += ["--offsets-dir", str(run / "offsets"), "--port", "0"]
    with (run / "agent.log").open("wb") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env
        )


def _mmanon(daemon: syslogd.Daemon) -> str | None:
    if daemon.modules is None:
        return "mmanon" if sorted(Path("/usr/lib").glob("*/rsyslog/mmanon.so")) else None
    found = Path(daemon.modules) / "mmanon.so"
    return "mmanon" if found.exists() else None


def _rsyslog(daemon: syslogd.Daemon, module: str) -> m.Start:
    def start(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
        return _rsyslogs(daemon, module)(path, (port,), run)

    return start


def _rsyslogs(
    daemon: syslogd.Daemon, module: str
) -> Callable[[Path, tuple[int, ...], Path], subprocess.Popen[bytes]]:
    def start(path: Path, ports: tuple[int, ...], run: Path) -> subprocess.Popen[bytes]:
        actions = "".join(
            f"""
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" template="doc"
         searchIndex="logs-bench" bulkmode="on" esVersion.major="8"
         queue.type="linkedlist" queue.size="100000" queue.dequeueBatchSize="5000"
         action.resumeRetryCount="-1")"""
            for port in ports
        )
        config = f"""
global(workDirectory="{run}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
module(load="{module}")
module(load="mmanon")
template(name="doc" type="list" option.json="on") {{
  constant(value="{{\\"@timestamp\\":\\"")
  property(name="timereported" dateFormat="rfc3339")
  constant(value="\\",\\"message\\":\\"")
  property(name="msg")
  constant(value="\\",\\"env\\":\\"")
  property(name="$!env")
  constant(value="\\",\\"log\\":{{\\"file\\":{{\\"path\\":\\"{path}\\"}}}},\\"pod\\":\\"bench-0\\",\\"namespace\\":\\"bench\\"}}")
}}
input(type="imfile" file="{path}" tag="app" ruleset="pipeline")
ruleset(name="pipeline") {{
  if $msg contains '"level":"debug"' then stop
  set $!env = "prod";
  action(type="mmanon" ipv4.enable="on" ipv4.mode="zero" ipv4.bits="32" ipv6.enable="off")
  {actions}
}}
"""
        return daemon.start(config, run)

    return start


def run(
    work: Path,
    *,
    lines: int,
    repeat: int,
    generate: Callable[[Path, int], object],
    sinks: int = 1,
) -> list[str]:
    """The scenario, printed; the targets missed (a missing peer is one)."""
    path = work / "pipeline.log"
    generate(path, lines)
    crcs, where = expected(path, b"[REDACTED]")
    peer_crcs, _ = expected(path, b"0.0.0.0")
    to = "Elasticsearch _bulk" if sinks == 1 else f"{sinks} Elasticsearch _bulk receivers"
    print(
        f"\n== pipeline{'' if sinks == 1 else sinks}: grep + modify + redact to {to}, "
        f"{lines:,} lines ({lines - len(crcs):,} dropped by the filter), {repeat} round(s), "
        "interleaved"
    )
    missed = []
    subjects = [m.Subject("agent-pipeline", _agent, start_many=_agents)]
    peer = _logs_http.omelasticsearch()
    if peer is None or _mmanon(peer[0]) is None:
        missed.append(f"no rsyslog with omelasticsearch and mmanon; {syslogd.INSTALL_HINT}")
        print(f"  MISSED {missed[-1]}")
    else:
        subjects.append(m.Subject("rsyslog-pipeline", _rsyslog(*peer), start_many=_rsyslogs(*peer)))
    check = _verifier(where)
    timeout = max(60.0, lines / 20_000 * 3)

    def one(subject: m.Subject) -> m.Result:
        wanted = crcs if subject.name.startswith("agent") else peer_crcs
        return m.run_once(
            subject,
            path,
            wanted,
            work,
            timeout * sinks,
            receiver_module="tests.support.bulkd",
            check=check,
            receivers=sinks,
        )

    results = m.rounds(subjects, repeat, one)
    path.unlink()
    print()
    medians = m.table(results, len(crcs))
    for subject in subjects:
        if subject.name not in medians:
            missed.append(f"{subject.name}: no good run")
    agent, rsyslog = medians.get("agent-pipeline"), medians.get("rsyslog-pipeline")
    if agent and rsyslog:
        missed += m.target(
            "agent-pipeline lines/CPU-s / rsyslog-pipeline",
            agent["per_cpu"] / rsyslog["per_cpu"],
            2,
            "x",
        )
    if agent:
        missed += m.target("agent-pipeline peak RSS", agent["rss"], 50, " MB", most=True)
    return missed
