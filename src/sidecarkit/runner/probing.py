"""Probe and hook handlers, as the kubelet runs them, on localhost.

``exec`` runs the command with the container's environment and working directory, and
succeeds on exit 0 within the timeout. ``httpGet`` succeeds on a status from 200 to 399 within
the timeout; like the kubelet it follows up to 10 redirects to the same host name, and a
redirect to another host is not followed but counts as success, with a ``ProbeWarning``.
``tcpSocket`` succeeds when a connection opens.
``sleep`` (hooks only) waits. ``grpc`` asks the standard health service (grpc.health.v1) and
succeeds on SERVING; it needs the ``grpcio`` package, and says so when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sidecarkit.runner import containing, processes, specs

if TYPE_CHECKING:
    from urllib.parse import SplitResult

__all__ = ["MAX_REDIRECTS", "PROBE_WARNING", "run_handler"]

MAX_REDIRECTS = 10
"""Redirects an HTTP probe follows before it fails, as Go's HTTP client (the kubelet's) does."""
PROBE_WARNING = "ProbeWarning: "
"""How the detail of a probe that succeeded with a warning begins."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HEADER_LINES = 200


def _port(handler: specs.Handler, ports: Mapping[str, int]) -> int:
    if isinstance(handler.port, int):
        return handler.port
    if handler.port in ports:
        return ports[handler.port]
    raise ValueError(f"no container port named {handler.port!r}")


async def run_handler(
    handler: specs.Handler,
    *,
    env: Mapping[str, str],
    cwd: str | None,
    ports: Mapping[str, int],
    timeout: float,
    container: str = "",
    containment: containing.Containment | None = None,
) -> tuple[bool, str]:
    """(succeeded, what happened) for one run of ``handler``; never raises.

    An exec handler runs as a process of ``container`` (its mark, cgroup and watchdog entry
    in ``containment``); timed out or cancelled, its whole process group is killed.
    """
    if handler.kind == "grpc":
        # Loading grpc takes a second or more on a busy machine: not the probe's time.
        await asyncio.to_thread(_grpc_modules)
    try:
        return await asyncio.wait_for(
            _run(handler, env, cwd, ports, timeout, container, containment), timeout
        )
    except TimeoutError:
        return False, f"timed out after {timeout:g}s"
    except Exception as exc:  # a probe that breaks has failed; the runner goes on
        return False, str(exc) or type(exc).__name__


async def _run(
    handler: specs.Handler,
    env: Mapping[str, str],
    cwd: str | None,
    ports: Mapping[str, int],
    timeout: float,
    container: str,
    containment: containing.Containment | None,
) -> tuple[bool, str]:
    if handler.kind == "sleep":
        await asyncio.sleep(handler.seconds)
        return True, f"slept {handler.seconds:g}s"
    if handler.kind == "exec":
        code = await processes.run_command(
            handler.command, env=env, cwd=cwd, container=container, containment=containment
        )
        return code == 0, f"exit code {code}"
    port = _port(handler, ports)
    if handler.kind == "tcpSocket":
        _, writer = await asyncio.open_connection(handler.host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, "connected"
    if handler.kind == "httpGet":
        return await _http_probe(handler, port)
    if handler.kind == "grpc":
        return await _grpc(handler, port, timeout)
    return False, f"unknown handler {handler.kind}"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _http_probe(handler: specs.Handler, port: int) -> tuple[bool, str]:
    # Here, not at the top: urllib.parse (with ipaddress) is start-up time for every pod.
    from urllib.parse import urljoin, urlsplit  # noqa: PLC0415

    scheme = "https" if handler.scheme == "HTTPS" else "http"
    path = handler.path if handler.path.startswith("/") else "/" + handler.path
    first = urlsplit(f"{scheme}://{_netloc(handler.host, port)}{path}")
    url, hops = first, 0
    while True:
        status, location = await _http_get(url, handler.headers)
        if status not in _REDIRECTS or not location:
            after = f" after {hops} redirect{'s' if hops > 1 else ''}" if hops else ""
            return 200 <= status < 400, f"HTTP {status}{after}"
        target = urlsplit(urljoin(url.geturl(), location))
        if target.scheme not in ("http", "https") or not target.hostname:
            return False, f"HTTP {status} redirects to {location!r}, which cannot be followed"
        if target.hostname != first.hostname:
            return True, (
                f"{PROBE_WARNING}HTTP {status} redirects to another host "
                f"({target.hostname}); not followed, counted as success"
            )
        if hops == MAX_REDIRECTS:
            return False, f"stopped after {MAX_REDIRECTS} redirects"
        url, hops = target, hops + 1


async def _http_get(url: SplitResult, headers: Sequence[tuple[str, str]]) -> tuple[int, str]:
    """One GET of ``url``: the status and the Location header ("" if none)."""
    context = None
    if url.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
    port = url.port or (443 if url.scheme == "https" else 80)
    host = url.hostname or "127.0.0.1"
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        target = url.path or "/"
        if url.query:
            target += "?" + url.query
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {_netloc(host, port)}\r\n"
            f"User-Agent: kube-probe/1.33\r\nAccept: */*\r\n{extra}Connection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"not an HTTP answer: {status_line[:40]!r}")
        status = int(parts[1])
        location = ""
        for _ in range(_MAX_HEADER_LINES):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "location":
                location = value.strip()
        return status, location
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


@functools.cache
def _grpc_modules() -> tuple[Any, Any, Any] | None:
    try:
        import grpc  # noqa: PLC0415
        from grpc_health.v1 import (  # noqa: PLC0415
            health_pb2,
            health_pb2_grpc,
        )
    except ImportError:
        return None
    return grpc, health_pb2, health_pb2_grpc


async def _grpc(handler: specs.Handler, port: int, timeout: float) -> tuple[bool, str]:
    modules = _grpc_modules()
    if modules is None:
        return False, "grpc probes need the grpcio and grpcio-health-checking packages"
    grpc, health_pb2, health_pb2_grpc = modules
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=handler.service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return False, f"gRPC {exc.code().name}"
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        return serving, "SERVING" if serving else f"status {reply.status}"
