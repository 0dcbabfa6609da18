"""Benchmark: instructions per admission review in the webhook's request path, without TLS.

On a machine shared with other work, CPU time per request swings by half from run to run;
the number of instructions executed does not. This runs the server's own ``_admit_small`` (parse,
facts, verdict cache, injection, diff, patch and answer encoding, metrics) in-process under
valgrind's cachegrind, once with ``--reviews`` reviews and once with none (the same set-up,
imports and warm-up), and prints the difference per review for each workload of
``bench/webhook.py``: distinct pods, one template (answered from the verdict cache) and the
template-heavy pod. It complements that bench, whose ratio against a bare TLS server is the
target; it does not replace it. Exits non-zero when valgrind is missing.

    python bench/webhook_core.py [--reviews 300]
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
            if response.status != 200 or b'"patch"' not in (response.body or b""):  # type: ignore[operator]
                raise SystemExit(f"{workload}: a review was not patched")

    asyncio.run(answer(bodies[:20]))
    asyncio.run(answer(bodies[20 : 20 + count]))


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
    )
    match = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode != 0 or match is None:
        raise SystemExit(f"valgrind failed for {workload}:\n{out.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=300)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is missing: apt-get install valgrind")
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
