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

    def do_GET(self) -> None:
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
        "sidecarkit": subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecarkit",
                "agent",
                "metrics",
                "--target",
                target_url,
                "--interval",
                "5s",
                "--port",
                str(free_port()),
                "--statsd-port",
                "0",
                "--remote-write-url",
                f"{write}/sidecarkit",
                "--log-level",
                "warning",
                *(["--remote-write-wal-dir", str(tmp / f"wal-{series}")] if wal else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="10000,100000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--wal", action="store_true", help="give the agent a remote_write WAL")
    args = parser.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit("prometheus is missing: apt-get install prometheus")
    with tempfile.TemporaryDirectory() as tmp:
        for series in (int(s) for s in args.series.split(",")):
            run(series, args.seconds, prometheus, Path(tmp), wal=args.wal)


if __name__ == "__main__":
    main()
