"""The logs agent as a real process for the loss tests: start it, read its metrics, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tests.support.webhooks import free_port


class AgentProcess:
    """``sidecarkit agent logs`` following ``paths`` and shipping to ``url`` over HTTP NDJSON
    (or to ``sink``, a ``--sink`` value), saving offsets in ``state`` (if not None)."""

    def __init__(
        self,
        paths: str,
        url: str,
        state: Path | None,
        log: IO[bytes],
        *extra: str,
        sink: str | None = None,
        open_files: int | None = None,
        **env: str,
    ) -> None:
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "sidecarkit",
            "agent",
            "logs",
            "--paths",
            paths,
            "--sink",
            sink or f"http={url}/ingest",
            *(["--offsets-dir", str(state)] if state is not None else []),
            "--port",
            str(self.port),
            "--batch-wait",
            "0.1",
            "--log-level",
            "info",
            *extra,
        ]
        self.log = log
        self.env = dict(os.environ, **env)
        self.open_files = open_files
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        args = self.args
        if self.open_files is not None:  # the open-files soft limit a container might have
            args = ["sh", "-c", f'ulimit -Sn {self.open_files} && exec "$@"', "sh", *args]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, env=self.env)

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_ready(self.port, timeout)

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics``, by its name with labels."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.proc = self._spawn()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_ready(port: int, timeout: float = 30.0) -> None:
    """Wait until the agent on ``port`` answers ``/ready``. Its SIGTERM handler is in place
    by then: a SIGTERM sent sooner (Python still importing, on a busy machine) kills it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the agent on port {port} was not ready within {timeout} s")


def numbered(first: int, count: int, pad: int = 0) -> bytes:
    """Lines ``seq=NNNNNNN`` for ``first`` .. ``first + count - 1``, as ``writer.py`` writes,
    each made ``pad`` bytes longer."""
    tail = "x" * pad
    return "".join(
        f"seq={n:07d} level=info a numbered line{tail}\n" for n in range(first, first + count)
    ).encode()


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition()`` every 0.1 s until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()
