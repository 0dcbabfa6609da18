"""A real gRPC server (grpcio) for the proxy's HTTP/2 tests, run as its own process.

Usage: ``grpcbackend.py PORT NAME``; prints ``ready`` once serving. Messages are raw bytes (no
protobuf), so the methods say what they do by their bytes:

- ``/test.Echo/Unary``: answers ``NAME:`` + the request; a request starting with ``fail:``
  ends with the status named after it (``fail:5`` is NOT_FOUND) and that detail;
  ``size:N`` answers N bytes; ``sleep:S`` waits S seconds first; ``meta:KEY`` answers the
  value of that request header (metadata);
- ``/test.Echo/Stream``: bidirectional, answers each message as Unary does, until the client
  ends its side.

SIGTERM stops it gracefully (in-flight calls get 5 s), as a gRPC server in a pod would stop.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc


def _answer(name: bytes, request: bytes, context: Any) -> bytes:
    if request.startswith(b"fail:"):
        code = int(request[5:].split(b":")[0])
        context.abort(grpc.StatusCode(next(s for s in grpc.StatusCode if s.value[0] == code).value),
                      f"failed as asked with {code}")  # fmt: skip
    if request.startswith(b"meta:"):
        wanted = request[5:].decode()
        found = [v for k, v in context.invocation_metadata() if k == wanted]
        return str(found[0] if found else "").encode()
    if request.startswith(b"size:"):
        return b"x" * int(request[5:])
    if request.startswith(b"sleep:"):
        time.sleep(float(request[6:].split()[0]))
    return name + b":" + request


def main() -> None:
    port, name = int(sys.argv[1]), sys.argv[2].encode()

    def unary(request: bytes, context: Any) -> bytes:
        return _answer(name, request, context)

    def stream(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for request in requests:
            yield _answer(name, request, context)

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait()
    server.stop(5).wait()


if __name__ == "__main__":
    main()
