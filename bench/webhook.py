"""Benchmark: ``sidecarkit webhook`` against a bare aiohttp TLS endpoint, same client, same run.

Both servers run as their own processes on loopback with the same certificate. The peer reads
each request and answers with a fixed AdmissionReview: the very bytes sidecarkit answers for
the benchmark's pod (patch included), computed once before the run. So both move the same
bytes over TLS and HTTP, and the ratio shows what deciding, injecting and diffing cost. The
load generator is a separate process with concurrent keep-alive connections:

- closed loop: as many admissions as ``--concurrency`` clients can get for ``--seconds``;
- open loop: a fixed ``--rate`` per second, for the latency a cluster's API server would see.

The webhook runs twice: with every pod distinct (each request another pod template hash: every
admission is decided from scratch) and with pods of one template, as a ReplicaSet creates them
in a rollout or scale-up (byte-identical objects, decided once and answered from the verdict
cache). The targets compare both with the bare endpoint on one-template requests; the bare
endpoint also runs on the distinct pods' request stream, to show how much of the gap is the
load generator's (it is the bare endpoint's bottleneck, and building a distinct pod per request
costs it throughput).

Targets: >= 1,000 admissions/s, p99 < 20 ms at 200/s, throughput >= 0.5x the bare endpoint.

    python bench/webhook.py [--seconds 8] [--concurrency 16] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecarkit.webhook import certificates  # noqa: E402

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "web-7d4b9c8f6d-",
        "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6d", "sidecarkit.io/inject": "true"},
        "annotations": {"sidecarkit.io/profiles": "logs,metrics"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d4b9c8f6d",
                "uid": "5f1c8a3e-2b7d-4c1e-9f00-1a2b3c4d5e6f",
                "controller": True,
            }
        ],
    },
    "spec": {
        "containers": [
            {
                "name": "web",
                "image": "registry.example.com/web:1.4.2",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [
                    {
                        "name": "kube-api-access-abcde",
                        "readOnly": True,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    }
                ],
                "terminationMessagePath": "/dev/termination-log",
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "volumes": [
            {
                "name": "kube-api-access-abcde",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
                    ]
                },
            }
        ],
    },
}


def review(uid: str, variant: int | None = None) -> bytes:
    """A Pod CREATE review; with ``variant``, a pod no other request has (another template hash)."""
    pod = POD
    if variant is not None:
        pod = json.loads(json.dumps(POD))
        pod["metadata"]["generateName"] = f"web-{variant:x}-"
        pod["metadata"]["labels"]["pod-template-hash"] = f"{variant:x}"
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": pod,
                "dryRun": False,
            },
        }
    ).encode()


BARE_SERVER = """
import sys, ssl
from aiohttp import web
body = open(sys.argv[4], "rb").read()
async def handle(request):
    await request.read()
    return web.Response(body=body, content_type="application/json")
app = web.Application(client_max_size=4 * 1024 * 1024)
app.router.add_post("/inject", handle)
app.router.add_get("/readyz", lambda r: handle(r))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
try:
    import uvloop
    loop_factory = uvloop.new_event_loop
except ImportError:
    loop_factory = None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=ctx, access_log=None,
            print=None, loop=loop_factory() if loop_factory else None)
"""


def canned_answer() -> bytes:
    """What sidecarkit answers for the benchmark's pod, for the bare endpoint to send back."""
    from sidecarkit.injection import Config, Facts  # noqa: PLC0415
    from sidecarkit.webhook import admitting, reviews  # noqa: PLC0415

    outcome = admitting.admit(reviews.parse(review("u-1")), Config(), Facts())
    assert outcome.verdict.decision == "patched"
    return outcome.body


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _load(
    port: int,
    ca: str,
    seconds: float,
    concurrency: int,
    rate: float | None,
    check: bool,
    distinct: bool,
) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=ca)
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"https://127.0.0.1:{port}/inject"
        for _ in range(100):  # wait until up
            try:
                async with session.post(url, data=review("warm")) as r:
                    await r.read()
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        start = time.perf_counter()
        end = start + seconds
        counter = 0

        async def one() -> None:
            nonlocal failures, counter
            counter += 1
            body = review(f"u-{counter}", counter if distinct else None)
            sent = time.perf_counter()
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    data = await r.read()
                    ok = r.status == 200 and (not check or b'"patch"' in data)
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - sent)
            if not ok:
                failures += 1

        if rate is None:

            async def worker() -> None:
                while time.perf_counter() < end:
                    await one()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks = set()
            n = 0
            while True:
                due = start + n / rate
                now = time.perf_counter()
                if due >= end:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "failures": failures,
        "per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def _load_in_process(args: tuple[Any, ...], out: Any) -> None:
    try:
        import uvloop  # noqa: PLC0415

        out.put(uvloop.run(_load(*args)))
    except ImportError:
        out.put(asyncio.run(_load(*args)))


def load(*args: Any) -> dict[str, Any]:
    """Run the load generator in its own process so it does not share a core's GIL with us."""
    queue: multiprocessing.Queue[dict[str, Any]] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_load_in_process, args=(args, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sidecarkit-bench-"))
    ca = certificates.new_ca()
    certificates.write_pair(ca, tmp, stem="ca")
    certificates.write_pair(certificates.issue(ca, names=["127.0.0.1"]), tmp, stem="tls")
    cert, key, ca_file = str(tmp / "tls.crt"), str(tmp / "tls.key"), str(tmp / "ca.crt")
    canned = tmp / "answer.json"
    canned.write_bytes(canned_answer())

    ours_port, bare_port = free_port(), free_port()
    servers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecarkit",
                "webhook",
                "--host",
                "127.0.0.1",
                "--port",
                str(ours_port),
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--log-level",
                "warning",
            ]
        ),
        subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER, str(bare_port), cert, key, str(canned)]
        ),
    ]
    try:
        time.sleep(1.5)
        rows = []
        # The second row is for information only: the load generator's share (see above).
        runs = (
            ("webhook, distinct pods", servers[0], ours_port, True, True),
            ("bare TLS, distinct pods", servers[1], bare_port, False, True),
            ("webhook, one template", servers[0], ours_port, True, False),
            ("bare aiohttp TLS", servers[1], bare_port, False, False),
        )
        for name, proc, port, check, distinct in runs:
            before = cpu_seconds(proc.pid)
            closed = load(port, ca_file, args.seconds, args.concurrency, None, check, distinct)
            closed["cpu_us"] = 1e6 * (cpu_seconds(proc.pid) - before) / closed["requests"]
            opened = load(port, ca_file, args.seconds, args.concurrency, args.rate, check, distinct)
            rows.append((name, closed, opened))
        print(
            f"{'server':<24} {'closed loop/s':>14} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'CPU us/req':>11} | {'at ' + str(int(args.rate)) + '/s p50':>14} {'p99 ms':>8} "
            f"{'failed':>7}"
        )
        for name, closed, opened in rows:
            print(
                f"{name:<24} {closed['per_second']:>14.0f} {closed['p50_ms']:>8.2f} "
                f"{closed['p99_ms']:>8.2f} {closed['cpu_us']:>11.0f} | "
                f"{opened['p50_ms']:>14.2f} {opened['p99_ms']:>8.2f} "
                f"{closed['failures'] + opened['failures']:>7}"
            )
        bare = rows[3][1]["per_second"]
        same_requests = rows[1][1]["per_second"]
        for name, closed, opened in (rows[0], rows[2]):
            note = ""
            if name == "webhook, distinct pods":
                note = f" ({closed['per_second'] / same_requests:.2f}x on the same requests)"
            print(
                f"{name}: {closed['per_second']:.0f} admissions/s (target >= 1000), "
                f"{closed['per_second'] / bare:.2f}x the bare endpoint (target >= 0.50){note}, "
                f"p99 at {int(args.rate)}/s {opened['p99_ms']:.2f} ms (target < 20)"
            )
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
        for proc in servers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
