"""Benchmark: ``sidecarkit inject`` against a plain ruamel.yaml round trip, in CPU and memory.

Both sides are separate processes reading the same file and writing YAML to /dev/null, and
each one's CPU-seconds (user + system) and peak RSS come from the kernel (``wait4``), so the
figures hold on a busy machine. The peer is ruamel.yaml's round-trip ``load_all`` +
``dump_all`` (what any comment-keeping tool must at least do, one document at a time); ours is
the command itself (cut into documents, parse, inject, dump changed documents, copy the rest).

Two cases:

1. ``--documents`` (2,000) Deployments and Services, ``--rounds`` alternating runs: the ratio
   of median CPU-seconds. Target <= 1.5.
2. A ``--stream-mb`` (20) MB stream of the same documents, one run each: CPU-seconds and peak
   RSS of ours and of the peer (each above a bare interpreter that imported the same
   modules), and ours against the memory a round trip of the stream's largest document alone
   takes (Python's allocations, by tracemalloc, since a few KB move RSS by less than its
   noise). Target < 10x: memory grows with the largest document, not with the stream.

Exits non-zero when a target is missed or a side fails.

    python bench/inject.py [--documents 2000] [--rounds 3] [--stream-mb 20]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

from ruamel.yaml import YAML

DEPLOYMENT = """\
# {i}: an application tier, one of many
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
  namespace: team-{team}
  labels:
    app.kubernetes.io/name: app-{i}
    app.kubernetes.io/part-of: shop
spec:
  replicas: 3
  selector:
    matchLabels:
      app.kubernetes.io/name: app-{i}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: app-{i}
        sidecarkit.io/inject: "{opt}"
      annotations:
        sidecarkit.io/profiles: logs,metrics
        prometheus.io/scrape: "true"
    spec:
      serviceAccountName: app-{i}
      containers:
        - name: app
          image: "registry.example.com/shop/app-{i}:1.{i}.0"
          args: ["--port", "8080", "--log-dir", "/var/log/app"]
          ports:
            - name: http
              containerPort: 8080
          env:
            - name: LOG_LEVEL
              value: info  # quieter in production
            - name: DB_URL
              valueFrom:
                secretKeyRef: {{name: db-{team}, key: url}}
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: 5
          resources:
            requests: {{cpu: 100m, memory: 128Mi}}
            limits: {{memory: 256Mi}}
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: app-{i}
  namespace: team-{team}
spec:
  selector:
    app.kubernetes.io/name: app-{i}
  ports:
    - name: http
      port: 80
      targetPort: http
"""

PEER = """
import sys
from ruamel.yaml import YAML
yaml = YAML(typ="rt")
yaml.preserve_quotes = True
yaml.width = 4096
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as out:
    yaml.dump_all(yaml.load_all(f), out)
"""

BARE = "import ruamel.yaml, sidecarkit.cli"


def documents(count: int, opted_in_share: float) -> list[str]:
    parts = []
    for i in range(count):
        if i % 2:
            parts.append(SERVICE.format(i=i, team=i % 7))
        else:
            opt = "true" if (i // 2) % 100 < opted_in_share * 100 else "false"
            parts.append(DEPLOYMENT.format(i=i, team=i % 7, opt=opt))
    return parts


def manifest(count: int, opted_in_share: float) -> str:
    return "---\n".join(documents(count, opted_in_share))


def run(argv: Sequence[str]) -> tuple[float, int]:
    """(CPU-seconds, peak RSS in KiB) of one child process; SystemExit if it fails."""
    with open(os.devnull, "wb") as sink:
        child = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE)
        assert child.stderr is not None
        _, status, usage = os.wait4(child.pid, 0)
        errors = child.stderr.read().decode()
        child.stderr.close()
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"FAIL: {argv[:4]} exited {child.returncode}: {errors[-500:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def round_trip_memory(text: str) -> int:
    """Peak bytes Python allocates for a ruamel round trip of ``text`` (tracemalloc).

    The largest document is a few KB, so its round trip moves peak RSS by less than the
    noise of RSS itself; counting allocations measures it. Cold, as in a fresh process: the
    first round trip also builds ruamel's tables, which ours pays once too."""
    tracemalloc.start()
    try:
        yaml = YAML(typ="rt")
        yaml.preserve_quotes = True
        yaml.width = 4096
        yaml.dump(yaml.load(text), io.StringIO())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def ours(path: Path) -> list[str]:
    return [sys.executable, "-m", "sidecarkit", "inject", "-f", str(path), "--report", "none"]


def peer(path: Path) -> list[str]:
    return [sys.executable, "-c", PEER, str(path), os.devnull]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream-mb", type=float, default=20.0)
    parser.add_argument(
        "--opted-in-share",
        type=float,
        default=1.0,
        help="share of Deployments that opt in (1.0: every one is injected)",
    )
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp, "small.yaml")
        small.write_text(manifest(args.documents, args.opted_in_share))
        print(f"case 1: {args.documents} documents, {small.stat().st_size / 1e6:.2f} MB")
        peer_cpu, ours_cpu = [], []
        for _ in range(args.rounds):
            peer_cpu.append(run(peer(small))[0])
            ours_cpu.append(run(ours(small))[0])
        p, o = statistics.median(peer_cpu), statistics.median(ours_cpu)
        print(f"  ruamel round trip  median {p:.2f} CPU-s over {args.rounds} rounds")
        print(f"  sidecarkit inject  median {o:.2f} CPU-s over {args.rounds} rounds")
        print(f"  ratio inject / round trip: {o / p:.2f} (target <= 1.50)")
        failed |= o / p > 1.5

        parts = documents(args.documents, args.opted_in_share)
        size = sum(len(d) + 4 for d in parts)
        repeat = max(1, round(args.stream_mb * 1e6 / size))
        big = Path(tmp, "big.yaml")
        with big.open("w") as f:
            for r in range(repeat):
                f.write(("---\n" if r else "") + "---\n".join(parts))
        tenth = Path(tmp, "tenth.yaml")
        tenth.write_text("---\n".join(parts * max(1, repeat // 10)))
        largest = Path(tmp, "largest.yaml")
        largest.write_text(max(parts, key=len))
        print(f"case 2: {repeat * len(parts)} documents, {big.stat().st_size / 1e6:.1f} MB")
        bare = run([sys.executable, "-c", BARE])[1]
        bare_peer = run([sys.executable, "-c", "import ruamel.yaml"])[1]
        one = round_trip_memory(largest.read_text()) / 1024
        peer_cpu2, peer_rss = run(peer(big))
        ours_cpu2, ours_rss = run(ours(big))
        tenth_rss = run(ours(tenth))[1]
        print(f"  bare interpreter with our imports: {bare / 1024:.1f} MiB peak RSS")
        print(
            f"  round trip of the largest document alone: {one:.0f} KiB "
            "(peak of Python allocations, tracemalloc)"
        )
        print(
            f"  ruamel round trip  {peer_cpu2:.1f} CPU-s, +{(peer_rss - bare_peer) / 1024:.1f} MiB"
        )
        print(f"  sidecarkit inject  {ours_cpu2:.1f} CPU-s, +{(ours_rss - bare) / 1024:.1f} MiB")
        print(f"  sidecarkit inject on a tenth of it: +{(tenth_rss - bare) / 1024:.1f} MiB")
        print(f"  ratio inject / round trip CPU: {ours_cpu2 / peer_cpu2:.2f} (target <= 1.50)")
        ratio = max(ours_rss - bare, 0) / max(one, 1)
        print(f"  memory / largest document's round trip: {ratio:.1f}x (target < 10)")
        failed |= ratio >= 10 or ours_cpu2 / peer_cpu2 > 1.5
    print("FAIL: a target was missed" if failed else "all targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
