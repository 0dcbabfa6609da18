"""Benchmark: latency the proxy adds at a fixed request rate, against haproxy, same run.

An open-loop generator (``bench/openloop``, Go, built here with the local toolchain: wrk2 is
not packaged by Debian) sends requests at a fixed rate, 1,000 a second by default, over 32
keep-alive connections, and measures each one from the moment it was due, so a stall delays
and counts the requests behind it (no coordinated omission). It sends to the backend directly,
then through ``sidecarkit agent proxy`` (inbound listener in front of the backend), then
through haproxy (one thread, ``http-reuse always``), in turn, ``--rounds`` times. The backend
is one nginx worker serving 100 bytes, as in ``bench/proxy.py``; the proxy under test runs on
core 0, the backend and the generator on core 1. Requests carry the same 12 headers.

Printed per run: p50, p90, p99, p99.9 in ms and the proxy's CPU-microseconds per request;
then medians, the latency each proxy adds to the direct figures, and the goals: sidecarkit's
added p50 <= 0.3 ms and p99 <= 1 ms. A missing peer or tool (haproxy, nginx, taskset, go)
or a run with failed requests fails the benchmark (exit 1).

    python bench/proxy_latency.py [--rate 1000] [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _building
import proxy as throughput

HERE = Path(__file__).resolve().parent
BACKEND, PROXY = throughput.BACKEND, throughput.PROXY
KEYS = ("p50_us", "p90_us", "p99_us", "p999_us")


def build(into: Path) -> Path:
    """The generator, built from ``bench/openloop`` (no dependencies beyond Go's stdlib)."""
    out = into / "openloop"
    subprocess.run(
        ["go", "build", "-o", str(out), "."],
        cwd=HERE / "openloop", check=True, env={**os.environ, "CGO_ENABLED": "0"},
    )  # fmt: skip
    return out


def load(tool: Path, port: int, rate: int, seconds: int) -> dict[str, float]:
    argv = ["taskset", "-c", "1", str(tool), "-addr", f"127.0.0.1:{port}", "-path", "/small"]
    argv += ["-rate", str(rate), "-duration", f"{seconds}s", "-warmup", "2s", "-conns", "32"]
    for header in throughput.HEADERS:
        argv += ["-header", header]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def run(name: str, argv: list[str] | None, tool: Path, rate: int, seconds: int) -> dict[str, float]:
    """One measured run; ``argv`` None sends to the backend directly."""
    if argv is None:
        result = load(tool, BACKEND, rate, seconds)
        result["cpu_us_per_request"] = 0.0
    else:
        proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL)
        try:
            throughput.wait_port(PROXY)
            before = throughput.cpu_seconds(proc.pid)
            result = load(tool, PROXY, rate, seconds)
            cpu = throughput.cpu_seconds(proc.pid) - before
            sent = result["requests"] * (seconds + 2) / seconds  # the warm-up's share too
            result["cpu_us_per_request"] = cpu * 1e6 / sent
        finally:
            throughput.stop(proc)
    if result["errors"]:
        raise SystemExit(f"FAIL: {name}: {result['errors']:.0f} failed requests")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="requests per second")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, in turn")
    _building.option(parser)
    args = parser.parse_args()
    _building.use(pure=args.pure)
    missing = [t for t in ("haproxy", "nginx", "taskset", "go") if shutil.which(t) is None]
    if missing:
        print(f"FAIL: peer or tool missing: {', '.join(missing)} (apt-get install haproxy nginx)")
        return 1
    d = Path(tempfile.mkdtemp(prefix="sidecarkit-bench-latency-"))
    (d / "www").mkdir()
    (d / "www" / "small").write_bytes(b"x" * 99 + b"\n")
    (d / "backend.conf").write_text(throughput.BACKEND_CONF.format(d=d, port=BACKEND))
    (d / "haproxy.cfg").write_text(
        throughput.HAPROXY_CONF.format(port=PROXY, backend=BACKEND, tcp_port=PROXY + 1)
    )
    peers: dict[str, list[str] | None] = {
        "direct": None,
        "sidecarkit": [
            sys.executable, "-c", "from sidecarkit.entry import main; main()", "agent", "proxy",
            "--inbound", f"127.0.0.1:{PROXY}", "--app", f"127.0.0.1:{BACKEND}",
            "--admin", "127.0.0.1:0", "--log-level", "warning",
        ],
        "haproxy": ["haproxy", "-db", "-f", str(d / "haproxy.cfg")],
    }  # fmt: skip
    backend = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", str(d / "backend.conf")])
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in peers}
    try:
        tool = build(d)
        throughput.wait_port(BACKEND)
        for _ in range(args.rounds):  # in turn, so that foreign load hits all alike
            for name, argv in peers.items():
                r = run(name, argv, tool, args.rate, args.duration)
                runs[name].append(r)
                print(
                    f"{name:10s} {args.rate} req/s: "
                    + " ".join(f"{k[:-3]} {r[k] / 1000:.3f} ms" for k in KEYS)
                    + f" | {r['cpu_us_per_request']:.0f} CPU-us/request"
                    + f" | achieved {r['rate']:.0f} req/s, {r['late_sends']:.0f} late sends",
                    flush=True,
                )
    finally:
        throughput.stop(backend)
        shutil.rmtree(d, ignore_errors=True)
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in (*KEYS, "cpu_us_per_request")}
        for name, rs in runs.items()
    }
    direct = med["direct"]
    print(f"medians over {args.rounds} rounds, added to the direct path:")
    added = {}
    for name in ("sidecarkit", "haproxy"):
        added[name] = {k: (med[name][k] - direct[k]) / 1000 for k in KEYS}
        print(
            f"{name:10s} + " + " ".join(f"{k[:-3]} {v:+.3f} ms" for k, v in added[name].items())
            + f" | {med[name]['cpu_us_per_request']:.0f} CPU-us/request"
        )  # fmt: skip
    cpu = med["sidecarkit"]["cpu_us_per_request"] / med["haproxy"]["cpu_us_per_request"]
    print(f"sidecarkit / haproxy CPU per request: {cpu:.2f}x")
    p50, p99 = added["sidecarkit"]["p50_us"], added["sidecarkit"]["p99_us"]
    print(
        f"goals: added p50 <= 0.3 ms: {'met' if p50 <= 0.3 else 'MISSED'} ({p50:+.3f}); "
        f"added p99 <= 1 ms: {'met' if p99 <= 1.0 else 'MISSED'} ({p99:+.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
