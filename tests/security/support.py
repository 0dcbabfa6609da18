"""A real ``sidecarkit ca serve`` process for tests, and HTTPS calls to it."""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecarkit.security import authority
from tests.support.webhooks import free_port

__all__ = ["CaProcess", "init_ca", "new_token", "post_csr", "running_ca"]


def sidecarkit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecarkit", *args],
        capture_output=True, text=True, check=check, timeout=60,
    )  # fmt: skip


def init_ca(directory: Path, trust_domain: str = "cluster.local") -> Path:
    sidecarkit("ca", "init", "--dir", str(directory), "--trust-domain", trust_domain)
    return directory


def new_token(directory: Path, namespace: str, account: str) -> str:
    done = sidecarkit(
        "ca", "token", "--tokens", str(directory / "tokens"),
        "--namespace", namespace, "--service-account", account,
    )  # fmt: skip
    return done.stdout.strip()


@dataclass
class CaProcess:
    proc: subprocess.Popen[bytes]
    port: int
    directory: Path
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def bundle(self) -> bytes:
        return (self.directory / "root.crt").read_bytes()

    def stop(self) -> str:
        """Stop the CA; what it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


@contextlib.contextmanager
def running_ca(directory: Path, *extra: str, tokens: bool = True) -> Iterator[CaProcess]:
    port = free_port()
    log = directory.parent / f"ca-{port}.log"
    argv = [sys.executable, "-m", "sidecarkit", "ca", "serve", "--dir", str(directory),
            "--listen", f"127.0.0.1:{port}", "--log-level", "debug"]  # fmt: skip
    if tokens:
        argv += ["--tokens", str(directory / "tokens")]
    with log.open("wb") as out:
        proc = subprocess.Popen([*argv, *extra], stdout=out, stderr=subprocess.STDOUT)
    ca = CaProcess(proc, port, directory, log)
    try:
        context = ssl.create_default_context(cadata=ca.bundle.decode())
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{ca.url}/healthz", timeout=1, context=context):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the CA did not start:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield ca
    finally:
        ca.stop()


def post_csr(ca: CaProcess, csr: bytes, token: str | None) -> tuple[int, dict[str, Any]]:
    """POST a CSR; (status, JSON answer)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{ca.url}/v1/certificates",
        data=json.dumps({"csr": csr.decode()}).encode(),
        headers=headers,
        method="POST",
    )
    context = ssl.create_default_context(cadata=ca.bundle.decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def key_and_csr(identity: Any = None) -> tuple[Any, bytes]:
    key = authority.new_key()
    return key, authority.new_csr(key, identity)
