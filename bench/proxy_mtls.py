"""Benchmark: two ``sidecarkit agent proxy`` sidecars speaking mTLS, against two haproxies doing
the same TLS work, in the same run.

The mesh hop as a pod sees it: wrk (plaintext, the calling app) -> proxy A (outbound: originates
mTLS with a workload certificate, verifies the peer's chain and SPIFFE ID) -> proxy B (inbound,
``mtls: strict``: verifies A's certificate, writes ``x-forwarded-client-cert``) -> nginx (the
app, plaintext on loopback). Keep-alive on every hop, so the figure is the per-request cost of
TLS records, not handshakes. haproxy A has ``server ... ssl crt ... ca-file ... verify required``
and haproxy B ``bind ... ssl crt ... ca-file ... verify required``: both hops mutually
authenticated with the same certificates (ECDSA P-256 leaves from ``sidecarkit.security``), TLS
1.3 on both.

Then both sidecars' certificate files are replaced three times during a wrk run while fresh
mTLS connections are made to B alongside: no request may fail (the run exits 1 if one does).

Both proxies of a pair run on core 0 (``taskset``), nginx and wrk on core 1. The figure is
**requests per CPU-second of the two proxy processes together**, as a ratio to haproxy's. Goal:
>= 0.5x. A missing peer (haproxy, nginx, wrk, taskset) fails the run.

    python bench/proxy_mtls.py [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _building
from proxy import BACKEND_CONF, cpu_seconds, medians, wait_port, wrk
from proxy import stop as stop_processes

from sidecarkit.security import authority, spiffe

BACKEND, A, B = 18480, 18400, 18410
"""wrk calls A on ``PROXY`` (18400) as in ``proxy.py``, whose ``wrk`` helper dials it."""

HAPROXY_A = """global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend fe
  bind 127.0.0.1:{a}
  default_backend be
backend be
  http-reuse always
  server b 127.0.0.1:{b} ssl crt {d}/a.pem ca-file {d}/root.crt verify required alpn http/1.1
"""
HAPROXY_B = """global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend fe
  bind 127.0.0.1:{b} ssl crt {d}/b.pem ca-file {d}/root.crt verify required alpn http/1.1
  http-request set-header x-forwarded-client-cert "URI=%{{+Q}}[ssl_c_s_dn]"
  default_backend be
backend be
  http-reuse always
  server app 127.0.0.1:{backend}
"""
SIDECARKIT_A = """admin: 127.0.0.1:0
identity: {{trust_bundle: {d}/root.crt, cert: {d}/a.crt, key: {d}/a.key}}
upstreams:
  - {{name: b, listen: 127.0.0.1:{a}, endpoints: ['127.0.0.1:{b}'], mtls: true,
     peer: 'spiffe://cluster.local/ns/bench/sa/b'}}
"""
SIDECARKIT_B = """admin: 127.0.0.1:0
identity: {{trust_bundle: {d}/root.crt, cert: {d}/b.crt, key: {d}/b.key}}
inbound: {{listen: 127.0.0.1:{b}, app: 127.0.0.1:{backend}, mtls: strict}}
"""


def certificates(d: Path) -> authority.Authority:
    """A root, an intermediate and a workload certificate for each side, as files."""
    root, intermediate = authority.new_authority("cluster.local")
    auth = authority.load_authority(intermediate, root.cert, source="bench")
    (d / "root.crt").write_bytes(root.cert)
    issue(auth, d)
    return auth


def issue(auth: authority.Authority, d: Path) -> None:
    """New workload certificates for both sides, each file replaced by a rename (a reader sees
    the old or the new file, and a pair caught half-way is retried by the proxy)."""
    for side in ("a", "b"):
        key = authority.new_key()
        who = spiffe.Identity("cluster.local", "bench", side)
        chain = authority.issue_workload(auth, authority.new_csr(key), who, ttl=86400)
        for name, data in (
            (f"{side}.key", authority.pem_key(key)), (f"{side}.crt", chain),
            (f"{side}.pem", chain + authority.pem_key(key)),
        ):  # fmt: skip
            (d / f".{name}.tmp").write_bytes(data)
            os.replace(d / f".{name}.tmp", d / name)


def rotation_under_load(
    d: Path, auth: authority.Authority, pair: list[list[str]], seconds: int
) -> int:
    """Failed requests while both sidecars' certificates are replaced three times under wrk,
    with fresh mTLS handshakes to B alongside (a kept-alive connection never sees the new
    certificate; new ones must get it, and none may fail)."""
    procs = [
        subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL) for argv in pair
    ]
    context = ssl.create_default_context(cadata=(d / "root.crt").read_text())
    context.check_hostname = False
    context.load_cert_chain(d / "a.pem")
    stop = threading.Event()
    counts: dict[str, Any] = {"handshakes": 0, "failed": 0, "serials": set()}

    def handshakes() -> None:
        while not stop.is_set():
            try:
                raw = socket.create_connection(("127.0.0.1", B), 5)
                with context.wrap_socket(raw) as s:
                    counts["serials"].add(hash(s.getpeercert(binary_form=True)))
                    s.sendall(b"GET /small HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                    answer = b""
                    while chunk := s.recv(65536):
                        answer += chunk
                ok = answer.startswith(b"HTTP/1.1 200")
            except OSError:
                ok = False
            counts["handshakes"] += 1
            counts["failed"] += not ok
            time.sleep(0.01)

    try:
        wait_port(B)
        wait_port(A)
        thread = threading.Thread(target=handshakes)
        thread.start()
        timers = [threading.Timer(seconds * i / 4, issue, (auth, d)) for i in (1, 2, 3)]
        for timer in timers:
            timer.start()
        requests, _, bad = wrk("/small", seconds)
        stop.set()
        thread.join()
        print(
            f"rotation under load: 3 rotations of both certificates; {requests} requests through "
            f"the pair, {bad} failed; {counts['handshakes']} fresh mTLS handshakes to B, "
            f"{counts['failed']} failed, {len(counts['serials'])} certificates seen"
        )
        return bad + int(counts["failed"])
    finally:
        stop_processes(*procs)


def measure(name: str, pair: list[list[str]], seconds: int) -> dict[str, float]:
    procs = [
        subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL) for argv in pair
    ]
    try:
        wait_port(B)
        wait_port(A)
        if wrk("/small", 2)[2]:  # warm up: pooled connections, TLS sessions
            raise SystemExit(f"{name}: requests failed while warming up")
        result: dict[str, float] = {}
        for label, path in (("small", "/small"), ("big", "/big")):
            before = sum(cpu_seconds(p.pid) for p in procs)
            requests, wall, bad = wrk(path, seconds)
            cpu = sum(cpu_seconds(p.pid) for p in procs) - before
            if bad:
                raise SystemExit(f"{name}: {bad} failed requests on {path}")
            result[f"{label}_rps"] = requests / wall
            result[f"{label}_per_cpu_s"] = requests / cpu if cpu else 0.0
        return result
    finally:
        stop_processes(*procs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each pair, in turn")
    _building.option(parser)
    args = parser.parse_args()
    _building.use(pure=args.pure)
    missing = [t for t in ("haproxy", "nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        print(
            f"FAIL: peer or tool missing: {', '.join(missing)} (apt-get install haproxy nginx wrk)"
        )
        return 1
    d = Path(tempfile.mkdtemp(prefix="sidecarkit-bench-mtls-"))
    (d / "www").mkdir()
    (d / "www" / "small").write_bytes(b"x" * 99 + b"\n")
    (d / "www" / "big").write_bytes(bytes(range(256)) * 256)
    auth = certificates(d)
    (d / "backend.conf").write_text(BACKEND_CONF.format(d=d, port=BACKEND))
    values = {"a": A, "b": B, "backend": BACKEND, "d": d}
    for name, text in (
        ("haproxy-a.cfg", HAPROXY_A), ("haproxy-b.cfg", HAPROXY_B),
        ("sidecarkit-a.yaml", SIDECARKIT_A), ("sidecarkit-b.yaml", SIDECARKIT_B),
    ):  # fmt: skip
        (d / name).write_text(text.format(**values))
    agent = [sys.executable, "-c", "from sidecarkit.entry import main; main()", "agent", "proxy",
             "--log-level", "warning", "--config"]  # fmt: skip
    pairs = {
        "haproxy": [["haproxy", "-db", "-f", str(d / f"haproxy-{s}.cfg")] for s in "ba"],
        "sidecarkit": [[*agent, str(d / f"sidecarkit-{s}.yaml")] for s in "ba"],
    }
    backend = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", str(d / "backend.conf")])
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in pairs}
    failed_in_rotation = 0
    try:
        wait_port(BACKEND)
        for _ in range(args.rounds):
            for name, pair in pairs.items():
                r = measure(name, pair, args.duration)
                rounds[name].append(r)
                print(
                    f"{name:10s} mTLS pair: small {r['small_rps']:7.0f} req/s "
                    f"{r['small_per_cpu_s']:7.0f} req/CPU-s | 64K {r['big_rps']:6.0f} req/s "
                    f"{r['big_per_cpu_s']:6.0f} req/CPU-s",
                    flush=True,
                )
        failed_in_rotation = rotation_under_load(d, auth, pairs["sidecarkit"], args.duration)
    finally:
        stop_processes(backend)
        shutil.rmtree(d, ignore_errors=True)
    med = medians(rounds)
    small = med["sidecarkit"]["small_per_cpu_s"] / med["haproxy"]["small_per_cpu_s"]
    big = med["sidecarkit"]["big_per_cpu_s"] / med["haproxy"]["big_per_cpu_s"]
    print(f"medians over {args.rounds} rounds: sidecarkit / haproxy per CPU-second of the pair: "
          f"small {small:.2f}x, 64 KiB {big:.2f}x")  # fmt: skip
    print(
        f"goal: small >= 0.5x: {'met' if small >= 0.5 else 'MISSED'} ({small:.2f}); "
        f"rotation under load, 0 failed: {'met' if not failed_in_rotation else 'MISSED'}"
    )
    return 1 if failed_in_rotation else 0


if __name__ == "__main__":
    sys.exit(main())
