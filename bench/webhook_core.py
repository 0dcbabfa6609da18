"""Benchmark: instructions per admission review in the webhook's request path, without TLS.

On a machine shared with other work, CPU time per request swings by half from run to run;
the number of instructions executed does not. This runs the server's own ``_admit_small`` (parse,
facts, verdict cache, injection, diff, patch and answer encoding, metrics) in-process under
valgrind's cachegrind, once with ``--reviews`` reviews and once with none (the same set-up,
imports and warm-up), and prints the difference per review for each workload of
``bench/webhook.py``: distinct pods, one template (answered from the verdict cache) and the
template-heavy pod. It complements that bench, whose ratio against a bare TLS server is the
target; it does not replace it. Exits non-zero when valgrind is missing.

With ``--servers``, whole servers instead: ``sidecarkit webhook`` and the bare aiohttp TLS
endpoint of ``bench/webhook.py``, each under cachegrind, sent the reviews one after another on
one keep-alive connection (instructions of the server process only; its timers add about
±10 k), and the ratio of the two per workload.

Both measure the compiled build the image ships (``make compiled``, see ``bench/_building.py``);
``--pure`` measures the Python sources.

    python bench/webhook_core.py [--reviews 300] [--servers] [--pure]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {"distinct": 1.0, "one template": 3.0, "template-heavy": 0.34}
"""Workload and how many times ``--reviews`` it runs (the heavy pod is slow under valgrind)."""


def _serve(workload: str, count: int, total: int) -> None:
    """Answer ``count`` of ``total`` prepared reviews (after a warm-up) in this process."""
    sys.path[:0] = [str(ROOT / "bench")]
    import webhook  # noqa: PLC0415

    from sidecarkit.webhook import serving  # noqa: PLC0415

    pod = webhook.heavy_pod() if workload == "template-heavy" else webhook.POD
    same = workload == "one template"
    bodies = [
        webhook.review(pod, f"u-{i}", "7d4b9c8f6d" if same else f"v{i:x}")
        for i in range(total + 20)
    ]
    server = serving.Server(serving.Settings(tls_cert=Path("unused"), tls_key=Path("unused")))

    async def answer(batch: list[bytes]) -> None:
        for body in batch:
            response = await server._admit_small(body, namespace_opted_in=False)
            if response.status != 200 or b'"patch"' not in (response.body or b""):
                raise SystemExit(f"{workload}: a review was not patched")

    asyncio.run(answer(bodies[:20]))
    asyncio.run(answer(bodies[20 : 20 + count]))


ENV: dict[str, str] = {}
"""The environment of the measured sidecarkit process (``_building.environment``)."""


def _instructions(workload: str, count: int, total: int) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--serve",
            workload,
            str(count),
            str(total),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=ENV,
    )
    match = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode != 0 or match is None:
        raise SystemExit(f"valgrind failed for {workload}:\n{out.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def _server_instructions(which: str, workload: str, count: int, tmp: Path) -> int:
    """Instructions of one server process under cachegrind answering ``count`` reviews."""
    import http.client  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import ssl  # noqa: PLC0415
    import time  # noqa: PLC0415

    sys.path[:0] = [str(ROOT / "bench")]
    import webhook  # noqa: PLC0415

    pod = webhook.heavy_pod() if workload == "template-heavy" else webhook.POD
    same = workload == "one template"
    bodies = [
        webhook.review(pod, f"u-{i}", "7d4b9c8f6d" if same else f"v{i:x}")
        for i in range(count + 20)
    ]
    port = webhook.free_port()
    cert, key = str(tmp / "tls.crt"), str(tmp / "tls.key")
    if which == "webhook":
        argv = [sys.executable, "-m", "sidecarkit", "webhook", "--host", "127.0.0.1"]
        argv += [
            "--port",
            str(port),
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--log-level",
            "warning",
        ]
        path = "/inject"
    else:
        answer = tmp / f"answer-{workload}.json"
        answer.write_bytes(webhook.canned_answer(pod))
        argv = [sys.executable, "-c", webhook.BARE_SERVER, str(port), cert, key, str(answer)]
        path = "/answer/0"
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            *argv,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV if which == "webhook" else None,
    )
    try:
        context = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=120)
        for _ in range(600):
            try:
                conn.request("GET", "/readyz")
                conn.getresponse().read()
                break
            except OSError:
                conn.close()
                time.sleep(0.2)
        for body in bodies[: 20 + count]:  # the first 20 warm up in both runs
            conn.request("POST", path, body)
            response = conn.getresponse()
            if response.status != 200 or b'"patch"' not in response.read():
                raise SystemExit(f"{which} {workload}: HTTP {response.status}")
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    match = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if match is None:
        raise SystemExit(f"valgrind failed for {which} {workload}:\n{err[-2000:]}")
    return int(match.group(1).replace(",", ""))


def servers(reviews: int) -> None:
    """Per workload: instructions per request of our server and the bare one, and the ratio."""
    import tempfile  # noqa: PLC0415

    from sidecarkit.webhook import certificates  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ca = certificates.new_ca()
        certificates.write_pair(ca, tmp, stem="ca")
        certificates.write_pair(certificates.issue(ca, names=["127.0.0.1"]), tmp, stem="tls")
        for workload, share in WORKLOADS.items():
            count = max(10, round(reviews * share))
            per = {}
            for which in ("webhook", "bare"):
                per[which] = (
                    _server_instructions(which, workload, count, tmp)
                    - _server_instructions(which, workload, 0, tmp)
                ) / count
            print(
                f"{workload:<16} webhook {per['webhook'] / 1000:6.0f} k, bare "
                f"{per['bare'] / 1000:5.0f} k instructions per request: "
                f"{per['bare'] / per['webhook']:.2f}x ({count} requests)"
            )


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=300)
    parser.add_argument("--servers", action="store_true", help="Whole servers, TLS included.")
    sys.path[:0] = [str(ROOT / "bench")]
    import _building  # noqa: PLC0415

    _building.option(parser)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is missing: apt-get install valgrind")
    ENV.update(_building.environment(pure=args.pure))
    if args.servers:
        servers(args.reviews)
        return
    for workload, share in WORKLOADS.items():
        count = max(10, round(args.reviews * share))
        per_review = (
            _instructions(workload, count, count) - _instructions(workload, 0, count)
        ) / count
        print(
            f"{workload:<16} {per_review / 1000:8.0f} k instructions per review ({count} reviews)"
        )


if __name__ == "__main__":
    main()
