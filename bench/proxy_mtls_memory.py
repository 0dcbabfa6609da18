"""Benchmark: memory per open mTLS connection on a strict inbound port, against haproxy doing
the same TLS work, in the same run.

A pod's sidecar holds one TLS connection per calling peer (kept alive by the callers' pools),
so what each costs in memory bounds how many callers a small sidecar can hold. The inbound
side of ``bench/proxy_mtls.py`` (proxy B: ``mtls: strict``, the client certificate verified)
and haproxy B (``bind ... ssl ... verify required``) each get ``--connections`` mTLS
connections from a client with the mesh certificate; each connection sends one request
(answered by nginx, so buffers are in their working state) and is then held idle. The figure
is the growth of the process's resident memory divided by the connections, in KiB, and its
ratio to haproxy's. There is no target in the issue; the figure is printed to be watched.
A missing peer (haproxy, nginx) or a failed request fails the run.

    python bench/proxy_mtls_memory.py [--connections 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _building
from proxy import BACKEND_CONF, rss_mb, wait_port
from proxy import stop as stop_processes
from proxy_mtls import BACKEND, HAPROXY_B, SIDECARKIT_B, B, certificates


def held(port: int, context: ssl.SSLContext, count: int) -> list[ssl.SSLSocket]:
    """``count`` mTLS connections to ``port``, each after one answered request."""
    out = []
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), 10)
        s = context.wrap_socket(raw)
        s.sendall(b"GET /small HTTP/1.1\r\nHost: b\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got or not got.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("a connection was closed before its answer")
            got += chunk
        if not got.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"a request failed: {got[:60]!r}")
        out.append(s)
    return out


def measure(argv: list[str], context: ssl.SSLContext, count: int) -> float:
    """KiB of resident memory per held connection of the process started with ``argv``."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(B)
        for s in held(B, context, 8):  # warm up: code paths, the TLS library's pools
            s.close()
        time.sleep(0.5)
        before = rss_mb(proc.pid)
        sockets = held(B, context, count)
        time.sleep(1.0)
        after = rss_mb(proc.pid)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()
        return (after - before) * 1024 / count
    finally:
        stop_processes(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500, help="connections held")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, in turn")
    _building.option(parser)
    args = parser.parse_args()
    _building.use(pure=args.pure)
    missing = [t for t in ("haproxy", "nginx") if shutil.which(t) is None]
    if missing:
        print(f"FAIL: peer missing: {', '.join(missing)} (apt-get install haproxy nginx)")
        return 1
    d = Path(tempfile.mkdtemp(prefix="sidecarkit-bench-mtls-mem-"))
    (d / "www").mkdir()
    (d / "www" / "small").write_bytes(b"x" * 99 + b"\n")
    certificates(d)
    (d / "backend.conf").write_text(BACKEND_CONF.format(d=d, port=BACKEND))
    values = {"b": B, "backend": BACKEND, "d": d}
    (d / "haproxy-b.cfg").write_text(HAPROXY_B.format(**values))
    (d / "sidecarkit-b.yaml").write_text(SIDECARKIT_B.format(**values))
    context = ssl.create_default_context(cadata=(d / "root.crt").read_text())
    context.check_hostname = False
    context.load_cert_chain(d / "a.pem")  # the calling side's mesh certificate
    agent = [sys.executable, "-c", "from sidecarkit.entry import main; main()", "agent", "proxy",
             "--log-level", "warning", "--config", str(d / "sidecarkit-b.yaml")]  # fmt: skip
    peers = {"haproxy": ["haproxy", "-db", "-f", str(d / "haproxy-b.cfg")], "sidecarkit": agent}
    backend = subprocess.Popen(["nginx", "-c", str(d / "backend.conf")])
    results: dict[str, list[float]] = {name: [] for name in peers}
    try:
        wait_port(BACKEND)
        for _ in range(args.rounds):
            for name, argv in peers.items():
                results[name].append(measure(argv, context, args.connections))
                print(f"{name:10s} {results[name][-1]:6.1f} KiB per held mTLS connection",
                      flush=True)  # fmt: skip
    finally:
        stop_processes(backend)
        shutil.rmtree(d, ignore_errors=True)
    med = {name: statistics.median(runs) for name, runs in results.items()}
    print(
        f"medians over {args.rounds} rounds, {args.connections} connections: "
        f"sidecarkit {med['sidecarkit']:.1f} KiB, haproxy {med['haproxy']:.1f} KiB per "
        f"connection; sidecarkit / haproxy {med['sidecarkit'] / max(med['haproxy'], 0.1):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
