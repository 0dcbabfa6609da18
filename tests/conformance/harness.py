"""Running pods through ``sidecarkit run`` and reading what their containers wrote.

Containers log their own events (``start``, ``exit <code>``, ``term``, ``prestop``...) with a
nanosecond timestamp to one file, as the upstream e2e tests do with their shared log volume; the
runner reports its events as JSON lines on stderr. Backoff is scaled down so restarts take
milliseconds instead of seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A sidecar that runs until SIGTERM, logging it, then exits 0.
FOREVER = "trap 'L term; exit 0' TERM; while :; do sleep 0.02; done"


def done(code: int = 0) -> str:
    return f"L exit {code}; exit {code}"


@dataclass
class Result:
    code: int
    events: list[dict[str, Any]]
    log: list[tuple[float, str, str]]
    stdout: str
    stderr: str

    def times(self, name: str, what: str) -> list[float]:
        return [t for t, n, w in self.log if n == name and w == what]

    def first(self, name: str, what: str) -> float:
        found = self.times(name, what)
        assert found, f"{name} never logged {what!r}; log: {self.log}"
        return found[0]

    def count(self, name: str, what: str) -> int:
        return len(self.times(name, what))

    def event(self, container: str, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["container"] == container and e["event"] == event]

    def pod_events(self) -> list[str]:
        return [e["event"] for e in self.events if e["container"] == "pod"]


@dataclass
class Pod:
    tmp: Path
    restart_policy: str = "Never"
    grace: float = 5.0
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    containers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.tmp / "events.log"

    def _container(self, name: str, body: str, **extra: Any) -> dict[str, Any]:
        logger = f'L() {{ echo "$(date +%s%N) {name} $*" >> {self.log_path}; }}'
        return {
            "name": name,
            "image": "busybox",
            "command": ["sh", "-c", f"{logger}; L start; {body}"],
            **extra,
        }

    def hook(self, name: str, body: str) -> dict[str, Any]:
        """An exec handler that can log as ``name``."""
        logger = f'L() {{ echo "$(date +%s%N) {name} $*" >> {self.log_path}; }}'
        return {"exec": {"command": ["sh", "-c", f"{logger}; {body}"]}}

    def init(self, name: str, body: str, **extra: Any) -> None:
        self.init_containers.append(self._container(name, body, **extra))

    def sidecar(self, name: str, body: str = FOREVER, **extra: Any) -> None:
        self.init_containers.append(self._container(name, body, restartPolicy="Always", **extra))

    def main(self, name: str, body: str, **extra: Any) -> None:
        self.containers.append(self._container(name, body, **extra))

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "conformance"},
            "spec": {
                "restartPolicy": self.restart_policy,
                "terminationGracePeriodSeconds": self.grace,
                "initContainers": self.init_containers,
                "containers": self.containers,
            },
        }

    def run(
        self, *, timeout: float = 60, stop_after: float | None = None, args: tuple[str, ...] = ()
    ) -> Result:
        path = self.tmp / "pod.json"
        path.write_text(json.dumps(self.manifest()))
        self.log_path.touch()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecarkit",
                "run",
                str(path),
                "--events",
                "json",
                "--backoff-scale",
                "0.01",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if stop_after is not None:
            # Count from the first container's start, not from launch: by then the runner's signal
            # handlers are installed, however slow the interpreter was to start. A pod whose
            # containers never start (S20) falls back after a few seconds.
            deadline = time.monotonic() + 5
            while not self.log_path.stat().st_size and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(stop_after)
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=timeout)
        events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        log = []
        for line in self.log_path.read_text().splitlines():
            stamp, name, what = line.split(" ", 2)
            log.append((int(stamp) / 1e9, name, what))
        return Result(proc.returncode, events, log, stdout, stderr)


def no_process_left(marker: str) -> bool:
    """True when no process's command line mentions ``marker`` (the test's own directory)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            return False
    return True
