"""Benchmark: the proxy's own work per request, counted in CPU instructions, against another
revision of the proxy in the same run.

Why: on a shared 2-core box a requests-per-CPU-second ratio against haproxy moves by +-15 %
between runs of the same code (the kernel's and the other jobs' share of the core changes), so
it cannot tell a 3 % change in the proxy from noise. This bench takes the kernel, the network
and the load out: one client connection (``forwarding.Downstream``) and one pooled endpoint
connection (``pools.Connection``) of the real classes are driven in-process through keep-alive
request/response cycles, their transports replaced by stand-ins that only count bytes, and
valgrind (``cachegrind``) counts the instructions executed. Two runs of N1 and N2 requests are
subtracted, so start-up does not count. The result is deterministic to about 0.1 %.

It measures what runs in the proxy's process for a request: Python, httptools' parser, the
objects made and freed; not the system calls, the event loop or TLS. The request is wrk's with
the 12 extra headers of ``bench/proxy.py``; the response is nginx's (8 fields), 100 bytes or
64 KiB. Also printed: Python function calls per request (cProfile's count, built-ins included).

    python bench/proxy_instructions.py [--baseline REV] [--compiled]

``REV`` (default ``main``) is exported with ``git archive`` and measured the same way; the run
prints this tree / baseline. ``--compiled`` measures this tree as the image builds it
(build/compiled, see ``bench/_building.py``) against the baseline's sources. Fails (exit 1)
when valgrind or git is missing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _building

ROOT = Path(__file__).resolve().parent.parent
N1, N2 = 1000, 6000

WORKLOAD = r'''
import asyncio, sys
from sidecarkit.agents.proxy import forwarding, pools, services, telemetry
from sidecarkit.agents.proxy import settings as proxy_settings


class Transport:
    """Stands in for the event loop's transport: takes the bytes, counts them."""

    def __init__(self):
        self.written = 0

    def write(self, data):
        self.written += len(data)

    def writelines(self, pieces):
        self.written += sum(map(len, pieces))

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass

    def abort(self):
        pass


try:  # the agent runs on uvloop when it is installed: its loop.time() is C, asyncio's Python
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    loop = asyncio.new_event_loop()
service = services.Service(
    "app", direction="inbound", balancer="p2c-peak-ewma", host=None,
    settings=proxy_settings.Settings(), metrics=telemetry.Registry(), loop=loop,
)
service.set_endpoints([("127.0.0.1", 18480)])
endpoint = service.balancer.endpoints[0]
conn = pools.Connection(endpoint.pool)
conn.connection_made(Transport())
endpoint.pool.open += 1
endpoint.pool.idle.append(conn)
down = forwarding.Downstream(service)
down.connection_made(Transport())
request = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:18400\r\n" + b"".join(
    b"x-bench-header-%d: %s-%d\r\n" % (i, b"v" * 24, i) for i in range(12)
) + b"\r\n"
body = b"x" * int(sys.argv[2])
response = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 19:57:02 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
    b"Last-Modified: Fri, 04 Dec 2026 19:56:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6571a2b0-64"\r\nAccept-Ranges: bytes\r\n\r\n' % len(body)
) + body


def run(n):
    for _ in range(n):
        down.data_received(request)
        conn.data_received(response)
    if conn.parser.get_status_code() != 200 or service.in_flight:
        raise SystemExit("the exchange did not complete")


if sys.argv[3] == "calls":
    import cProfile, pstats
    run(100)
    profile = cProfile.Profile()
    profile.runcall(run, int(sys.argv[1]))
    print(pstats.Stats(profile).total_calls / int(sys.argv[1]))
else:
    run(int(sys.argv[1]))
'''


def _env(src: Path) -> dict[str, str]:
    """The tree to import, and a fixed hash seed: dictionaries and sets behave the same in
    every run."""
    return {"PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}


def instructions(src: Path, script: Path, size: int, count: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, str(script), str(count), str(size), "count"],
        capture_output=True, text=True, check=True, env=_env(src),
    ).stderr  # fmt: skip
    found = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if found is None:
        raise SystemExit(f"valgrind printed no instruction count:\n{out}")
    return int(found.group(1).replace(",", ""))


def per_request(src: Path, script: Path, size: int) -> tuple[float, float]:
    """(instructions, Python function calls) per request. A first run compiles the tree's
    modules (``__pycache__``), so that neither measured run pays for it."""
    calls = subprocess.run(
        [sys.executable, str(script), "5000", str(size), "calls"],
        capture_output=True, text=True, check=True, env=_env(src),
    ).stdout  # fmt: skip
    delta = instructions(src, script, size, N2) - instructions(src, script, size, N1)
    return delta / (N2 - N1), float(calls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="Measure this tree as the image builds it (build/compiled, mypyc), not its sources.",
    )
    args = parser.parse_args()
    missing = [tool for tool in ("valgrind", "git") if shutil.which(tool) is None]
    if missing:
        print(f"FAIL: tool missing: {', '.join(missing)} (apt-get install valgrind git)")
        return 1
    with tempfile.TemporaryDirectory(prefix="sidecarkit-bench-insn-") as tmp:
        d = Path(tmp)
        script = d / "workload.py"
        script.write_text(WORKLOAD)
        baseline = _building.export_sources(args.baseline, d)
        tree = ROOT / "src"
        if args.compiled:
            _building.environment()  # builds build/compiled and checks it
            tree = _building.COMPILED
        trees = {"this tree": tree, f"baseline {args.baseline}": baseline}
        for label, size in (("100 B", 100), ("64 KiB", 65536)):
            results = {name: per_request(src, script, size) for name, src in trees.items()}
            for name, (insn, calls) in results.items():
                print(
                    f"{label:7s} {name:20s} {insn:9.0f} instructions/request "
                    f"{calls:6.1f} Python calls/request"
                )
            (mine, mine_calls), (base, base_calls) = results.values()
            print(
                f"{label:7s} this tree / baseline: instructions {mine / base:.3f}x, "
                f"calls {mine_calls / base_calls:.3f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
