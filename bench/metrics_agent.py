"""Benchmark: the metrics agent beside Prometheus in agent mode, scraping and remote_writing.

Both run as plain processes here, side by side: ``sidecarkit agent metrics`` and Debian's
``prometheus --enable-feature=agent``, each scraping the same target (10,000 or 100,000
series, a kube-state-metrics style body served from memory) every 5 s and remote_writing to
the same receiver (on loopback; it counts samples and notes how late they arrive, and is not
measured). Measured, over the same window after a warm-up: each process's CPU seconds (from
/proc), CPU per 1,000 samples delivered, its peak and final resident memory, and how long
after its scrape each push arrived. A missing peer fails the run (exit 1).

    python bench/metrics_agent.py [--series 10000,100000] [--seconds 30] [--wal]

``--wal`` gives the agent a remote_write WAL in the run's temporary directory (Prometheus
always has its own).

``--merged`` measures the merged-endpoint mode instead (no remote_write): the agent scrapes the
target every 5 s and this bench fetches the agent's ``/metrics`` every 5 s as Prometheus asks
for it (OpenMetrics first), so each cycle holds a scrape, a merge and a render; beside it
Debian's ``prometheus`` (server mode, its own TSDB) scrapes the same target every 5 s. Printed:
each process's CPU seconds per scrape of the target (counted by the target, per User-Agent).
Goal: at most 1 CPU-second per cycle at 100,000 series.

    python bench/metrics_agent.py --merged [--series 100000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import ClassVar

import cramjam

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import kube_state_metrics

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Target(http.server.BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b""
    #: Requests so far, by who asked: "prometheus" or "sidecarkit" (by User-Agent).
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        who = "prometheus" if "Prometheus" in self.headers.get("User-Agent", "") else "sidecarkit"
        self.hits[who] = self.hits.get(who, 0) + 1
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


class Receiver(http.server.BaseHTTPRequestHandler):
    """remote_write receiving side: counts samples per sender path, and their lateness."""

    samples: ClassVar[dict[str, int]] = {}
    late: ClassVar[dict[str, list[float]]] = {}
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        arrived = time.time()
        data = bytes(cramjam.snappy.decompress_raw(body))
        # Every Sample here is 0x12 0x10 (a 16-byte message) then 0x09 (the double): label
        # text never holds those control bytes.
        count = data.count(b"\x12\x10\x09")
        at = data.find(b"\x12\x10\x09")
        late = None
        if at >= 0:
            ts, shift, i = 0, 0, at + 12
            while True:
                byte = data[i]
                ts |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            late = arrived - ts / 1000
        with self.lock:
            self.samples[self.path] = self.samples.get(self.path, 0) + count
            if late is not None:
                self.late.setdefault(self.path, []).append(late)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_mb(pid: int) -> tuple[float, float]:
    peak = rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return peak, rss


def _agent(target_url: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """``sidecarkit agent metrics`` scraping TARGET_URL every 5 s, serving on PORT."""
    command = [sys.executable, "-m", "sidecarkit", "agent", "metrics", "--target", target_url]
    command += ["--interval", "5s", "--port", str(port), "--statsd-port", "0"]
    command += ["--log-level", "warning", *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(series: int, seconds: float, prometheus: str, tmp: Path, *, wal: bool = False) -> None:
    Target.body = kube_state_metrics(series)
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.samples, Receiver.late = {}, {}
    for server in (target, receiver):
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    target_url = f"http://127.0.0.1:{target.server_address[1]}/metrics"
    write = f"http://127.0.0.1:{receiver.server_address[1]}"
    config = tmp / f"prometheus-{series}.yml"
    config.write_text(
        "global: {scrape_interval: 5s, scrape_timeout: 5s}\n"
        "scrape_configs:\n"
        "  - job_name: app\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target.server_address[1]}']}}]\n"
        f"remote_write: [{{url: '{write}/prometheus'}}]\n"
    )
    procs = {
        "sidecarkit": _agent(
            target_url,
            free_port(),
            "--remote-write-url",
            f"{write}/sidecarkit",
            *(["--remote-write-wal-dir", str(tmp / f"wal-{series}")] if wal else []),
        ),
        "prometheus": subprocess.Popen(
            [
                prometheus,
                "--enable-feature=agent",
                f"--config.file={config}",
                f"--storage.agent.path={tmp / f'agent-{series}'}",
                f"--web.listen-address=127.0.0.1:{free_port()}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    }
    try:
        time.sleep(12)  # start, first scrapes, first pushes
        start_cpu = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        with Receiver.lock:
            start_samples = dict(Receiver.samples)
            Receiver.late = {}
        time.sleep(seconds)
        cpu = {name: cpu_seconds(p.pid) - start_cpu[name] for name, p in procs.items()}
        with Receiver.lock:
            samples = {
                name: Receiver.samples.get(f"/{name}", 0) - start_samples.get(f"/{name}", 0)
                for name in procs
            }
            late = {name: list(Receiver.late.get(f"/{name}", [])) for name in procs}
        memory = {name: memory_mb(p.pid) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=30)
        target.shutdown()
        receiver.shutdown()
    per = {name: cpu[name] / max(samples[name], 1) * 1000 * 1000 for name in procs}
    for name in procs:
        lateness = late[name]
        median = statistics.median(lateness) if lateness else float("nan")
        print(
            f"{series:>7} series  {name:<11} {samples[name]:>9} samples  "
            f"CPU {cpu[name]:6.2f} s = {per[name]:6.2f} ms/1000 samples  "
            f"peak {memory[name][0]:6.0f} MB, now {memory[name][1]:6.0f} MB  "
            f"late: median {median:5.2f} s, max {max(lateness, default=float('nan')):5.2f} s"
        )
    print(
        f"{series:>7} series  sidecarkit / prometheus: CPU per sample "
        f"{per['sidecarkit'] / max(per['prometheus'], 1e-9):.2f}x (goal <= 2x), peak memory "
        f"{memory['sidecarkit'][0] / memory['prometheus'][0]:.2f}x (goal <= 1x)"
    )
    if not samples["prometheus"] or not samples["sidecarkit"]:
        raise SystemExit("a sender delivered nothing: the comparison would mean nothing")


#: The Accept header Prometheus scrapes with (2.42): OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def fetch_every(url: str, interval: float, stop: threading.Event, fetched: list[int]) -> None:
    """GET ``url`` every ``interval`` seconds as Prometheus would (on a fixed schedule, not
    ``interval`` after the last answer), noting each body's size; a failed fetch is -1."""
    due = time.monotonic()
    while True:
        due += interval
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        request = urllib.request.Request(url, headers={"Accept": PROMETHEUS_ACCEPT})
        try:
            with urllib.request.urlopen(request, timeout=interval) as r:
                fetched.append(len(r.read()))
        except OSError:
            fetched.append(-1)


def run_merged(series: int, seconds: float, prometheus: str, tmp: Path) -> float:
    """The merged-endpoint mode beside Prometheus scraping the same target; the agent's CPU
    seconds per cycle."""
    Target.body = kube_state_metrics(series)
    Target.hits = {}
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    target.daemon_threads = True
    threading.Thread(target=target.serve_forever, daemon=True).start()
    target_url = f"http://127.0.0.1:{target.server_address[1]}/metrics"
    config = tmp / f"prometheus-merged-{series}.yml"
    config.write_text(
        "global: {scrape_interval: 5s, scrape_timeout: 5s}\n"
        "scrape_configs:\n"
        "  - job_name: app\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target.server_address[1]}']}}]\n"
    )
    port = free_port()
    procs = {
        "sidecarkit": _agent(target_url, port),
        "prometheus": subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / f'tsdb-{series}'}",
                f"--web.listen-address=127.0.0.1:{free_port()}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    }
    stop = threading.Event()
    fetched: list[int] = []
    fetcher = threading.Thread(
        target=fetch_every, args=(f"http://127.0.0.1:{port}/metrics", 5.0, stop, fetched)
    )
    try:
        time.sleep(2.5)  # fetch half-way between the agent's scrapes
        fetcher.start()
        time.sleep(12)  # start, first scrapes, first fetches
        start_cpu = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        start_hits = dict(Target.hits)
        start_fetched = len(fetched)
        time.sleep(seconds)
        cpu = {name: cpu_seconds(p.pid) - start_cpu[name] for name, p in procs.items()}
        hits = {name: Target.hits.get(name, 0) - start_hits.get(name, 0) for name in procs}
        bodies = fetched[start_fetched:]
        memory = {name: memory_mb(p.pid) for name, p in procs.items()}
    finally:
        stop.set()
        if fetcher.is_alive():
            fetcher.join(timeout=30)
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=30)
        target.shutdown()
    for name in procs:
        print(
            f"{series:>7} series  merged  {name:<11} {hits[name]:>3} scrapes  "
            f"CPU {cpu[name]:6.2f} s = {cpu[name] / max(hits[name], 1):5.2f} s per cycle  "
            f"peak {memory[name][0]:6.0f} MB, now {memory[name][1]:6.0f} MB"
        )
    per_cycle = cpu["sidecarkit"] / max(hits["sidecarkit"], 1)
    peer = cpu["prometheus"] / max(hits["prometheus"], 1)
    good = [b for b in bodies if b > 0]
    print(
        f"{series:>7} series  merged  endpoint fetched {len(good)} of {len(bodies)} times, "
        f"{statistics.median(good) / 1e6 if good else 0:.1f} MB each; sidecarkit "
        f"{per_cycle:.2f} CPU-s per cycle (goal <= 1 s at 100000 series), "
        f"{per_cycle / max(peer, 1e-9):.2f}x Prometheus's"
    )
    if not hits["prometheus"] or not hits["sidecarkit"] or len(good) != len(bodies) or not good:
        raise SystemExit("a scraper missed its target: the comparison would mean nothing")
    return per_cycle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="10000,100000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--wal", action="store_true", help="give the agent a remote_write WAL")
    parser.add_argument(
        "--merged", action="store_true", help="the merged-endpoint mode, without remote_write"
    )
    args = parser.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit("prometheus is missing: apt-get install prometheus")
    with tempfile.TemporaryDirectory() as tmp:
        for series in (int(s) for s in args.series.split(",")):
            if args.merged:
                if (
                    run_merged(series, args.seconds, prometheus, Path(tmp)) > 1
                    and series >= 100_000
                ):
                    raise SystemExit("over 1 CPU-second per cycle at 100,000 series")
            else:
                run(series, args.seconds, prometheus, Path(tmp), wal=args.wal)


if __name__ == "__main__":
    main()
