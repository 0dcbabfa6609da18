"""Benchmark: what ``sidecarkit run`` adds to starting a pod, and what it costs when idle.

1. Start time. A pod of 4 containers (2 sidecars with exec startup probes that pass at once,
   2 main containers), started by the runner and by a plain shell script that starts the same
   processes in the same order, in the same run. Each container writes a nanosecond timestamp
   when it starts; the figure is the time from the first container's start to the last one's,
   runner minus script (the runner's own interpreter start is not counted). Target: <= 50 ms
   beyond probe periods (the probes here pass at once, so no period is waited).
2. Idle CPU. The runner supervising 10 containers (5 sidecars, 5 main containers) that sleep,
   each with a readiness probe every second, for ``--seconds``: the runner process's own CPU
   time (not its children's) over wall time. Done with tcpSocket probes and with exec probes.
   Target: <= 1 % of a core.

    python bench/runner.py [--rounds 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _container(name: str, log: Path, body: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "busybox",
        "command": ["sh", "-c", f'echo "$(date +%s%N) {name}" >> {log}; {body}'],
        **extra,
    }


def _first_to_last(log: Path, names: list[str]) -> float:
    stamps: dict[str, float] = {}
    for line in log.read_text().splitlines():
        stamp, name = line.split()
        stamps.setdefault(name, int(stamp) / 1e9)
    return max(stamps[n] for n in names) - min(stamps[n] for n in names)


def start_time(rounds: int) -> tuple[float, float]:
    runner, script = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "log"
            probe = {"exec": {"command": ["true"]}, "periodSeconds": 1}
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "bench"},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "initContainers": [
                        _container(
                            "s1", log, "sleep 2", restartPolicy="Always", startupProbe=probe
                        ),
                        _container(
                            "s2", log, "sleep 2", restartPolicy="Always", startupProbe=probe
                        ),
                    ],
                    "containers": [_container("m1", log, "true"), _container("m2", log, "true")],
                },
            }
            path = Path(tmp) / "pod.json"
            path.write_text(json.dumps(pod))
            subprocess.run(
                [sys.executable, "-m", "sidecarkit", "run", str(path), "--events", "none"],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=60,
            )
            runner.append(_first_to_last(log, ["s1", "s2", "m1", "m2"]))
            log.unlink()
            sh = "\n".join(
                [
                    f"sh -c 'echo \"$(date +%s%N) s1\" >> {log}; exec sleep 2' & one=$!",
                    f"sh -c 'echo \"$(date +%s%N) s2\" >> {log}; exec sleep 2' & two=$!",
                    f"sh -c 'echo \"$(date +%s%N) m1\" >> {log}'",
                    f"sh -c 'echo \"$(date +%s%N) m2\" >> {log}'",
                    'sleep 0.5; kill "$one" "$two"',
                ]
            )
            subprocess.run(["sh", "-c", sh], check=False, timeout=60)
            script.append(_first_to_last(log, ["s1", "s2", "m1", "m2"]))
    return statistics.median(runner), statistics.median(script)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(seconds: float, kind: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        probe: dict[str, Any] = (
            {"tcpSocket": {"port": port}} if kind == "tcp" else {"exec": {"command": ["true"]}}
        )
        probe["periodSeconds"] = 1
        sidecars = [
            _container(f"s{i}", log, "sleep 600", restartPolicy="Always", readinessProbe=probe)
            for i in range(5)
        ]
        mains = [_container(f"m{i}", log, "sleep 600", readinessProbe=probe) for i in range(5)]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "idle"},
            "spec": {
                "terminationGracePeriodSeconds": 2,
                "initContainers": sidecars,
                "containers": mains,
            },
        }
        path = Path(tmp) / "pod.json"
        path.write_text(json.dumps(pod))
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecarkit", "run", str(path), "--events", "none"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(3)  # let everything start
        before, started = _cpu(proc.pid), time.monotonic()
        end = started + seconds
        while time.monotonic() < end:
            try:
                conn, _ = listener.accept() if kind == "tcp" else (None, None)
            except OSError:
                conn = None
            if conn is not None:
                conn.close()
            else:
                time.sleep(0.05)
            listener.settimeout(0.05)
        used = _cpu(proc.pid) - before
        wall = time.monotonic() - started
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        listener.close()
        return used / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    runner, script = start_time(args.rounds)
    print(
        f"start, first to last container (median of {args.rounds}): runner "
        f"{runner * 1000:.1f} ms, shell script {script * 1000:.1f} ms, added "
        f"{(runner - script) * 1000:.1f} ms (target <= 50 ms)"
    )
    for kind in ("tcp", "exec"):
        share = idle_cpu(args.seconds, kind)
        print(
            f"idle, 10 containers with 1 s {kind} readiness probes: runner CPU "
            f"{share * 100:.2f} % of a core (target <= 1 %)"
        )


if __name__ == "__main__":
    main()
