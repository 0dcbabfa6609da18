"""Benchmark: what ``sidecarkit run`` adds to starting a pod, and what it costs when idle.

1. Start time, from the command to every container running. A pod of 4 containers (2
   sidecars with exec startup probes that pass at once, 2 main containers that stay up),
   started by ``sidecarkit run`` and by a shell script that starts the same processes in the
   same order. Each container writes a nanosecond timestamp when it starts; the figure is from
   just before the command is launched (interpreter start, imports, reading the manifest and
   planning included) to the last container's timestamp, and the runner's figure minus the
   script's of the same round is what the runner adds. Every way of starting runs once a
   round, in an order that rotates, so that the load of a busy machine, which drifts, falls on
   all of them alike; printed are the median, the quartiles and the range over the rounds, the
   time added before the first container, and the runner's own CPU time up to the last start.
   ``--baseline SRC`` times another version of the package (a checkout's ``src/``) in the same
   rounds: a before-and-after under the same load. Target: <= 150 ms added.
2. Idle CPU. The runner supervising 10 containers (5 sidecars, 5 main containers) that sleep,
   each with a readiness probe every second, for ``--seconds``: the runner process's own CPU
   time (not its children's) over wall time. Done with tcpSocket probes and with exec probes.
   Target: <= 1 % of a core.

Before measuring, the package's modules are compiled to bytecode, as ``pip install`` does: where
``PYTHONDONTWRITEBYTECODE`` is set (it is in some development shells) and nothing compiled them,
every ``sidecarkit run`` would compile its sources again, which is no user's start-up.
``--no-compile`` measures that case instead.

    python bench/runner.py [--rounds 15] [--seconds 10] [--no-compile] [--baseline SRC]
        [--without-cgroups]
"""

from __future__ import annotations

import argparse
import compileall
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


def _until_all_started(log: Path, proc: subprocess.Popen[bytes]) -> tuple[int, int, float]:
    """(the first and the last container's start, ns; the process's own CPU seconds by then)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists():
            stamps = _stamps(log)
            if all(n in stamps for n in _NAMES):
                return min(stamps.values()), max(stamps[n] for n in _NAMES), _cpu(proc.pid)
        time.sleep(0.002)
    raise SystemExit("the pod's containers did not all start within 60 s")


def _pod(log: Path) -> dict[str, Any]:
    probe = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bench"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "initContainers": [
                _container("s1", log, "exec sleep 30", restartPolicy="Always", startupProbe=probe),
                _container("s2", log, "exec sleep 30", restartPolicy="Always", startupProbe=probe),
            ],
            "containers": [
                _container("m1", log, "exec sleep 30"),
                _container("m2", log, "exec sleep 30"),
            ],
        },
    }


def _yaml(value: Any, indent: str = "") -> str:
    """Block-style YAML for the pod, as people write it (scalars in JSON's quoting, valid YAML)."""
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{indent}{key}:\n{_yaml(item, indent + '  ')}")
            else:
                lines.append(f"{indent}{key}: {json.dumps(item)}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for item in value:
            text = _yaml(item, indent + "  ") if isinstance(item, dict | list) else json.dumps(item)
            lines.append(f"{indent}- {text.lstrip()}")
        return "\n".join(lines)
    return json.dumps(value)


def _script(log: Path) -> str:
    return "\n".join(
        [
            f"sh -c 'echo \"$(date +%s%N) s1\" >> {log}; exec sleep 30' & one=$!",
            f"sh -c 'echo \"$(date +%s%N) s2\" >> {log}; exec sleep 30' & two=$!",
            f"sh -c 'echo \"$(date +%s%N) m1\" >> {log}; exec sleep 30' & three=$!",
            f"sh -c 'echo \"$(date +%s%N) m2\" >> {log}; exec sleep 30' & four=$!",
            'trap \'kill "$one" "$two" "$three" "$four"; exit 0\' TERM',
            "wait",
        ]
    )


class Starts:
    """One way of starting the pod, measured over the rounds."""

    def __init__(
        self, name: str, command: list[str] | None, env: dict[str, str], *, yaml: bool = True
    ) -> None:
        self.name = name
        self.yaml = yaml
        self.command = command
        """``sidecarkit run`` with the manifest to follow, or None for the shell script."""
        self.env = env
        self.first: list[float] = []
        self.last: list[float] = []
        self.cpu: list[float] = []

    def once(self, tmp: Path) -> None:
        log = tmp / "log"
        log.unlink(missing_ok=True)
        path = tmp / ("pod.yaml" if self.yaml else "pod.json")
        path.write_text(_yaml(_pod(log)) + "\n" if self.yaml else json.dumps(_pod(log)))
        if self.command is None:
            argv = ["sh", "-c", _script(log)]
        else:
            argv = [*self.command, str(path), "--events", "none"]
        began = time.time_ns()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=self.env)
        first, last, used = _until_all_started(log, proc)
        self.first.append((first - began) / 1e9)
        self.last.append((last - began) / 1e9)
        self.cpu.append(used)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def start_time(ways: list[Starts], rounds: int) -> None:
    """Each way once a round, in an order that rotates, so that load drifts hit all alike."""
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(rounds):
            for way in ways[index % len(ways) :] + ways[: index % len(ways)]:
                way.once(Path(tmp))


def _spread(values: list[float]) -> str:
    """Median, quartiles and range, in ms."""
    ms = sorted(v * 1000 for v in values)
    quartiles = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0], ms[0], ms[0]]
    return (
        f"median {quartiles[1]:.0f} ms (quartiles {quartiles[0]:.0f}-{quartiles[2]:.0f}, "
        f"range {ms[0]:.0f}-{ms[-1]:.0f})"
    )


def _cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s threads, from the scheduler's nanosecond count (``/proc/PID/stat``
    counts in ticks, 10 ms here: too coarse for a start-up of ~100 ms)."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
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
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("sidecarkit")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sidecarkit is not importable here; run `make .venv/.installed-dev`")
    package = next(iter(spec.submodule_search_locations))
    if not compileall.compile_dir(package, quiet=1):
        raise SystemExit(f"compiling {package} to bytecode failed")
    return package


def _report(way: Starts, script: Starts) -> str:
    added = [r - s for r, s in zip(way.last, script.last, strict=True)]
    first = [r - s for r, s in zip(way.first, script.first, strict=True)]
    return (
        f"  {way.name}: all running {_spread(way.last)}\n"
        f"    added to the script's, paired by round: {_spread(added)}; target <= 150 ms\n"
        f"    added before the first container: {_spread(first)}\n"
        f"    runner CPU by the last start: {_spread(way.cpu)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Compile the package to bytecode first, as an install does.",
    )
    parser.add_argument(
        "--baseline",
        metavar="SRC",
        help="Also time the sidecarkit package under SRC (e.g. a checkout of main's src/), "
        "alternating with this one, to compare two versions under the same load.",
    )
    parser.add_argument(
        "--manifest",
        choices=("yaml", "json"),
        default="yaml",
        help="Write the pod as YAML (what people write; the YAML reader is start-up time) or "
        "JSON (read without it).",
    )
    parser.add_argument(
        "--without-cgroups",
        action="store_true",
        help="Also time sidecarkit run with SIDECARKIT_RUN_CGROUPS=off, to show what joining "
        "a cgroup per container costs on this machine.",
    )
    args = parser.parse_args()
    baseline = Path(args.baseline).resolve() if args.baseline else None
    if baseline is not None and not (baseline / "sidecarkit" / "__init__.py").exists():
        raise SystemExit(f"--baseline {baseline}: no sidecarkit package there; name a src/ dir")
    if args.compile:
        print(f"bytecode: compiled {compile_package()} first, as pip install does")
        if baseline is not None:
            if not compileall.compile_dir(str(baseline / "sidecarkit"), quiet=1):
                raise SystemExit(f"compiling {baseline} to bytecode failed")
            print(f"bytecode: compiled {baseline / 'sidecarkit'} too")
    else:
        print(
            "bytecode: as found"
            + (
                " (PYTHONDONTWRITEBYTECODE is set)"
                if os.environ.get("PYTHONDONTWRITEBYTECODE")
                else ""
            )
        )
    print(f"load average before: {os.getloadavg()[0]:.1f} (a busy machine inflates every figure)")
    command = [sys.executable, "-m", "sidecarkit", "run"]
    script = Starts("shell script", None, dict(os.environ))
    yaml = args.manifest == "yaml"
    ways = [script, Starts("sidecarkit run", command, dict(os.environ), yaml=yaml)]
    if args.without_cgroups:
        env = {**os.environ, "SIDECARKIT_RUN_CGROUPS": "off"}
        ways.append(Starts("sidecarkit run, SIDECARKIT_RUN_CGROUPS=off", command, env, yaml=yaml))
    if baseline is not None:
        env = {**os.environ, "PYTHONPATH": str(baseline)}
        ways.append(Starts(f"baseline {baseline}", command, env, yaml=yaml))
    start_time(ways, args.rounds)
    print(
        f"start, a {args.manifest.upper()} manifest, command to all 4 containers running, "
        f"{args.rounds} rounds, each way once a "
        f"round in rotating order:\n  shell script: all running {_spread(script.last)}"
    )
    for way in ways[1:]:
        print(_report(way, script))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    for kind in ("tcp", "exec"):
        share = idle_cpu(args.seconds, kind)
        print(
            f"idle, 10 containers with 1 s {kind} readiness probes: runner CPU "
            f"{share * 100:.2f} % of a core (target <= 1 %)"
        )


if __name__ == "__main__":
    main()
