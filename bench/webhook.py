"""Benchmark: ``sidecarkit webhook`` against a bare aiohttp TLS endpoint, same client, same run.

Both servers run as their own processes on loopback with the same certificate. The peer reads
each request and answers with a fixed AdmissionReview: the very bytes sidecarkit answers for
that workload's pod (patch included), computed once before the run. So both move the same bytes
over TLS and HTTP, and the ratio shows what parsing, deciding, injecting, diffing and encoding
cost. CPU is counted for the server process alone, so the figure that matters is admissions per
CPU-second of the server, which the load generator's speed cannot flatter.

The load generator is wrk (C, LuaJIT) with a Lua script that makes each request body from a
template, so building distinct pods costs the client microseconds and it is not the
bottleneck. Workloads:

- ``distinct``: every request another pod (another template hash): decided from scratch;
- ``one template``: byte-identical pods as a ReplicaSet rollout sends them (uids differ);
- ``template-heavy``: distinct pods of a large template (six containers with env, probes,
  mounts and resources): what decision cost looks like on a fat pod.

Then an open loop at ``--rate`` per second (distinct pods, a Python client: at 200/s it is far
from its limit) gives the latency an API server would see.

Last (``--attack``), a normal review every 10 ms alone, under a stream of 40,000-container
pods, and with 1,000 slowloris connections held: the delay they add must stay under 100 ms.

``sidecarkit webhook`` runs as the image builds it, its request path compiled with mypyc
(``make compiled``, run by the bench when a source changed); ``--pure`` measures the Python
sources instead.

Targets: >= 0.5x the bare endpoint in admissions per CPU-second, >= 1,000 admissions/s,
p99 < 20 ms at 200/s, < 100 ms of delay under attack. Exits non-zero when wrk is missing, any
request failed or any target is missed.

    python bench/webhook.py [--seconds 5] [--connections 32] [--rate 200] [--pure]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import multiprocessing
import os
import re
import shutil
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

import _building  # noqa: E402

from sidecarkit.webhook import certificates  # noqa: E402

POD: dict[str, Any] = {
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


def heavy_pod() -> dict[str, Any]:
    """A fat template: six containers with env, probes, mounts, resources and ports."""
    pod = copy.deepcopy(POD)
    base = pod["spec"]["containers"][0]
    containers = []
    for i in range(6):
        c = copy.deepcopy(base)
        c["name"] = f"app-{i}"
        c["ports"] = [{"name": f"p{i}", "containerPort": 8080 + i, "protocol": "TCP"}]
        c["env"] = [{"name": f"SETTING_{j}", "value": f"value-{i}-{j}"} for j in range(25)]
        c["env"].append(
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        )
        c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8080 + i}, "periodSeconds": 5}
        c["livenessProbe"] = {"httpGet": {"path": "/live", "port": 8080 + i}, "periodSeconds": 10}
        c["volumeMounts"] = [
            *c["volumeMounts"],
            *({"name": f"data-{k}", "mountPath": f"/data/{k}"} for k in range(4)),
        ]
        c["resources"] = {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        }
        containers.append(c)
    pod["spec"]["containers"] = containers
    pod["spec"]["volumes"] = [
        *pod["spec"]["volumes"],
        *({"name": f"data-{k}", "emptyDir": {}} for k in range(4)),
    ]
    return pod


def review(pod: dict[str, Any], uid: str, variant: str | None = None) -> bytes:
    """A Pod CREATE review; with ``variant``, the pod gets another template hash."""
    if variant is not None:
        pod = copy.deepcopy(pod)
        pod["metadata"]["generateName"] = f"web-{variant}-"
        pod["metadata"]["labels"]["pod-template-hash"] = variant
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
        },
        separators=(",", ":"),  # compact, as the API server sends it
    ).encode()


#: (name, pod, distinct): each workload's requests.
WORKLOADS = (("distinct", POD, True), ("one template", POD, False), ("template-heavy", None, True))

BARE_SERVER = """
import sys, ssl
from aiohttp import web
answers = {}
def route(path):
    body = open(path, "rb").read()
    async def handle(request):
        await request.read()
        return web.Response(body=body, content_type="application/json")
    return handle
app = web.Application(client_max_size=4 * 1024 * 1024)
for i, path in enumerate(sys.argv[4:]):
    app.router.add_post(f"/answer/{i}", route(path))
app.router.add_get("/readyz", lambda r: web.Response(text="ready"))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
try:
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    loop = None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=ctx, access_log=None,
            print=None, loop=loop)
"""

WRK_SCRIPT = r"""
local template = io.open(os.getenv("BENCH_BODY"), "rb"):read("*a")
local distinct = os.getenv("BENCH_DISTINCT") == "1"
local threads = {}
id, n, bad = 0, 0, 0
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function request()
  n = n + 1
  local uid = string.format("u-%d-%d", id, n)
  local variant = distinct and string.format("v%x%x", id, n) or "7d4b9c8f6d"
  local body = template:gsub("@UID@", uid):gsub("@VARIANT@", variant)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status ~= 200 or not body:find('"patch"', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do total_bad = total_bad + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d bad=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout, total_bad))
end
"""


def canned_answer(pod: dict[str, Any]) -> bytes:
    """What sidecarkit answers for ``pod``, for the bare endpoint to send back."""
    from sidecarkit.injection import Config, Facts  # noqa: PLC0415
    from sidecarkit.webhook import admitting, reviews  # noqa: PLC0415

    outcome = admitting.admit(reviews.parse(review(pod, "u-1", "v1")), Config(), Facts())
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


def wrk(
    url: str, body_template: Path, distinct: bool, seconds: float, connections: int, tmp: Path
) -> dict[str, float]:
    script = tmp / "bench.lua"
    script.write_text(WRK_SCRIPT)
    env = {
        **os.environ,
        "BENCH_BODY": str(body_template),
        "BENCH_DISTINCT": "1" if distinct else "0",
    }
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    match = re.search(r"RESULT (.*)", out.stdout)
    if match is None:
        raise SystemExit(f"wrk printed no result:\n{out.stdout}{out.stderr}")
    fields = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    fields["per_second"] = fields["requests"] / (fields["duration_us"] / 1e6)
    return fields


async def _open_loop(port: int, ca: str, seconds: float, rate: float) -> dict[str, Any]:
    """A fixed rate of distinct pods; latencies as the API server would see them."""
    context = ssl.create_default_context(cafile=ca)
    latencies: list[float] = []
    failures = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=64)
    ) as session:
        url = f"https://127.0.0.1:{port}/inject"
        start = time.perf_counter()
        tasks = set()

        async def one(n: int) -> None:
            nonlocal failures
            body = review(POD, f"o-{n}", f"o{n:x}")
            sent = time.perf_counter()
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    ok = r.status == 200 and b'"patch"' in await r.read()
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - sent)
            failures += not ok

        n = 0
        while (due := start + n / rate) < start + seconds:
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            task = asyncio.create_task(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "requests": len(latencies),
        "failures": failures,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def _open_loop_in_process(args: tuple[Any, ...], out: Any) -> None:
    out.put(asyncio.run(_open_loop(*args)))


def open_loop(*args: Any) -> dict[str, Any]:
    """The open-loop client in its own process, off this one's GIL."""
    queue: multiprocessing.Queue[dict[str, Any]] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_open_loop_in_process, args=(args, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def _small_latencies(port: int, ca: str, seconds: float) -> list[float]:
    """A normal review every 10 ms on one keep-alive connection; each one's latency."""
    import http.client  # noqa: PLC0415

    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=30
    )
    out: list[float] = []
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        sent = time.perf_counter()
        conn.request("POST", "/inject", review(POD, f"s-{n}", f"s{n:x}"))
        response = conn.getresponse()
        if response.status != 200 or b'"patch"' not in response.read():
            raise SystemExit(f"a normal review failed under attack: HTTP {response.status}")
        out.append(time.perf_counter() - sent)
        time.sleep(0.01)
    conn.close()
    return sorted(out)


def _huge_sender(port: int, ca: str, body: bytes, stop: Any) -> None:
    import http.client  # noqa: PLC0415

    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=60
    )
    while not stop.is_set():
        conn.request("POST", "/inject", body)
        conn.getresponse().read()
    conn.close()


def under_attack(port: int, ca: str, seconds: float) -> list[str]:
    """Small-review latency while 40,000-container pods arrive, then while 1,000 slowloris
    connections are held: the bound is 100 ms of delay. Returns the targets missed."""
    import socket  # noqa: PLC0415
    import threading  # noqa: PLC0415

    base = _small_latencies(port, ca, 2)
    huge_pod = copy.deepcopy(POD)
    huge_pod["spec"]["containers"] = [{"name": f"c{i}", "image": "nginx"} for i in range(40_000)]
    body = review(huge_pod, "huge", "h1")
    stop = threading.Event()
    senders = [threading.Thread(target=_huge_sender, args=(port, ca, body, stop)) for _ in range(3)]
    for t in senders:
        t.start()
    time.sleep(1)
    try:
        huge = _small_latencies(port, ca, seconds)
    finally:
        stop.set()
        for t in senders:
            t.join(120)
    context = ssl.create_default_context(cafile=ca)
    slow = []
    try:
        for _ in range(1000):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
            conn.sendall(b"POST /inject HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(conn)
        loris = _small_latencies(port, ca, min(seconds, 5))
    finally:
        for conn in slow:
            conn.close()

    def p(xs: list[float], q: float) -> float:
        return 1000 * xs[min(len(xs) - 1, int(len(xs) * q))]

    for name, xs in (("alone", base), ("huge pods", huge), ("1,000 slowloris", loris)):
        print(
            f"small reviews, {name:<16} n={len(xs):>4} p50 {p(xs, 0.5):7.2f} ms  "
            f"p99 {p(xs, 0.99):7.2f} ms"
        )
    delays = {"huge pods": p(huge, 0.5) - p(base, 0.5), "slowloris": p(loris, 0.5) - p(base, 0.5)}
    print(
        f"delay added by huge pods at p50: {delays['huge pods']:.2f} ms, by slowloris: "
        f"{delays['slowloris']:.2f} ms (target < 100)"
    )
    return [
        f"{name} delay small reviews by {ms:.0f} ms" for name, ms in delays.items() if ms >= 100
    ]


def wait_up(port: int, ca: str) -> None:
    import http.client  # noqa: PLC0415

    for _ in range(200):
        try:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=2
            )
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="Alternate the servers this often; keep the best."
    )
    parser.add_argument(
        "--attack",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also time small reviews under huge pods and slowloris.",
    )
    _building.option(parser)
    args = parser.parse_args()
    env = _building.environment(pure=args.pure)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (the load generator)")
    tmp = Path(tempfile.mkdtemp(prefix="sidecarkit-bench-"))
    ca = certificates.new_ca()
    certificates.write_pair(ca, tmp, stem="ca")
    certificates.write_pair(certificates.issue(ca, names=["127.0.0.1"]), tmp, stem="tls")
    cert, key, ca_file = str(tmp / "tls.crt"), str(tmp / "tls.key"), str(tmp / "ca.crt")
    workloads = [(name, pod or heavy_pod(), distinct) for name, pod, distinct in WORKLOADS]
    answers, templates = [], []
    for i, (_, pod, _) in enumerate(workloads):
        answer, template = tmp / f"answer-{i}.json", tmp / f"body-{i}.json"
        answer.write_bytes(canned_answer(pod))
        body = review(pod, "@UID@", "@VARIANT@")
        template.write_bytes(body)
        answers.append(str(answer))
        templates.append(template)

    ours_port, bare_port = free_port(), free_port()
    ours = subprocess.Popen(
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
        ],
        env=env,
    )
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(bare_port), cert, key, *answers]
    )
    failed = 0
    missed: list[str] = []
    try:
        wait_up(ours_port, ca_file)
        wait_up(bare_port, ca_file)
        print(
            f"{'workload':<16} {'server':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'CPU us/req':>10} {'req/CPU-s':>10}"
        )
        per_cpu: dict[tuple[str, str], float] = {}
        rates: dict[str, float] = {}
        for i, (name, _, distinct) in enumerate(workloads):
            for server, proc, url in [
                ("webhook", ours, f"https://127.0.0.1:{ours_port}/inject"),
                ("bare", bare, f"https://127.0.0.1:{bare_port}/answer/{i}"),
            ] * args.rounds:
                before = cpu_seconds(proc.pid)
                r = wrk(url, templates[i], distinct, args.seconds, args.connections, tmp)
                cpu = cpu_seconds(proc.pid) - before
                failed += int(r["errors"] + r["bad"])
                per_cpu[name, server] = max(per_cpu.get((name, server), 0.0), r["requests"] / cpu)
                if server == "webhook":
                    rates[name] = max(rates.get(name, 0.0), r["per_second"])
                print(
                    f"{name:<16} {server:<8} {r['per_second']:>8.0f} {r['p50_us'] / 1000:>7.2f} "
                    f"{r['p99_us'] / 1000:>7.2f} {1e6 * cpu / r['requests']:>10.0f} "
                    f"{r['requests'] / cpu:>10.0f}"
                    + (f"  {int(r['errors'] + r['bad'])} FAILED" if r["errors"] + r["bad"] else "")
                )
        opened = open_loop(ours_port, ca_file, args.seconds, args.rate)
        if args.attack:
            missed += under_attack(ours_port, ca_file, args.seconds)
        failed += opened["failures"]
        print()
        for name, _, _ in workloads:
            ratio = per_cpu[name, "webhook"] / per_cpu[name, "bare"]
            if ratio < 0.5:
                missed.append(f"{name}: {ratio:.2f}x the bare endpoint per CPU-second")
            if rates[name] < 1000:
                missed.append(f"{name}: {rates[name]:.0f} admissions/s")
            print(
                f"{name}: {ratio:.2f}x the bare endpoint in admissions per CPU-second "
                f"(target >= 0.50; best of {args.rounds} each: {per_cpu[name, 'webhook']:.0f} vs "
                f"{per_cpu[name, 'bare']:.0f}), {rates[name]:.0f} admissions/s (target >= 1000)"
            )
        print(
            f"open loop at {int(args.rate)}/s, distinct pods: p50 {opened['p50_ms']:.2f} ms, "
            f"p99 {opened['p99_ms']:.2f} ms (target < 20), {opened['failures']} failed"
        )
        if opened["p99_ms"] >= 20:
            missed.append(f"p99 {opened['p99_ms']:.1f} ms at {int(args.rate)}/s")
    finally:
        for proc in (ours, bare):
            proc.send_signal(signal.SIGTERM)
        for proc in (ours, bare):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        raise SystemExit(f"{failed} requests failed")
    if missed:
        raise SystemExit("targets missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
