"""Benchmark: our exposition parsers' work per parse, counted in CPU instructions, against
another revision of the parsers and against prometheus_client, same inputs, same run.

Why: ``bench/metrics.py`` times CPU seconds, which on a shared 2-core box move by several per
cent between runs of the same code; a 3 % change in a parser cannot be told from noise there.
Here valgrind (``cachegrind``) counts the instructions of a process that parses one input
N1 and N2 times; the difference divided by N2 - N1 leaves start-up out. The result is
deterministic to about 0.1 % (a fixed hash seed).

Inputs: what a live node_exporter answers, what the Java client writes (text and
OpenMetrics), what the Python client writes (text and OpenMetrics), and a kube-state-metrics
style exposition of 2,000 series, made as ``bench/metrics.py`` makes them. Printed per input:
instructions per parse of this tree, of the baseline and of prometheus_client, this tree /
baseline, and client / this tree. That last ratio is not the time ratio ``bench/metrics.py``
judges: our parsers do more of their work in dictionary lookups, allocations and the cyclic
collector, which cost more time per instruction than the client's regular expressions (about
7x in instructions was 6-6.6x in CPU time on the small inputs, about 11x was 5.6-6.1x on the
kube-state-metrics style input of 100,000 series).

    python bench/metrics_instructions.py [--baseline REV]

``REV`` (default ``main``) is exported with ``git archive``. Fails (exit 1) when valgrind,
git, mvn or node_exporter is missing.
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
import metrics  # bench/metrics.py: the inputs

ROOT = Path(__file__).resolve().parent.parent
#: Parses of each run (small inputs; the 2,000-series input takes a twentieth).
N1, N2 = 20, 120

WORKLOAD = r"""
import sys
path, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
om = path.endswith(".om")
if who == "ours":
    from sidecarkit.agents.metrics import openmetrics, promtext
    parse = openmetrics.parse if om else promtext.parse
    arg = data
else:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as pc_om
    from prometheus_client.parser import text_string_to_metric_families as pc_text
    reader = pc_om if om else pc_text
    parse = lambda text: list(reader(text))
    arg = data.decode()
parse(arg)
for _ in range(count):
    parse(arg)
"""


def instructions(src: Path, script: Path, path: Path, who: str, count: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, str(script), str(path), who, str(count)],
        capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(src), "PYTHONHASHSEED": "0"},
    ).stderr  # fmt: skip
    found = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if found is None:
        raise SystemExit(f"valgrind printed no instruction count:\n{out}")
    return int(found.group(1).replace(",", ""))


def per_parse(src: Path, script: Path, path: Path, who: str, scale: int) -> float:
    """Instructions per parse. A first run without valgrind compiles the tree's modules
    (``__pycache__``), so that neither measured run pays for it."""
    subprocess.run(
        [sys.executable, str(script), str(path), who, "0"],
        check=True, env={"PYTHONPATH": str(src), "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    n1, n2 = max(1, N1 // scale), max(2, N2 // scale)
    return (instructions(src, script, path, who, n2) - instructions(src, script, path, who, n1)) / (
        n2 - n1
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
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
        jvm_text, jvm_om = metrics.jvm_client()
        inputs = {
            "node_exporter.prom": (metrics.node_exporter(), 1),
            "jvm.prom": (jvm_text, 1),
            "jvm.om": (jvm_om, 1),
            "python.prom": (metrics.python_client(om=False), 1),
            "python.om": (metrics.python_client(om=True), 1),
            "kube-state-metrics-2000.prom": (metrics.kube_state_metrics(2_000), 20),
        }
        print(
            f"{'input':<30} {'this tree':>11} {'baseline':>11} {'client':>12} "
            f"{'tree/base':>9} {'client/tree':>11}"
        )
        for name, (body, scale) in inputs.items():
            path = d / name
            path.write_bytes(body)
            mine = per_parse(ROOT / "src", script, path, "ours", scale)
            base = per_parse(baseline, script, path, "ours", scale)
            client = per_parse(ROOT / "src", script, path, "client", 10 * scale)
            print(
                f"{name:<30} {mine:11.0f} {base:11.0f} {client:12.0f} {mine / base:9.3f} "
                f"{client / mine:10.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
