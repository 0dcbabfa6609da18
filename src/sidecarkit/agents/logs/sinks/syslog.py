"""The syslog sink: RFC 5424 messages over TCP or TLS (RFC 5425), framed by octet counting
(RFC 6587), or over UDP (RFC 5426, one message per datagram: ``_udp``).

``rfc5424`` turns each batch into frames, one per event; this module delivers them and reads
the sink's options.

Octet counting makes messages with embedded newlines safe. A batch goes out as one write on
a connection kept open across batches. **What "confirmed" means:** TCP syslog has no
application-level acknowledgement, so a batch counts as delivered once every byte was handed
to the kernel. Bytes still in flight when the receiver dies are lost without notice; a
batch whose write failed is sent again, whole, on a new connection, so the receiver may see
part of it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final, cast

from sidecarkit.agents.logs import records
from sidecarkit.agents.logs.sinks import Spec, _udp, rfc5424

__all__ = ["SyslogSink", "create"]

log = logging.getLogger("sidecarkit.agent.logs.sinks")

_OPTIONS: Final = (
    "facility",
    "severity",
    "hostname",
    "app_name",
    "ca_file",
    "tls_verify",
    "server_name",
    "cert_file",
    "key_file",
    "connect_timeout",
    "write_timeout",
    "max_message",
)
_TLS_OPTIONS: Final = ("ca_file", "tls_verify", "server_name", "cert_file", "key_file")


class _Connection(asyncio.Protocol):
    """One connection to the receiver, with flow control: ``write`` returns once every byte
    is in the kernel (the write buffer's high-water mark is 0)."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, but have the same methods.
        writer = cast(asyncio.WriteTransport, transport)
        writer.set_write_buffer_limits(high=0)
        self.transport = writer

    def data_received(self, data: bytes) -> None:
        """Syslog receivers do not answer; anything they send is ignored."""

    def eof_received(self) -> bool:
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake(exc or ConnectionResetError("the syslog receiver closed the connection"))

    def pause_writing(self) -> None:
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake(None)

    def _wake(self, exc: BaseException | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise ConnectionResetError("the syslog receiver closed the connection")
        transport = self.transport
        transport.write(data)
        # Wait for the buffer to empty, not for a pause/resume pair: asyncio's TLS transport
        # with a high-water mark of 0 pauses at an empty buffer too and may never resume,
        # so the wait is bounded by a look at the buffer every 50 ms.
        while transport.get_write_buffer_size():
            if self.closed:
                raise ConnectionResetError("the syslog receiver closed the connection")
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._waiter), 0.05)
        self._waiter = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class SyslogSink:
    """Delivers batches to one syslog receiver over a connection kept open across batches.

    A failed connect or write raises ``OSError`` (or ``TimeoutError``) after dropping the
    connection; the caller backs off and sends the batch again, which connects anew.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        host: str,
        port: int,
        encoder: rfc5424.Encoder,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        connect_timeout: float = 10.0,
        write_timeout: float = 30.0,
        name: str = "syslog",
        udp: _udp.Sender | None = None,
        max_message: int = _udp.MAX_MESSAGE,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.host = host
        self.port = port
        self.encoder = encoder
        self.tls = tls
        self.server_name = server_name
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.connects = 0
        """Connections opened so far (1 while the receiver stays up)."""
        self.raw = True
        """Groups of a ``raw`` source may come as their bytes alone (``Group.raw``, no events):
        the sink frames those lines without per-line ``str`` objects."""
        self.wants_lines = True
        """...and may come split into lines already (``Group.raw_lines``)."""
        self._connection: _Connection | None = None
        self.udp = udp
        """Over UDP: the socket, and the longest datagram (longer messages are cut)."""
        self.max_message = max_message
        self.cut = 0
        """Messages cut to ``max_message`` (UDP only)."""

    async def send(self, batch: records.Batch) -> records.Outcome:
        payload = self.encoder.encode(batch)
        if not payload:
            return records.Outcome()
        if self.udp is not None:
            datagrams, cut = _udp.messages(payload, self.max_message)
            if cut:
                if not self.cut:
                    log.warning(
                        "sink %s: messages longer than max_message=%d bytes are cut to fit a "
                        "datagram; raise max_message (and the receiver's limit) or use tcp://",
                        self.name,
                        self.max_message,
                    )
                self.cut += cut
            await self.udp.send(datagrams)
            return records.Outcome()
        connection = await self._connected()
        try:
            async with asyncio.timeout(self.write_timeout):
                await connection.write(payload)
        except TimeoutError:
            self._drop()
            raise TimeoutError(
                f"syslog receiver {self.endpoint} took more than {self.write_timeout} s to take "
                f"{len(payload)} bytes; raise write_timeout or check the receiver"
            ) from None
        except OSError as exc:
            self._drop()
            raise ConnectionError(f"syslog receiver {self.endpoint}: write failed: {exc}") from exc
        except BaseException:
            self._drop()  # a half-written frame would corrupt the stream
            raise
        return records.Outcome()

    async def _connected(self) -> _Connection:
        current = self._connection
        if current is not None:
            # Two turns of the loop first (one polls the socket, the next runs its callback),
            # so that a receiver that closed the connection since the last batch is noticed
            # now and the batch goes to a new connection instead of into the void.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if current is self._connection and not current.closed:
                return current
        self._drop()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.server_name if self.tls else None,
                )
        except TimeoutError:
            raise TimeoutError(
                f"syslog receiver {self.endpoint} did not accept a connection within "
                f"{self.connect_timeout} s"
            ) from None
        except OSError as exc:
            raise ConnectionError(
                f"syslog receiver {self.endpoint}: cannot connect: {exc}"
            ) from exc
        self.connects += 1
        self._connection = connection
        return connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.abort()
            self._connection = None

    async def close(self) -> None:
        """Close the connection after what was written reached the kernel."""
        if self.udp is not None:
            self.udp.close()
        connection, self._connection = self._connection, None
        if connection is None or connection.transport is None or connection.closed:
            return
        connection.transport.close()
        for _ in range(100):  # the transport flushes, then reports connection_lost
            if connection.closed:
                return
            await asyncio.sleep(0.01)
        connection.abort()


def _fail(spec: Spec, option: str, value: object, accepted: str) -> ValueError:
    return ValueError(
        f"sink {spec.name or spec.kind!r}: option {option}={value!r} is not valid; {accepted}"
    )


def _code(spec: Spec, option: str, value: object, names: Mapping[str, int], top: int) -> int:
    accepted = f"use a number 0-{top} or one of: {', '.join(names)}"
    if isinstance(value, bool):
        raise _fail(spec, option, value, accepted)
    if isinstance(value, int) and 0 <= value <= top:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and int(text) <= top:
            return int(text)
        if text in names:
            return names[text]
    raise _fail(spec, option, value, accepted)


def _flag(spec: Spec, option: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _fail(spec, option, value, "use true or false")


def _seconds(spec: Spec, option: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if number > 0:
            return number
    raise _fail(spec, option, value, "use a number of seconds above 0")


def _field(spec: Spec, option: str, value: object, limit: int) -> str:
    if (
        isinstance(value, str)
        and 0 < len(value) <= limit
        and rfc5424.printable(value, limit) == value
    ):
        return value
    raise _fail(spec, option, value, f"use 1-{limit} printable ASCII characters without spaces")


def _endpoint(spec: Spec) -> tuple[str, str, int]:
    endpoint = spec.endpoint or ""
    usage = "use tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT, e.g. tcp://127.0.0.1:514"
    where = f"sink {spec.name or spec.kind!r}: endpoint {endpoint!r}"
    if not endpoint:
        raise ValueError(f"sink {spec.name or spec.kind!r}: no endpoint; {usage}")
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("tcp", "tls", "udp"):
        raise ValueError(f"{where} has scheme {parts.scheme!r}; {usage}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{where} has a bad port; {usage}") from None
    if not parts.hostname or port is None or port == 0:
        raise ValueError(f"{where} needs a host and a port; {usage}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{where} has more than scheme, host and port; {usage}")
    return parts.scheme, parts.hostname, port


def _tls_context(spec: Spec, options: Mapping[str, Any]) -> ssl.SSLContext:
    ca_file = options.get("ca_file")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise _fail(spec, "ca_file", ca_file, f"it cannot be read ({exc})") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not _flag(spec, "tls_verify", options.get("tls_verify", True)):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert_file, key_file = options.get("cert_file"), options.get("key_file")
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise _fail(spec, "cert_file", cert_file, f"it cannot be loaded ({exc})") from exc
    elif key_file is not None:
        raise _fail(spec, "key_file", key_file, "give cert_file too (a client certificate)")
    return context


def create(spec: Spec) -> SyslogSink:
    """The syslog sink ``spec`` describes; ``ValueError`` names any bad endpoint or option."""
    options = dict(spec.options)
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(
            f"sink {spec.name or spec.kind!r}: unknown option {unknown[0]!r}; "
            f"use any of: {', '.join(_OPTIONS)}"
        )
    scheme, host, port = _endpoint(spec)
    tls = None
    if scheme == "tls":
        tls = _tls_context(spec, options)
    else:
        for option in _TLS_OPTIONS:
            if option in options:
                raise ValueError(
                    f"sink {spec.name or spec.kind!r}: option {option} needs a tls:// endpoint, "
                    f"not {spec.endpoint!r}; use tls://{host}:{port} or drop {option}"
                )
    shape = rfc5424.Options(
        facility=_code(spec, "facility", options.get("facility", 1), rfc5424.FACILITIES, 23),
        severity=_code(spec, "severity", options.get("severity", 6), rfc5424.SEVERITIES, 7),
        hostname=_field(spec, "hostname", options["hostname"], 255)
        if "hostname" in options
        else None,
        app_name=_field(spec, "app_name", options["app_name"], 48)
        if "app_name" in options
        else None,
    )
    max_message = _udp.MAX_MESSAGE
    if "max_message" in options:
        if scheme != "udp":
            raise ValueError(
                f"sink {spec.name or spec.kind!r}: option max_message applies to udp:// only; "
                "over tcp:// and tls:// octet counting carries messages of any length"
            )
        value = options["max_message"]
        if isinstance(value, bool) or not isinstance(value, int) or not 480 <= value <= 65000:
            raise _fail(spec, "max_message", value, "use a number of bytes from 480 to 65000")
        max_message = value
    server_name = options.get("server_name", host)
    if not isinstance(server_name, str) or not server_name:
        raise _fail(spec, "server_name", server_name, "use the name in the receiver's certificate")
    return SyslogSink(
        spec.endpoint or "",
        host=host,
        port=port,
        encoder=rfc5424.Encoder(shape),
        tls=tls,
        server_name=server_name,
        connect_timeout=_seconds(spec, "connect_timeout", options.get("connect_timeout", 10)),
        write_timeout=_seconds(spec, "write_timeout", options.get("write_timeout", 30)),
        name=spec.name or spec.kind,
        udp=_udp.Sender(host, port, spec.endpoint or "") if scheme == "udp" else None,
        max_message=max_message,
    )
