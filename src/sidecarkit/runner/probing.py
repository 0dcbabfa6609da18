"""Probe and hook handlers, as the kubelet runs them, on localhost.

``exec`` runs the command with the container's environment and working directory, and
succeeds on exit 0 within the timeout. ``httpGet`` succeeds on a status from 200 to 399 within
the timeout (redirects are not followed). ``tcpSocket`` succeeds when a connection opens.
``sleep`` (hooks only) waits. ``grpc`` asks the standard health service (grpc.health.v1) and
succeeds on SERVING; it needs the ``grpcio`` package, and says so when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping

from sidecarkit.runner import specs

__all__ = ["run_handler"]


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
) -> tuple[bool, str]:
    """(succeeded, what happened) for one run of ``handler``; never raises."""
    try:
        return await asyncio.wait_for(_run(handler, env, cwd, ports, timeout), timeout)
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
) -> tuple[bool, str]:
    if handler.kind == "sleep":
        await asyncio.sleep(handler.seconds)
        return True, f"slept {handler.seconds:g}s"
    if handler.kind == "exec":
        proc = await asyncio.create_subprocess_exec(
            *handler.command,
            env=dict(env),
            cwd=cwd or None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return code == 0, f"exit code {code}"
    port = _port(handler, ports)
    if handler.kind == "tcpSocket":
        _, writer = await asyncio.open_connection(handler.host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, "connected"
    if handler.kind == "httpGet":
        context = None
        if handler.scheme == "HTTPS":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
        reader, writer = await asyncio.open_connection(handler.host, port, ssl=context)
        headers = "".join(f"{k}: {v}\r\n" for k, v in handler.headers)
        request = (
            f"GET {handler.path} HTTP/1.1\r\nHost: {handler.host}:{port}\r\n"
            f"User-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f"not an HTTP answer: {status_line[:40]!r}"
        status = int(parts[1])
        return 200 <= status < 400, f"HTTP {status}"
    if handler.kind == "grpc":
        return await _grpc(handler, port, timeout)
    return False, f"unknown handler {handler.kind}"


async def _grpc(handler: specs.Handler, port: int, timeout: float) -> tuple[bool, str]:
    try:
        import grpc  # noqa: PLC0415
        from grpc_health.v1 import (  # noqa: PLC0415
            health_pb2,
            health_pb2_grpc,
        )
    except ImportError:
        return False, "grpc probes need the grpcio and grpcio-health-checking packages"
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
