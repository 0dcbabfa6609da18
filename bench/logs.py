"""Benchmark: the logs agent against rsyslog and syslog-ng, in four scenarios, one command.

- **plain** (below): one file over syslog TCP;
- **http** (``_logs_http.py``): 100-byte lines to Elasticsearch ``_bulk`` (against rsyslog's
  omelasticsearch) and to Loki;
- **files** (``_logs_files.py``): 1,000 files written at once by small writers;
- **pipeline** (``_logs_pipeline.py``): grep + modify + redact to Elasticsearch ``_bulk``, against
  rsyslog with the equivalent rule set (property filter, ``set``, ``mmanon``); **pipeline2**:
  the same to two receivers (two sinks; rsyslog with two actions).

Every target missed, and every peer missing, fails the benchmark (exit status 1).

One file of realistic log lines (``--lines``, 2,000,000 by default, ~170 bytes on average:
JSON app logs in three shapes, plain-text logger lines, access-log lines and long JSON lines
carrying a Java stack trace; every line numbered and unique) is shipped from the page cache to
the same octet-counting receiver on 127.0.0.1 by each subject, interleaved round-robin,
``--repeat`` times:

- **agent**: ``sidecarkit agent logs --paths FILE --sink syslog=tcp://... --offsets-dir DIR``,
  following the file and saving offsets after each confirmed batch, as in production;
- **rsyslog** with one queue worker (imfile, omfwd octet-counted);
- **syslog-ng** with ``flags(flow-control)`` (lossless; without it syslog-ng drops lines);
- **python**: a bare Python sender that reads 1 MiB chunks and frames lines with a fixed header
  and a table of prefixes (the language's floor: no following, offsets, reconnects, times);
- **stdout**: the agent with ``--sink stdout`` into a pipe, for MB/s.

For each: wall seconds (start to the receiver counting the last line), CPU seconds (user+sys
of the subject's process tree when the last line arrived), lines/s, lines per CPU-second, peak
RSS, and a check, after each timed run, that every line arrived intact exactly once (each
frame's MSG is matched by its number and CRC-32 to the file's line). Medians are printed, then
the ratios the agent is held to: lines per CPU-second >= 4x the best peer and >= 0.5x the bare
sender, peak RSS <= 50 MB, stdout >= 500 MB per CPU-second (MB/s of wall time is printed too;
on a shared machine it says more about the neighbours). rsyslog and syslog-ng come from ``PATH`` or
``/opt/sidecarkit-peers`` (``.ci/run`` unpacks them there).

    .venv/bin/python bench/logs.py [--lines 2000000] [--repeat 3] [--quick] [--only agent,...]
        [--scenarios plain,http,files,pipeline,pipeline2] [--http-lines 1000000] [--files 1000]
        [--file-lines 200] [--pipeline-lines 1000000]
"""

from __future__ import annotations

import argparse
import array
import functools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _logs_files  # noqa: E402
import _logs_http  # noqa: E402
import _logs_offsets  # noqa: E402
import _logs_pipeline  # noqa: E402
import _measuring as m  # noqa: E402

from tests.support import syslogd  # noqa: E402

# -- the input ---------------------------------------------------------------------------------

_SERVICES = ["checkout", "cart", "payments", "search", "auth", "inventory", "shipping", "frontend"]
_ROUTES = [
    ("GET", "/api/v1/items/{n}"),
    ("GET", "/api/v1/cart"),
    ("POST", "/api/v2/checkout"),
    ("GET", "/api/v1/users/{n}/orders"),
    ("PUT", "/api/v1/cart/items/{n}"),
    ("GET", "/api/v1/search?q=shoes&page={n}"),
]
_DONE = ["request done", "served from cache", "upstream ok"]
_EVENTS = ["user logged in", "password reset", "session refreshed", "token issued"]
_DEBUG = ["cache miss", "cache hit", "connection reused", "pool checkout"]
_CLASSES = [
    "com.example.shop.OrderService",
    "com.example.shop.PaymentGateway",
    "com.example.shop.InventoryClient",
    "org.springframework.web.servlet.DispatcherServlet",
]
_EXCEPTIONS = [
    "java.lang.IllegalStateException: order already settled",
    "java.net.SocketTimeoutException: Read timed out",
    'java.lang.NullPointerException: Cannot invoke \\"String.length()\\" because \\"s\\" is null',
]


def generate(path: Path, lines: int, *, seed: int = 20261129) -> array.array[int]:
    """Write ``lines`` numbered lines to ``path``; the CRC-32 of each line, by number."""
    rng = random.Random(seed)
    crcs = array.array("I", bytes(4 * lines))
    start = 1_795_973_184.0  # 2026-11-29T17:26:24Z
    ms = 0
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for seq in range(lines):
            ms += rng.randint(0, 3)
            seconds, milli = divmod(ms, 1000)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + seconds))
            ts = f"{stamp}.{milli:03d}Z"
            svc = rng.choice(_SERVICES)
            rid = f"{rng.getrandbits(48):012x}"
            pick = rng.random()
            if pick < 0.40:
                method, route = rng.choice(_ROUTES)
                status = rng.choice((200, 200, 200, 201, 204, 304, 404, 500))
                line = (
                    f'{{"ts":"{ts}","level":"info","svc":"{svc}","rid":"{rid}",'
                    f'"msg":"{rng.choice(_DONE)}",'
                    f'"route":"{method} {route.format(n=rng.randint(1, 99999))}","status":{status},'
                    f'"dur_ms":{rng.randint(1, 900)},"seq":{seq}}}'
                )
            elif pick < 0.65:
                line = (
                    f'{{"ts":"{ts}","level":"info","svc":"{svc}","rid":"{rid}",'
                    f'"msg":"{rng.choice(_EVENTS)}","user":"u-{rng.randint(1, 999999)}",'
                    f'"ip":"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",'
                    f'"seq":{seq}}}'
                )
            elif pick < 0.85:
                level = rng.choice(("debug", "debug", "warn"))
                line = (
                    f'{{"ts":"{ts}","level":"{level}","svc":"{svc}","rid":"{rid}",'
                    f'"msg":"{rng.choice(_DEBUG)}","key":"{svc}:{rng.randint(1, 99999)}",'
                    f'"dur_ms":{rng.randint(0, 9)},"seq":{seq}}}'
                )
            elif pick < 0.90:
                clock = ts[:10] + " " + ts[11:19] + "," + ts[20:23]
                level = rng.choice(("INFO ", "INFO ", "WARN ", "ERROR"))
                line = (
                    f"{clock} {level} [worker-{rng.randint(1, 16)}] {rng.choice(_CLASSES)} - "
                    f"order {rng.randint(1, 999999)} placed for user u-{rng.randint(1, 99999)} "
                    f"total={rng.randint(1, 999)}.{rng.randint(0, 99):02d} EUR seq={seq}"
                )
            elif pick < 0.97:
                day = time.strftime("%d/%b/%Y:%H:%M:%S", time.gmtime(start + seconds))
                method, route = rng.choice(_ROUTES)
                line = (
                    f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} - - "
                    f'[{day} +0000] "{method} {route.format(n=rng.randint(1, 999))} HTTP/1.1" '
                    f"{rng.choice((200, 200, 304, 404))} {rng.randint(0, 99999)} seq={seq}"
                )
            else:
                frames = "".join(
                    f"\\n\\tat {rng.choice(_CLASSES)}.m{rng.randint(1, 99)}"
                    f"(S{rng.randint(1, 9)}.java:{rng.randint(10, 999)})"
                    for _ in range(rng.randint(2, 11))
                )
                line = (
                    f'{{"ts":"{ts}","level":"error","svc":"{svc}","rid":"{rid}",'
                    f'"msg":"unhandled exception","stack":"{rng.choice(_EXCEPTIONS)}{frames}",'
                    f'"seq":{seq}}}'
                )
            data = line.encode()
            crcs[seq] = zlib.crc32(data)
            chunk.append(data)
            if len(chunk) == 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    return crcs


# -- subjects ----------------------------------------------------------------------------------

_SENDER = r"""
import os, socket, sys
path, port = sys.argv[1], int(sys.argv[2])
head = b"<14>1 2026-11-29T00:00:00Z host app - - - "
prefix = [b"%d %s" % (len(head) + n, head) for n in range(65536)]
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
fd = os.open(path, os.O_RDONLY)
rest = b""
while True:
    chunk = os.read(fd, 1 << 20)
    if not chunk:
        break
    block = rest + chunk
    cut = block.rfind(b"\n")
    if cut < 0:
        rest = block
        continue
    rest = block[cut + 1 :]
    lines = block[:cut].split(b"\n")
    parts = [b""] * (2 * len(lines))
    parts[0::2] = map(prefix.__getitem__, map(len, lines))
    parts[1::2] = lines
    sock.sendall(b"".join(parts))
sock.close()
# Its own peak RSS: a child's ru_maxrss also counts the parent's RSS at fork.
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]))
"""


def start_agent(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
    return m.start_agent(str(path), f"syslog=tcp://127.0.0.1:{port}", run)


def _daemon_starter(daemon: syslogd.Daemon) -> Callable[[Path, int, Path], subprocess.Popen[bytes]]:
    def start(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
        return daemon.start(syslogd.shipping_config(daemon, path, port, run), run)

    return start


def start_sender(path: Path, port: int, run: Path) -> subprocess.Popen[bytes]:
    script = run / "sender.py"
    script.write_text(_SENDER)
    return subprocess.Popen(
        [sys.executable, str(script), str(path), str(port)], stdout=subprocess.PIPE
    )


def verify(dumps: list[Path], crcs: array.array[int]) -> m.Verdict:
    """Match every frame in ``dumps`` to its line: by number, then by CRC-32 of the MSG."""
    verdict = m.Verdict()
    seen = bytearray(len(crcs))
    for dump in dumps:
        data = dump.read_bytes()
        verdict.bytes += len(data)
        for message in syslogd.frames(data):
            try:
                msg = syslogd.split(message)[2]
            except ValueError:
                msg = message  # not a syslog frame: counted as damaged, shown whole
            if msg.endswith(b"\n"):  # rsyslog's template ends the message with LF
                msg = msg[:-1]
            m.count_line(verdict, msg, crcs, seen)
    return verdict


def run_stdout(path: Path, lines: int, work: Path, timeout: float) -> m.Result:
    """The agent with ``--sink stdout`` into a pipe that this process drains."""
    run = Path(tempfile.mkdtemp(prefix="stdout-", dir=work))
    expected_size = path.stat().st_size
    expected_crc = 0
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            expected_crc = zlib.crc32(block, expected_crc)
    m.warm(path)
    m.compiled()
    env = dict(os.environ, SIDECARKIT_POD_NAME="bench-0", SIDECARKIT_POD_NAMESPACE="bench")
    with (run / "agent.log").open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [
                *(str(m.AGENT), "agent", "logs", "--paths", str(path), "--sink", "stdout"),
                *("--offsets-dir", str(run / "offsets"), "--port", "0"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
    assert process.stdout is not None
    state = {"lines": 0, "bytes": 0, "crc": 0, "done_at": 0.0}
    finished = threading.Event()
    fd = process.stdout.fileno()

    def drain() -> None:
        # One reused buffer: the reader must not be what limits the agent.
        buffer = bytearray(4 << 20)
        view = memoryview(buffer)
        pipe = os.fdopen(fd, "rb", buffering=0, closefd=False)
        while n := pipe.readinto(buffer):
            state["lines"] += buffer.count(b"\n", 0, n)
            state["bytes"] += n
            state["crc"] = zlib.crc32(view[:n], int(state["crc"]))
            if state["lines"] >= lines and not finished.is_set():
                state["done_at"] = time.monotonic()
                finished.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    finished.wait(timeout)
    at_done = m.usage(process.pid) if finished.is_set() else None
    cpu, rss = m.reap(process)
    reader.join(10)
    process.stdout.close()
    tail = m.tail(run, "agent")
    shutil.rmtree(run, ignore_errors=True)
    if not finished.is_set():
        return m.Result(False, note=f"{state['lines']} of {lines} lines in {timeout:.0f} s; {tail}")
    raw = state["bytes"] == expected_size and state["crc"] == expected_crc
    note = "" if raw else f"output is not the input byte for byte ({state['bytes']} bytes)"
    return m.Result(
        raw,
        wall=state["done_at"] - started,
        cpu=cpu if at_done is None else at_done[0],
        rss=rss if at_done is None else at_done[1],
        frame_bytes=state["bytes"] / lines,
        note=note,
    )


# -- the encoder alone -------------------------------------------------------------------------


def encoder_rates(path: Path) -> list[tuple[str, float]]:
    """Events per second through the syslog sink's encoder on one core (median of 15 timeit
    repeats), for batches of about 1 MiB of input, as the agent makes them."""
    from sidecarkit.agents.logs import records  # noqa: PLC0415 - only this part needs it
    from sidecarkit.agents.logs.sinks import rfc5424  # noqa: PLC0415

    encoder = rfc5424.Encoder(rfc5424.Options())
    labels = {"pod": "bench-0", "namespace": "bench"}
    with path.open("rb") as f:
        raw = f.read(1 << 20)
    raw = raw[: raw.rfind(b"\n") + 1]
    lines = raw.decode().split("\n")[:-1]
    short = [f"GET /healthz 200 {n:08d} ok {'x' * 24}" for n in range(6000)]
    now = time.time_ns()

    def events(texts: list[str]) -> records.Batch:
        group = records.Group(
            "app.log", "k", [(n, t, None, None) for n, t in enumerate(texts)], now
        )
        return records.Batch([group], labels, len(texts))

    cases = [
        ("short (60 B) lines as events", events(short)),
        ("benchmark lines as events", events(lines)),
        (
            "benchmark lines as bytes (raw)",
            records.Batch([records.Group("app.log", "k", [], now, raw)], labels, len(lines)),
        ),
    ]
    rates = []
    for name, batch in cases:
        times = timeit.repeat(functools.partial(encoder.encode, batch), number=10, repeat=15)
        rates.append((name, batch.events * 10 / statistics.median(times)))
    return rates


# -- report ------------------------------------------------------------------------------------


def report(results: dict[str, list[m.Result]], lines: int, size: int) -> list[str]:
    """Print the table and the ratios; the targets missed."""
    medians = m.table(results, lines)
    missed = []
    agent = medians.get("agent")
    peers = {k: v["per_cpu"] for k, v in medians.items() if k in ("rsyslog", "syslog-ng")}
    if agent and peers:
        best = max(peers, key=lambda k: peers[k])
        ratio = agent["per_cpu"] / peers[best]
        missed += m.target(f"agent lines/CPU-s / best peer ({best})", ratio, 4, "x")
    if agent and "python" in medians:
        ratio = agent["per_cpu"] / medians["python"]["per_cpu"]
        missed += m.target("agent lines/CPU-s / bare Python sender", ratio, 0.5, "x")
    if agent:
        missed += m.target("agent peak RSS", agent["rss"], 50, " MB", most=True)
    if "stdout" in medians:
        rate = size / medians["stdout"]["wall"] / 1e6
        stdout_per_cpu = size / medians["stdout"]["cpu"] / 1e6
        missed += m.target(
            "agent --sink stdout into a pipe, per CPU-second", stdout_per_cpu, 500, " MB"
        )
        print(f"  ({rate:.0f} MB/s of wall time; the machine is shared)")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 lines, once: a smoke run")
    parser.add_argument(
        "--only", default="", help="comma-separated subjects: agent,rsyslog,syslog-ng,python,stdout"
    )
    parser.add_argument(
        "--scenarios",
        default="plain,http,files,pipeline,pipeline2",
        help="comma-separated: plain,http,files,pipeline,pipeline2",
    )
    parser.add_argument("--pipeline-lines", type=int, default=1_000_000)
    parser.add_argument("--http-lines", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-lines", type=int, default=200, help="lines per file")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.repeat, args.http_lines, args.file_lines = 100_000, 1, 100_000, 50
        args.pipeline_lines = 100_000
    scenarios = set(args.scenarios.split(","))
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sidecarkit-bench-logs-") as tmp:
        if "plain" in scenarios:
            missed += plain(args, Path(tmp))
        if "http" in scenarios:
            missed += _logs_http.run(
                Path(tmp), lines=args.http_lines, repeat=args.repeat, syslog_check=verify
            )
        if "pipeline" in scenarios:
            missed += _logs_pipeline.run(
                Path(tmp), lines=args.pipeline_lines, repeat=args.repeat, generate=generate
            )
        if "pipeline2" in scenarios:
            missed += _logs_pipeline.run(
                Path(tmp), lines=args.pipeline_lines, repeat=args.repeat, generate=generate, sinks=2
            )
        if "files" in scenarios:
            missed += _logs_files.run(
                Path(tmp),
                files=args.files,
                lines=args.file_lines,
                repeat=args.repeat,
                check=verify,
            )
            missed += _logs_offsets.run(Path(tmp), args.files)
    if missed:
        print(f"\nFAILED: {len(missed)} target(s) missed:")
        for line in missed:
            print(f"  {line}")
        sys.exit(1)
    print("\nevery target met")


def plain(args: argparse.Namespace, work: Path) -> list[str]:
    """The plain scenario: one file over syslog, against rsyslog, syslog-ng and a bare sender."""
    missed = []
    subjects = [m.Subject("agent", start_agent)]
    for find in (syslogd.rsyslog, syslogd.syslog_ng):
        daemon = find()
        if daemon is None:
            missed.append(f"no {find.__name__.replace('_', '-')}; {syslogd.INSTALL_HINT}")
            print(f"  MISSED {missed[-1]}")
        else:
            subjects.append(m.Subject(daemon.kind, _daemon_starter(daemon)))
    subjects.append(m.Subject("python", start_sender, exits=True))
    wanted = set(filter(None, args.only.split(",")))
    subjects = [s for s in subjects if not wanted or s.name in wanted]
    with_stdout = not wanted or "stdout" in wanted
    timeout = max(60.0, args.lines / 20_000 * 3)
    print("== plain: the agent over syslog against rsyslog and syslog-ng")
    path = work / "app.log"
    began = time.monotonic()
    crcs = generate(path, args.lines)
    size = path.stat().st_size
    print(
        f"{args.lines:,} lines, {size / 1e6:.1f} MB ({size / args.lines:.0f} B/line), "
        f"generated in {time.monotonic() - began:.1f} s; {args.repeat} round(s), interleaved"
    )
    for name, rate in encoder_rates(path):
        print(f"encoder, {name}: {rate / 1e6:.2f} M events/s on one core (target >= 1.5 M)")
    results: dict[str, list[m.Result]] = {s.name: [] for s in subjects}
    if with_stdout:
        results["stdout"] = []
    steal_start = m.steal()
    for round_ in range(args.repeat):
        for subject in subjects:
            result = m.run_once(subject, path, crcs, work, timeout, check=verify)
            results[subject.name].append(result)
            state = "ok" if result.ok else "FAILED"
            print(
                f"  round {round_ + 1} {subject.name:<10} {state:<6} wall {result.wall:6.2f} s"
                f"  CPU {result.cpu:6.2f} s  RSS {result.rss:5.1f} MB",
                flush=True,
            )
        if with_stdout:
            result = run_stdout(path, args.lines, work, timeout)
            results["stdout"].append(result)
            print(
                f"  round {round_ + 1} {'stdout':<10} {'ok' if result.ok else 'FAILED':<6} "
                f"wall {result.wall:6.2f} s  CPU {result.cpu:6.2f} s",
                flush=True,
            )
    steal_end = m.steal()
    steal = 100 * (steal_end[0] - steal_start[0]) / max(steal_end[1] - steal_start[1], 1)
    print(f"\nmachine: {os.cpu_count()} cores; steal {steal:.1f} % of CPU time during the runs\n")
    missed += report(results, args.lines, size)
    path.unlink()
    return missed


if __name__ == "__main__":
    main()
