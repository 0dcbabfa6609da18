"""Benchmark: our exposition parsers against prometheus_client's, same inputs, same run.

Inputs, each written by another project: the large real samples of ``../shared/corpus/promtext``
(a Prometheus server's own /metrics, a Go program; prometheus/common's test exposition), what a
real node_exporter (Debian's ``prometheus-node-exporter``, run here as a plain process on
loopback) answers, what the Python client writes for its default collectors plus every metric
type, what the Java client writes for its JVM (hotspot) collectors plus every metric type (a
small program in ``tests/agents/metrics/jvm``, built with Maven), a kube-state-metrics style
high-cardinality exposition (100,000 pod series), and a generated exposition of 100,000 series
(1,000 families of counters, gauges and histograms), in both Prometheus text and OpenMetrics.
A missing input fails the run (exit 1): a skipped input would flatter the result; so do samples
(name, labels, value) that differ from the client's on any input, and so does a ratio under
the target on any input (each one missed is named on stderr). Each parser
runs ``--rounds`` times per input (more for small ones, in turn with the peer); times are CPU
seconds of this process, so other work on the machine weighs less; a round times a batch of
consecutive parses of one parser (as ``timeit`` does), so neither pays for the state the other
left behind (``--batch-seconds 0``: one parse a round, right after the other's); the ratio of
medians is
printed (the target is judged on it), and beside it the ratio of each parser's best round, the
one least disturbed by other work. Target: >= 5x on every input (``GOAL``). Two small real
files (a few dozen lines) are measured too and printed apart: at that size fixed per-parse and
first-sight costs dominate, which says little about scraping a real endpoint.

    python bench/metrics.py [--series 100000] [--rounds 5] [--batch-seconds 0.02]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as pc_openmetrics
from prometheus_client.parser import text_string_to_metric_families as pc_text

from sidecarkit.agents.metrics import openmetrics, promtext

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "promtext"
SAMPLES = [
    "prometheus-common/expfmt-testdata-text.prom",
    "prometheus-textparse/testdata/alltypes.237mfs.prom.txt",
    "prometheus-textparse/testdata/alltypes.237mfs.nometa.prom.txt",
]
#: The ratio (of medians) every input must reach, or the run fails.
GOAL = 5.0
SMALL = [
    "prometheus-textparse/promtool-metrics-test.prom",
    "prometheus-textparse/testdata/1histogram.om.txt",
]


def generated(series: int, *, om: bool) -> bytes:
    """``series`` series in families of 100: a third counters, gauges, histograms."""
    lines: list[str] = []
    per_family = 100
    for f in range(series // per_family):
        kind = ("counter", "gauge", "histogram")[f % 3]
        name = f"app_requests_{f}" if kind != "gauge" else f"app_queue_depth_{f}"
        lines.append(f"# HELP {name} Requests handled, by route and status.")
        lines.append(f"# TYPE {name} {kind}")
        if kind == "histogram":
            for s in range(per_family // 10):
                labels = f'route="/api/v1/items/{s}",method="GET"'
                for le, count in (
                    ("0.005", 1),
                    ("0.01", 3),
                    ("0.05", 7),
                    ("0.1", 9),
                    ("0.5", 10),
                    ("1.0", 11),
                    ("5.0", 12),
                    ("+Inf", 12),
                ):
                    lines.append(f'{name}_bucket{{{labels},le="{le}"}} {count}')
                lines.append(f"{name}_sum{{{labels}}} 1.25")
        else:
            suffix = "_total" if kind == "counter" else ""
            for s in range(per_family):
                labels = f'route="/api/v1/items/{s}",method="GET",status="{200 + s % 5}"'
                lines.append(f"{name}{suffix}{{{labels}}} {s * 17.5}")
        if kind == "histogram" and om:
            pass
    text = "\n".join(lines) + "\n"
    if om:
        # OpenMetrics wants _count with _sum; add it next to every _sum line.
        out = []
        for line in text.splitlines():
            out.append(line)
            if "_sum{" in line:
                out.append(line.replace("_sum{", "_count{").rsplit(" ", 1)[0] + " 12")
        text = "\n".join(out) + "\n# EOF\n"
    return text.encode()


def node_exporter() -> bytes:
    """The /metrics of a real node_exporter, started here on a free loopback port."""
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if binary is None:
        raise SystemExit("node_exporter is missing: apt-get install prometheus-node-exporter")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    return bytes(r.read())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def python_client(*, om: bool) -> bytes:
    """What prometheus_client writes: its default collectors and one metric of each type."""
    from prometheus_client import (  # noqa: PLC0415
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        Info,
        Summary,
        exposition,
        gc_collector,
        platform_collector,
        process_collector,
    )
    from prometheus_client.openmetrics import exposition as om_exposition  # noqa: PLC0415

    registry = CollectorRegistry()
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    requests = Counter("http_requests", "Requests.", ["route", "code"], registry=registry)
    latency = Histogram("http_latency_seconds", "Latency.", ["route"], registry=registry)
    for r in range(50):
        for code in ("200", "404", "500"):
            requests.labels(f"/api/items/{r}", code).inc(r)
        latency.labels(f"/api/items/{r}").observe(r / 100)
    Gauge("queue_depth", "Queue.", registry=registry).set(3)
    Summary("payload_bytes", "Payloads.", registry=registry).observe(512)
    Info("build", "Build.", registry=registry).info({"version": "1.2.3"})
    write = om_exposition.generate_latest if om else exposition.generate_latest
    return bytes(write(registry))


JVM_PROGRAM = Path(__file__).resolve().parents[1] / "tests" / "agents" / "metrics" / "jvm"


def jvm_client() -> tuple[bytes, bytes]:
    """What the Java client (simpleclient 0.16, hotspot exports) writes, text and OpenMetrics:
    the tests' small program, built with Maven's dependencies and run here."""
    tools = [shutil.which(t) for t in ("mvn", "javac", "java")]
    if None in tools:
        raise SystemExit("mvn, javac and java are needed for the JVM input")
    mvn, javac, java = (str(t) for t in tools)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        classpath = out / "classpath.txt"
        subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(JVM_PROGRAM / "pom.xml"),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={classpath}",
            ],
            check=True,
            capture_output=True,
        )
        jars = classpath.read_text().strip()
        source = JVM_PROGRAM / "src" / "main" / "java" / "exposition" / "Main.java"
        subprocess.run(
            [javac, "-d", str(out / "classes"), "-cp", jars, str(source)],
            check=True,
            capture_output=True,
        )
        run = [java, "-cp", f"{out / 'classes'}:{jars}", "exposition.Main"]
        text = subprocess.run(run, check=True, capture_output=True).stdout
        om = subprocess.run([*run, "om"], check=True, capture_output=True).stdout
    return text, om


def kube_state_metrics(series: int) -> bytes:
    """kube-state-metrics style: few families, one series per pod with long label sets."""
    lines: list[str] = []
    families = [
        ("kube_pod_info", "gauge", "Information about pod."),
        ("kube_pod_status_phase", "gauge", "The pods current phase."),
        ("kube_pod_container_status_restarts_total", "counter", "Container restarts."),
        ("kube_pod_container_resource_requests", "gauge", "Resources requested."),
    ]
    per = series // len(families)
    for name, kind, help_text in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for i in range(per):
            ns, pod = f"team-{i % 97}", f"web-{i:06d}-7d4b9c8f6d-x2x9z"
            uid = f"{i:08x}-5f2c-4d1e-9a7b-3c6d2e1f0a9b"
            if name == "kube_pod_info":
                labels = (
                    f'namespace="{ns}",pod="{pod}",uid="{uid}",host_ip="10.0.{i % 250}.1",'
                    f'pod_ip="10.1.{i % 250}.{i % 200}",node="node-{i % 40}",'
                    f'created_by_kind="ReplicaSet",created_by_name="web-7d4b9c8f6d",'
                    f'priority_class="",host_network="false"'
                )
            elif name == "kube_pod_status_phase":
                labels = f'namespace="{ns}",pod="{pod}",uid="{uid}",phase="Running"'
            else:
                labels = (
                    f'namespace="{ns}",pod="{pod}",uid="{uid}",container="app",'
                    f'node="node-{i % 40}",resource="cpu",unit="core"'
                )
            value = "1" if kind == "gauge" else str(i % 7 + 1)
            lines.append(f"{name}{{{labels}}} {value}")
    return ("\n".join(lines) + "\n").encode()


def median_times(
    ours: Callable[[], Any],
    theirs: Callable[[], Any],
    rounds: int,
    budget: float = 0.3,
    batch: float = 0.02,
) -> tuple[float, float, float, float]:
    """Median and best seconds per parse of ``ours`` and ``theirs`` (ours, theirs, best ours,
    best theirs), run in turn (so load that comes and goes hits both alike): at least
    ``rounds`` rounds each, more for small inputs until each has run ``budget`` seconds (at
    most 200 rounds), so a 0.5 ms parse is not judged on 5 runs. As ``timeit`` does, a round
    times a batch of consecutive parses (as many as take about ``batch`` seconds, one for
    large inputs; ``batch`` 0 for one parse a round)
    and divides: a parse timed right after the other parser's would pay for the state that
    one leaves behind (its memory freed into the allocator, the processor's caches filled
    with its data), which weighs on the faster parser and hardly on the slower. The garbage
    collector stays on, as in a real scrape. The target is judged on the medians; the best
    rounds, the least disturbed by other work on a shared machine, are printed too."""
    batches = [_batch(ours, batch), _batch(theirs, batch)]
    mine: list[float] = []
    other: list[float] = []
    while len(mine) < 200 and (
        len(mine) < rounds or min(sum(mine) * batches[0], sum(other) * batches[1]) < budget
    ):
        for parse, count, times in ((ours, batches[0], mine), (theirs, batches[1], other)):
            start = time.process_time()
            for _ in range(count):
                parse()
            times.append((time.process_time() - start) / count)
    return statistics.median(mine), statistics.median(other), min(mine), min(other)


def _batch(parse: Callable[[], Any], seconds: float) -> int:
    """How many consecutive parses take about ``seconds``, from one parse after a warm-up."""
    if seconds <= 0:
        return 1
    start = time.process_time()
    parse()
    took = time.process_time() - start
    if took < seconds:
        start = time.process_time()
        parse()
        took = time.process_time() - start
    return max(1, min(1000, int(seconds / max(took, 1e-6))))


def readings(samples: Iterable[Any]) -> list[tuple[str, tuple[tuple[str, str], ...], str]]:
    """Every sample's name, labels (sorted) and value, sorted: what both parsers must agree on
    (a speed-up that changes what is read fails the run)."""
    return sorted(
        (s.name, tuple(sorted(dict(s.labels).items())), repr(float(s.value))) for s in samples
    )


def compare(name: str, data: bytes, om: bool, rounds: int, batch: float = 0.02) -> float:
    ours: Callable[[bytes], Any] = openmetrics.parse if om else promtext.parse
    theirs = pc_openmetrics if om else pc_text
    text = data.decode()
    mine = readings(s for f in ours(data) for s in f.samples)
    reference = readings(s for f in theirs(text) for s in f.samples)
    if mine != reference:
        raise SystemExit(f"{name}: our samples differ from prometheus_client's")
    n_ours = len(mine)
    t_ours, t_theirs, best_ours, best_theirs = median_times(
        lambda: ours(data), lambda: list(theirs(text)), rounds, batch=batch
    )
    ratio = t_theirs / t_ours
    print(
        f"{name:<46} {n_ours:>8} {t_ours * 1000:>10.1f} {t_theirs * 1000:>12.1f} {ratio:>7.1f}x"
        f" {best_theirs / best_ours:>6.1f}x"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=0.02,
        help="CPU seconds of consecutive parses a round times (0: one parse a round, each "
        "right after the other parser's)",
    )
    args = parser.parse_args()
    print(
        f"{'input':<46} {'samples':>8} {'ours ms':>10} {'client ms':>12} {'ratio':>8} {'best':>7}"
    )
    ratios: dict[str, float] = {}
    for rel in SAMPLES:
        path = CORPUS / rel
        if not path.exists():
            raise SystemExit(f"input {path} is missing: the corpus is ../shared/corpus")
        ratios[path.name] = compare(
            path.name, path.read_bytes(), ".om." in path.name, args.rounds, args.batch_seconds
        )
    label = "node_exporter 1.5 (live)"
    ratios[label] = compare(label, node_exporter(), False, args.rounds, args.batch_seconds)
    for om in (False, True):
        label = f"Python client ({'OpenMetrics' if om else 'text 0.0.4'})"
        ratios[label] = compare(label, python_client(om=om), om, args.rounds, args.batch_seconds)
    for label, body, om in zip(
        ("JVM client (text 0.0.4)", "JVM client (OpenMetrics)"),
        jvm_client(),
        (False, True),
        strict=True,
    ):
        ratios[label] = compare(label, body, om, args.rounds, args.batch_seconds)
    rounds = max(1, args.rounds // 2)
    label = f"kube-state-metrics style, {args.series} series"
    ratios[label] = compare(
        label, kube_state_metrics(args.series), False, rounds, args.batch_seconds
    )
    for om in (False, True):
        label = f"generated {args.series} series ({'OpenMetrics' if om else 'text 0.0.4'})"
        ratios[label] = compare(
            label, generated(args.series, om=om), om, rounds, args.batch_seconds
        )
    print(f"smallest ratio over every input: {min(ratios.values()):.1f}x (target >= {GOAL:g}x)")
    print("small files, for reference:")
    for rel in SMALL:
        path = CORPUS / rel
        if not path.exists():
            raise SystemExit(f"input {path} is missing: the corpus is ../shared/corpus")
        compare(path.name, path.read_bytes(), ".om." in path.name, args.rounds, args.batch_seconds)
    pipeline(args.series)
    missed = {label: ratio for label, ratio in ratios.items() if ratio < GOAL}
    for label, ratio in missed.items():
        print(f"{label}: {ratio:.2f}x, under the {GOAL:g}x target", file=sys.stderr)
    if missed:
        raise SystemExit(1)


def pipeline(series: int) -> None:
    """CPU for what the agent does with one scrape: parse, enrich with the pod's identity,
    render for the cluster's Prometheus (OpenMetrics, as Prometheus asks first)."""
    from sidecarkit.agents.metrics import relabeling, rendering  # noqa: PLC0415

    data = generated(series, om=False)
    identity = (("pod", "web-7d4b9c8f6d-x2x9z"), ("namespace", "shop"), ("node", "node-a"))
    start = time.process_time()
    families = promtext.parse(data)
    parsed = time.process_time()
    families = relabeling.enrich(families, identity, in_place=True)
    enriched = time.process_time()
    body = rendering.render_openmetrics(families)
    rendered = time.process_time()
    print(
        f"scrape pipeline, {series} series: parse {parsed - start:.2f} s, enrich "
        f"{enriched - parsed:.2f} s, render {rendered - enriched:.2f} s of CPU; total "
        f"{rendered - start:.2f} s (target < 1 s), {len(body) / 1e6:.1f} MB out"
    )


if __name__ == "__main__":
    main()
