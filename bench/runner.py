"""Benchmark: what ``sidecarkit run`` adds to starting a pod, and what it costs when idle.

1. Start time, from the command to every container running. A pod of 4 containers (2
   sidecars with exec startup probes that pass at once, 2 main containers that stay up),
   started by ``sidecarkit run`` and by a shell script that starts the same processes in the
   same order, alternating, in the same run. Each container writes a nanosecond timestamp when
   it starts; the figure is from just before the command is launched (interpreter start,
   imports, reading the manifest and planning included) to the last container's timestamp.
   Also printed: the runner's own CPU time up to that moment. Target: <= 150 ms added.
2. Idle CPU. The runner supervising 10 containers (5 sidecars, 5 main containers) that sleep,
   each with a readiness probe every second, for ``--seconds``: the runner process's own CPU
   time (not its children's) over wall time. Done with tcpSocket probes and with exec probes.
   Target: <= 1 % of a core.

Before measuring, the package's modules are compiled to bytecode, as ``pip install`` does: where
``PYTHONDONTWRITEBYTECODE`` is set (it is in some development shells) and nothing compiled them,
every ``sidecarkit run`` would compile its sources again, which is no user's start-up.
``--no-compile`` measures that case instead.

    python bench/runner.py [--rounds 7] [--seconds 10] [--no-compile]
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


def _stamps(log: Path) -> dict[str, int]:
    stamps: dict[str, int] = {}
    for line in log.read_text().splitlines():
        stamp, name = line.split()
        stamps.setdefault(name, int(stamp))
    return stamps


_NAMES = ["s1", "s2", "m1", "m2"]


def _until_all_started(log: Path, proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """(the last container's start, ns; the process's own CPU seconds by then)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists():
            stamps = _stamps(log)
            if all(n in stamps for n in _NAMES):
                return max(stamps[n] for n in _NAMES), _cpu(proc.pid)
        time.sleep(0.002)
    raise SystemExit("the pod's containers did not all start within 60 s")


def start_time(rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Per round: the runner's and the script's command-to-all-running, runner CPU (s)."""
    runner, script, cpu = [], [], []
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
                            "s1", log, "exec sleep 30", restartPolicy="Always", startupProbe=probe
                        ),
                        _container(
                            "s2", log, "exec sleep 30", restartPolicy="Always", startupProbe=probe
                        ),
                    ],
                    "containers": [
                        _container("m1", log, "exec sleep 30"),
                        _container("m2", log, "exec sleep 30"),
                    ],
                },
            }
            path = Path(tmp) / "pod.json"
            path.write_text(json.dumps(pod))
            command = [sys.executable, "-m", "sidecarkit", "run", str(path), "--events", "none"]
            began = time.time_ns()
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            last, used = _until_all_started(log, proc)
            runner.append((last - began) / 1e9)
            cpu.append(used)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.unlink()
            sh = "\n".join(
                [
                    f"sh -c 'echo \"$(date +%s%N) s1\" >> {log}; exec sleep 30' & one=$!",
                    f"sh -c 'echo \"$(date +%s%N) s2\" >> {log}; exec sleep 30' & two=$!",
                    f"sh -c 'echo \"$(date +%s%N) m1\" >> {log}; exec sleep 30' & three=$!",
                    f"sh -c 'echo \"$(date +%s%N) m2\" >> {log}; exec sleep 30' & four=$!",
                    'trap \'kill "$one" "$two" "$three" "$four"; exit 0\' TERM',
                    "wait",
                ]
            )
            began = time.time_ns()
            proc = subprocess.Popen(["sh", "-c", sh])
            last, _ = _until_all_started(log, proc)
            script.append((last - began) / 1e9)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return runner, script, cpu


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


def compile_package() -> str:
    """Compile the sidecarkit that ``python -m sidecarkit`` imports, as an install would."""
    import compileall  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("sidecarkit")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sidecarkit is not importable here; run `make .venv/.installed-dev`")
    package = next(iter(spec.submodule_search_locations))
    if not compileall.compile_dir(package, quiet=1):
        raise SystemExit(f"compiling {package} to bytecode failed")
    return package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Compile the package to bytecode first, as an install does.",
    )
    args = parser.parse_args()
    if args.compile:
        print(f"bytecode: compiled {compile_package()} first, as pip install does")
    else:
        print(
            "bytecode: as found"
            + (
                " (PYTHONDONTWRITEBYTECODE is set)"
                if os.environ.get("PYTHONDONTWRITEBYTECODE")
                else ""
            )
        )
    runner, script, cpu = start_time(args.rounds)
    added = [r - s for r, s in zip(runner, script, strict=True)]
    print(
        f"start, command to all 4 containers running (median of {args.rounds}): runner "
        f"{statistics.median(runner) * 1000:.0f} ms, shell script "
        f"{statistics.median(script) * 1000:.0f} ms, "
        f"added {statistics.median(added) * 1000:.0f} ms "
        f"(min {min(added) * 1000:.0f}, max {max(added) * 1000:.0f}; target <= 150 ms); "
        f"runner CPU by then {statistics.median(cpu) * 1000:.0f} ms"
    )
    for kind in ("tcp", "exec"):
        share = idle_cpu(args.seconds, kind)
        print(
            f"idle, 10 containers with 1 s {kind} readiness probes: runner CPU "
            f"{share * 100:.2f} % of a core (target <= 1 %)"
        )


if __name__ == "__main__":
    main()
