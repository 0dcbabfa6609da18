"""Benchmark: ``sidecarkit inject`` on a 2,000-document manifest vs a plain ruamel round trip.

Both sides read the same text and write YAML back: the peer is ruamel.yaml's round-trip
``load_all`` + ``dump_all`` (what any comment-keeping tool must at least do); ours is the CLI's
path (cut into documents, parse, inject, dump changed documents, copy the rest verbatim).
Runs alternate, and the ratio of medians is printed; absolute times on shared machines mean
little. Target: ratio <= 1.5.

    python bench/inject.py [--documents 2000] [--rounds 5] [--opted-in-share 0.5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

from ruamel.yaml import YAML

from sidecarkit.injection import Facts, inject
from sidecarkit.k8s import manifests

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


def manifest(documents: int, opted_in_share: float) -> str:
    parts = []
    for i in range(documents):
        if i % 2:
            parts.append(SERVICE.format(i=i, team=i % 7))
        else:
            opt = "true" if (i // 2) % 100 < opted_in_share * 100 else "false"
            parts.append(DEPLOYMENT.format(i=i, team=i % 7, opt=opt))
    return "---\n".join(parts)


def ruamel_round_trip(text: str) -> str:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    out = io.StringIO()
    yaml.dump_all(yaml.load_all(text), out)
    return out.getvalue()


def sidecarkit_inject(text: str) -> str:
    facts = Facts()
    out = []
    for doc in manifests.load_stream(text, source="bench"):
        new, _ = inject(doc.data, None, facts)
        out.append(manifests.dump(doc, new))
    return "".join(out)


def timed(fn: Callable[[str], str], text: str) -> float:
    start = time.perf_counter()
    fn(text)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--opted-in-share",
        type=float,
        default=1.0,
        help="share of Deployments that opt in (1.0: every one is injected)",
    )
    args = parser.parse_args()
    text = manifest(args.documents, args.opted_in_share)
    injected = sidecarkit_inject(text)
    changed = injected.count("sidecarkit.io/status:")
    print(f"input: {args.documents} documents, {len(text) / 1e6:.2f} MB, {changed} injected")
    peer, ours = [], []
    for _ in range(args.rounds):
        peer.append(timed(ruamel_round_trip, text))
        ours.append(timed(sidecarkit_inject, text))
    p, o = statistics.median(peer), statistics.median(ours)
    print(f"ruamel round trip  median {p:.3f} s over {args.rounds} rounds")
    print(f"sidecarkit inject  median {o:.3f} s over {args.rounds} rounds")
    print(f"ratio inject / round trip: {o / p:.2f} (target <= 1.50)")


if __name__ == "__main__":
    main()
