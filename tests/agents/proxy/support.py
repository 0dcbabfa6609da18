"""Processes and clients for the proxy's tests: the proxy itself, the local test backend,
nginx as a real backend, and raw HTTP/1.1 over sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.webhooks import free_port

HERE = Path(__file__).parent
STARTED: list[subprocess.Popen[bytes]] = []
"""Processes started by the running test; ``conftest`` kills those still running after it."""
__all__ = ["Backend", "Proxy", "free_port", "request", "start_backend", "start_proxy"]


class Backend:
    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, record: Path, host: str = "127.0.0.1"
    ) -> None:
        self.proc = proc
        self.port = port
        self.record = record
        self.host = host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def received(self) -> list[bytes]:
        """What each connection received, in order of connection."""
        return [p.read_bytes() for p in sorted(self.record.glob("conn-*.bin"))]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class ThreadedApp:
    """A local test server on a loopback port: each accepted connection is handed to
    ``connection`` in a thread of its own (errors on the socket end it quietly)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(10)
        self.sock.close()

    def connection(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            self.connection(conn)


def start_backend(record: Path, port: int | None = None, host: str = "127.0.0.1") -> Backend:
    record.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "backend.py"), str(port), str(record), host],
        stdout=subprocess.PIPE,
    )
    STARTED.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return Backend(proc, port, record, host)


class Proxy:
    def __init__(self, proc: subprocess.Popen[bytes], admin: int, ports: dict[str, int]) -> None:
        self.proc = proc
        self.admin = admin
        self.ports = ports

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=10) as r:
            text: str = r.read().decode()
            return text

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the series of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{"):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _distinct_ports(count: int) -> list[int]:
    """``count`` free ports, all different: bound together, so the kernel cannot hand out the
    same one twice (one at a time, it may, and the proxy then refuses its own settings)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def start_proxy(
    *args: str,
    config: Path | None = None,
    inbound_app: str | None = None,
    upstreams: dict[str, str] | None = None,
    loop: str = "uvloop",
    stdout: int | None = None,
    stderr: Any = None,
) -> Proxy:
    """Start ``sidecarkit agent proxy`` with an inbound listener in front of ``inbound_app``
    and/or ``upstreams`` (name -> endpoints), on free ports; wait until it is ready."""
    spare = _distinct_ports(2 + len(upstreams or {}))
    admin = spare.pop()
    argv = [sys.executable, "-m", "sidecarkit", "agent", "proxy", "--admin", f"127.0.0.1:{admin}",
            "--log-level", "warning"]  # fmt: skip
    ports: dict[str, int] = {}
    if inbound_app:
        ports["inbound"] = spare.pop()
        argv += ["--inbound", f"127.0.0.1:{ports['inbound']}", "--app", inbound_app]
    for name, endpoints in (upstreams or {}).items():
        ports[name] = spare.pop()
        argv += ["--upstream", f"{name}=127.0.0.1:{ports[name]}={endpoints}"]
    if config:
        argv += ["--config", str(config)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if loop == "asyncio":
        env["SIDECARKIT_LOOP"] = "asyncio"
    proc = subprocess.Popen([*argv, *args], env=env, stdout=stdout, stderr=stderr)
    STARTED.append(proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r,
        ):
            if r.status == 200:
                return Proxy(proc, admin, ports)
        if proc.poll() is not None:
            raise AssertionError(f"the proxy exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the proxy did not become ready in 20 s")


@contextlib.contextmanager
def connection(port: int, timeout: float = 10.0) -> Iterator[socket.socket]:
    s = socket.create_connection(("127.0.0.1", port), timeout)
    try:
        yield s
    finally:
        _LEFT.pop(s.fileno(), None)
        s.close()


_LEFT: dict[int, bytes] = {}
"""Bytes read past a response, by socket: the start of the next pipelined one."""


def read_response(
    s: socket.socket, *, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """One response from ``s``: status, headers (lower-case names), body (Content-Length or
    chunked, or until close)."""
    buf = _LEFT.pop(s.fileno(), b"")
    while b"\r\n\r\n" not in buf:
        buf += _recv(s, "before a response head")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_only or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "content-length" in headers:
        want = int(headers["content-length"])
        grown = bytearray(rest)
        while len(grown) < want:
            grown += _recv(s, "mid-body")
        body, rest = bytes(grown[:want]), bytes(grown[want:])
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += _recv(s, "mid-chunk")
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += _recv(s, "mid-chunk")
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                break
    else:
        while chunk := s.recv(65536):
            rest += chunk
        body, rest = rest, b""
    if rest:
        _LEFT[s.fileno()] = rest
    return status, headers, body


def leftover(s: socket.socket) -> bytes:
    """Bytes ``read_response`` read past the response it returned (a tunnel's first bytes)."""
    return _LEFT.pop(s.fileno(), b"")


def _recv(s: socket.socket, where: str) -> bytes:
    chunk = s.recv(65536)
    if not chunk:
        raise ConnectionError(f"closed {where}")
    return chunk


def request(
    port: int,
    path: str = "/ok",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    with connection(port) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return read_response(s, head_only=method == "HEAD")
