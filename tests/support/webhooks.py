"""Real webhook servers for tests: certificates, a subprocess server, an in-thread server."""

from __future__ import annotations

import asyncio
import base64
import collections
import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecarkit.webhook import certificates, serving


@dataclass(frozen=True)
class Tls:
    """A CA and a serving pair for 127.0.0.1 and localhost, on disk."""

    directory: Path
    ca: certificates.Pair

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    def rotate(self) -> bytes:
        """Issue a new serving pair from the same CA, written as cert-manager does: by rename."""
        pair = certificates.issue(self.ca, names=["127.0.0.1", "localhost"])
        certificates.write_pair(pair, self.directory, stem="tls")
        return pair.cert

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls(directory: Path) -> Tls:
    ca = certificates.new_ca()
    certificates.write_pair(ca, directory, stem="ca")
    tls = Tls(directory, ca)
    tls.rotate()
    return tls


_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=256)


def free_port() -> int:
    """A loopback port free now, and none of the last 256 this returned: the kernel picks
    ``bind(0)`` ports at random and may hand out the same one twice in a row, and tests often
    take two or three ports for one process (which then refuses to listen twice)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _RECENT_PORTS:
            _RECENT_PORTS.append(port)
            return port
    raise RuntimeError("no fresh loopback port in 100 tries")


class Client:
    """A keep-alive HTTPS client for one server."""

    def __init__(self, port: int, tls: Tls, *, timeout: float = 10.0) -> None:
        self.port, self.tls, self.timeout = port, tls, timeout
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.tls.client_context(), timeout=self.timeout
        )

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()
            self.conn = self._connect()
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        return response.status, response.read()

    def review(self, review: Any, path: str = "/inject") -> dict[str, Any]:
        status, body = self.request("POST", path, json.dumps(review).encode())
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.conn.close()


def wait_ready(port: int, tls: Tls, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = Client(port, tls, timeout=1.0)
            status, _ = client.request("GET", "/readyz")
            client.close()
            if status == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"webhook on port {port} not ready: {last}")


@contextmanager
def process(tls: Tls, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``sidecarkit webhook`` as a real process on a free loopback port.

    Its output goes to ``log_path(tls, port)``: a file, because nobody reads a pipe while the
    test runs, and a full pipe would block the server.
    """
    port = free_port()
    command = [sys.executable, "-m", "sidecarkit", "webhook", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    with log_path(tls, port).open("wb") as log:
        proc = subprocess.Popen([*command, *args], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(port, tls)
            yield proc, port
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def log_path(tls: Tls, port: int) -> Path:
    """Where the server on ``port`` writes its log."""
    return tls.directory / f"webhook-{port}.log"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("no VmRSS")


@contextmanager
def in_thread(settings: serving.Settings) -> Iterator[serving.Server]:
    """A webhook Server on its own event loop in a thread: real sockets, one process."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, serving.Server] = {}
    failure: list[BaseException] = []

    async def main() -> None:
        server = serving.Server(settings)
        holder["server"] = server
        await server.run(started=lambda port: started.set())

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=run, name="webhook-under-test", daemon=True)
    thread.start()
    started.wait(20)
    if failure:
        raise failure[0]
    server = holder["server"]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join(30)
        loop.close()


def review_for(
    obj: Any,
    *,
    namespace: str = "default",
    dry_run: bool = False,
    operation: str = "CREATE",
    uid: str = "6b0b9c3e-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """``obj`` wrapped as a v1 review, shaped like the API server's for a Pod CREATE."""
    kind = obj.get("kind", "Pod") if isinstance(obj, dict) else "Pod"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": obj,
            "oldObject": None,
            "dryRun": dry_run,
        },
    }


def patch_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    response = answer["response"]
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))  # type: ignore[no-any-return]
