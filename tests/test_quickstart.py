"""The README's `make run`: the quickstart pod runs here with both sidecars and ends by itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_runs_with_logs_and_metrics_sidecars() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecarkit",
            "run",
            "examples/quickstart/pod.yaml",
            "--inject",
            "--events",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert 'demo_requests_total{route="/",pod="quickstart",namespace="demo"' in out
    shipped = [
        json.loads(line.split("| ", 1)[1])
        for line in out.splitlines()
        if line.startswith("sidecarkit-logs") and '"message":' in line
    ]
    assert len(shipped) >= 10
    assert all(record["pod"] == "quickstart" for record in shipped)
    assert all(record["message"] == "handled request" for record in shipped)
    assert all(record["level"] == "info" for record in shipped), "parsed JSON fields"
    assert [r["n"] for r in shipped] == list(range(len(shipped)))
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {"container": "pod", "event": "succeeded"}.items() <= events[-1].items()
    # Once the app has exited, a scrape that comes before the metrics sidecar's SIGTERM (a
    # moment, longer on a busy machine) rightly finds no app: that one warning is not noise.
    ended = out.index("demo app: done")
    gone = "WARNING sidecarkit.agent.metrics: scrape of http://127.0.0.1:8080/metrics failed:"
    noise = [
        line
        for line in (out + result.stderr).splitlines()
        if (" WARNING " in line or " ERROR " in line or "Traceback" in line)
        and not (gone in line and line in out[ended:])
    ]
    assert not noise, "the quickstart's sidecars start quietly: a target not up yet is no warning"
