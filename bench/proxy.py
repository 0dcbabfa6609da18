"""Benchmark: ``sidecarkit agent proxy`` against haproxy and nginx as reverse proxies, same run.

Setup (as in ``../shared/research/proxy-bench``): one nginx worker is the backend, serving a
100-byte and a 64 KiB file with keep-alive; each proxy under test runs alone on core 0
(``taskset``), the backend and wrk share core 1. wrk (``-t1 -c64``, 12 request headers of
realistic size) drives each proxy in turn; the figure that means something on a shared 2-core
box is **requests per CPU-second of the proxy process** (utime+stime from ``/proc``), printed as
a ratio to haproxy's. Then 1,000 idle keep-alive connections are opened to each proxy (each
having made one request) and the proxy's RSS is read.

Then, in L4 mode, a 256 MiB file is downloaded four times through each relay (haproxy
``mode tcp``; Debian's nginx loads no stream module, so it has no L4 figure) and the relay's
MB per CPU-second is printed.

Goals: small responses >= 0.5x haproxy per CPU-second, 64 KiB >= 0.8x, L4 >= 1x, RSS with
1,000 idle connections <= 40 MB. A missing peer (haproxy, nginx, wrk, taskset, curl) fails
the run.

    python bench/proxy.py [--duration 10] [--rounds 3] [--only sidecarkit,haproxy,nginx]

Each proxy runs ``--rounds`` times, in turn with the others; the ratios are of medians.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _building

TCK = os.sysconf("SC_CLK_TCK")
BACKEND, PROXY = 18480, 18400
HEADERS = [f"x-bench-header-{i}: {'v' * 24}-{i}" for i in range(12)]
IDLE_CONNECTIONS = 1000

BACKEND_CONF = """worker_processes 1; daemon off; master_process off; user root;
pid {d}/backend.pid; error_log {d}/backend.err warn;
events {{ worker_connections 8192; }}
http {{ access_log off; default_type application/octet-stream;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 100000000; keepalive_timeout 600s;
  client_body_temp_path {d}/cb; proxy_temp_path {d}/pt; fastcgi_temp_path {d}/ft;
  uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;
  server {{ listen 127.0.0.1:{port} backlog=4096; root {d}/www; }} }}
"""
NGINX_CONF = """worker_processes 1; daemon off; master_process off; user root;
pid {d}/proxy.pid; error_log {d}/proxy.err warn;
events {{ worker_connections 8192; }}
http {{ access_log off;
  keepalive_requests 100000000; keepalive_timeout 600s;
  client_body_temp_path {d}/cb2; proxy_temp_path {d}/pt2; fastcgi_temp_path {d}/ft2;
  uwsgi_temp_path {d}/ut2; scgi_temp_path {d}/st2;
  upstream be {{ server 127.0.0.1:{backend}; keepalive 128; keepalive_requests 100000000; }}
  server {{ listen 127.0.0.1:{port} backlog=4096;
    location / {{ proxy_pass http://be; proxy_http_version 1.1;
      proxy_set_header Connection ""; }} }} }}
"""
HAPROXY_CONF = """global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:{backend}
frontend fe_tcp
  mode tcp
  bind 127.0.0.1:{tcp_port}
  default_backend be_tcp
backend be_tcp
  mode tcp
  server s1 127.0.0.1:{backend}
"""
L4_FILE_MB = 256
L4_ROUNDS = 4


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """SIGTERM to each, then up to 10 s for each to exit; SIGKILL for those that do not."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def medians(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per subject, the median of each figure over its rounds."""
    return {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rounds.items()
    }


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout}s")


def wrk(path: str, seconds: int, connections: int = 64) -> tuple[int, float, int]:
    """(requests, wall seconds, non-2xx or socket errors) of one wrk run on core 1."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for header in HEADERS:
        cmd += ["-H", header]
    cmd.append(f"http://127.0.0.1:{PROXY}{path}")
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    m = re.search(r"(\d+) requests in", out)
    if m is None:
        raise SystemExit(f"wrk printed no request count:\n{out}")
    bad = 0
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if found:
        bad += int(found.group(1))
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if found:  # a timeout is a request slower than wrk's 2 s on a crowded box, not a failure
        bad += sum(int(g) for g in found.groups()[:3])
    if bad:
        print(out, file=sys.stderr)
    return int(m.group(1)), wall, bad


def idle_rss(pid: int) -> float:
    """RSS of ``pid`` after ``IDLE_CONNECTIONS`` keep-alive connections each made a request."""
    socks = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", PROXY), 5)
            s.sendall(b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n")
            socks.append(s)
        for s in socks:
            got = b""
            while b"\r\n\r\n" not in got or len(got) < 100:
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit("a proxy closed an idle keep-alive connection")
                got += chunk
        time.sleep(0.5)
        return rss_mb(pid)
    finally:
        for s in socks:
            s.close()


def relay_mb_per_cpu_s(pid: int) -> float:
    """MB moved per CPU-second of ``pid`` relaying ``L4_ROUNDS`` downloads of the big file."""
    before = cpu_seconds(pid)
    moved = 0
    for _ in range(L4_ROUNDS):
        out = subprocess.run(
            ["taskset", "-c", "1", "curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
             f"http://127.0.0.1:{PROXY + 1}/huge"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if int(out) != L4_FILE_MB << 20:
            raise SystemExit(f"L4 download came out {out} bytes, not {L4_FILE_MB} MiB")
        moved += int(out)
    cpu = cpu_seconds(pid) - before
    return moved / 1e6 / cpu if cpu else 0.0


def measure(name: str, argv: list[str], seconds: int) -> dict[str, float]:
    proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL)
    try:
        wait_port(PROXY)
        wrk("/small", 2)  # warm up: pooled connections, caches
        result: dict[str, float] = {}
        for label, path in (("small", "/small"), ("big", "/big")):
            before = cpu_seconds(proc.pid)
            requests, wall, bad = wrk(path, seconds)
            cpu = cpu_seconds(proc.pid) - before
            if bad:
                raise SystemExit(f"{name}: {bad} failed requests on {path}")
            result[f"{label}_rps"] = requests / wall
            result[f"{label}_per_cpu_s"] = requests / cpu if cpu else 0.0
            result[f"{label}_util"] = cpu / wall
        result["rss_idle_mb"] = idle_rss(proc.pid)
        if name != "nginx":  # Debian's nginx has no stream module loaded: no L4 peer there
            wait_port(PROXY + 1)
            result["l4_mb_per_cpu_s"] = relay_mb_per_cpu_s(proc.pid)
        return result
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--only", default="sidecarkit,haproxy,nginx")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each proxy, in turn")
    _building.option(parser)
    args = parser.parse_args()
    _building.use(pure=args.pure)
    needed = ("haproxy", "nginx", "wrk", "taskset", "curl")
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        print(
            f"FAIL: peer or tool missing: {', '.join(missing)} (apt-get install haproxy nginx wrk)"
        )
        return 1
    names = args.only.split(",")
    if "haproxy" not in names:
        print("FAIL: haproxy is the reference; keep it in --only")
        return 1
    d = Path(tempfile.mkdtemp(prefix="sidecarkit-bench-proxy-"))
    (d / "www").mkdir()
    (d / "www" / "small").write_bytes(b"x" * 99 + b"\n")
    (d / "www" / "big").write_bytes(os.urandom(32768).hex().encode())
    with (d / "www" / "huge").open("wb") as f:
        for _ in range(L4_FILE_MB):
            f.write(os.urandom(1 << 20))
    (d / "backend.conf").write_text(BACKEND_CONF.format(d=d, port=BACKEND))
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=PROXY, backend=BACKEND))
    (d / "haproxy.cfg").write_text(
        HAPROXY_CONF.format(port=PROXY, backend=BACKEND, tcp_port=PROXY + 1)
    )
    proxies = {
        "haproxy": ["haproxy", "-db", "-f", str(d / "haproxy.cfg")],
        "nginx": ["nginx", "-c", str(d / "nginx.conf")],
        "sidecarkit": [
            sys.executable, "-c", "from sidecarkit.entry import main; main()", "agent", "proxy",
            "--inbound", f"127.0.0.1:{PROXY}", "--app", f"127.0.0.1:{BACKEND}",
            "--tcp-upstream", f"l4=127.0.0.1:{PROXY + 1}=127.0.0.1:{BACKEND}",
            "--admin", "127.0.0.1:0", "--log-level", "warning",
        ],
    }  # fmt: skip
    backend = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", str(d / "backend.conf")])
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        wait_port(BACKEND)
        for _ in range(args.rounds):  # in turn, so that a burst of foreign load hits all alike
            for name in names:
                rounds[name].append(measure(name, proxies[name], args.duration))
                r = rounds[name][-1]
                print(
                    f"{name:10s} small {r['small_rps']:8.0f} req/s "
                    f"{r['small_per_cpu_s']:8.0f} req/CPU-s "
                    f"(util {r['small_util']:.2f}) | 64K {r['big_rps']:7.0f} req/s "
                    f"{r['big_per_cpu_s']:7.0f} req/CPU-s (util {r['big_util']:.2f}) | "
                    f"RSS with {IDLE_CONNECTIONS} idle {r['rss_idle_mb']:.1f} MB"
                    + (
                        f" | L4 {r['l4_mb_per_cpu_s']:.0f} MB/CPU-s"
                        if "l4_mb_per_cpu_s" in r
                        else ""
                    ),
                    flush=True,
                )
    finally:
        stop(backend)
        shutil.rmtree(d, ignore_errors=True)
    results = medians(rounds)
    if args.rounds > 1:
        print(f"medians over {args.rounds} rounds:")
    ref = results["haproxy"]
    for name, r in results.items():
        if name == "haproxy":
            continue
        small = r["small_per_cpu_s"] / ref["small_per_cpu_s"]
        big = r["big_per_cpu_s"] / ref["big_per_cpu_s"]
        l4 = (
            f", L4 {r['l4_mb_per_cpu_s'] / ref['l4_mb_per_cpu_s']:.2f}x"
            if "l4_mb_per_cpu_s" in r
            else ""
        )
        print(f"{name} / haproxy per proxy-CPU-second: small {small:.2f}x, 64 KiB {big:.2f}x{l4}")
    if "sidecarkit" in results:
        r = results["sidecarkit"]
        small = r["small_per_cpu_s"] / ref["small_per_cpu_s"]
        big = r["big_per_cpu_s"] / ref["big_per_cpu_s"]
        print(
            f"goals: small >= 0.5x: {'met' if small >= 0.5 else 'MISSED'} ({small:.2f}); "
            f"64 KiB >= 0.8x: {'met' if big >= 0.8 else 'MISSED'} ({big:.2f}); "
            f"RSS <= 40 MB: {'met' if r['rss_idle_mb'] <= 40 else 'MISSED'} "
            f"({r['rss_idle_mb']:.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
