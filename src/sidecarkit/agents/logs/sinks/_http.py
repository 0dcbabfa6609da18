"""What the HTTP sinks share: their options, one client session, gzip, and reading answers.

Every HTTP sink takes the same common options (``headers``, ``header_files``, ``timeout``,
``gzip``, ``ca_file``, ``cert_file``/``key_file``, ``tls_verify``, ``username``/``password`` or
``bearer_token_file``) next to its own; ``settings``
checks them all once, when the sink is created, so a typo fails at start-up with a message that
names the option instead of surfacing as a refused request hours later.

Requests go out through ``_client``, a lean HTTP/1.1 client on asyncio streams; connections are
opened on the first request, inside the running event loop: a sink can be built before any loop
exists (while the agent reads its settings), and a connection always belongs to the loop that
uses it.

The sinks never sleep or retry. A transient failure of the whole request is handed back to the
caller (``Outcome(retry=...)`` or an ``OSError``/``TimeoutError``), which
owns back-off; a permanent refusal is counted in ``Outcome.rejected`` with a short reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import logging
import math
import ssl
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import orjson

from sidecarkit import __version__
from sidecarkit.agents.logs import records, sinks
from sidecarkit.agents.logs.sinks import _client

__all__ = [
    "COMMON_OPTIONS",
    "MAX_RETRY_AFTER",
    "Client",
    "Options",
    "Reply",
    "Settings",
    "cleaned",
    "count",
    "encode",
    "gzip",
    "refuse",
    "retry_after",
    "rfc3339",
    "second",
    "settings",
    "short",
]

log = logging.getLogger("sidecarkit.agent.logs.sinks")

COMMON_OPTIONS: Final = frozenset(
    {
        "bearer_token_file",
        "ca_file",
        "cert_file",
        "gzip",
        "header_files",
        "headers",
        "key_file",
        "password",
        "timeout",
        "tls_verify",
        "username",
    }
)
"""Options every HTTP sink accepts besides its own."""

MAX_RETRY_AFTER: Final = 300.0
"""Longest ``Retry-After`` honoured, in seconds: a receiver asking for hours is more likely
misconfigured than right, and shipping must not stall that long on one header."""

_GZIP_INLINE: Final = 64 * 1024
"""Bodies up to this size are compressed on the event loop; larger ones in a worker thread, where
zlib releases the GIL."""

_USER_AGENT: Final = f"sidecarkit/{__version__}"


@dataclass(frozen=True, slots=True)
class Settings:
    """The common options of one HTTP sink, checked."""

    name: str
    """The sink's name in logs and error messages."""
    url: str
    """Where requests go, with the API path already added."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers from the ``headers`` option."""
    timeout: float = 30.0
    """Seconds one request may take, connecting included (``timeout``)."""
    gzip: bool = False
    """Compress request bodies (``Content-Encoding: gzip``, level 1: a third of the CPU of the
    default level for a few percent more bytes)."""
    ssl: ssl.SSLContext | bool = True
    """What TLS is verified with: a context with ``ca_file``, ``True`` for the system store,
    ``False`` when ``tls_verify`` is off."""
    authorization: str | None = None
    """A fixed ``Authorization`` header (basic auth), if any."""
    secret_headers: tuple[tuple[str, Path, str], ...] = ()
    """Headers whose value is a file's content (``header_files``, and ``bearer_token_file`` as
    ``Authorization: Bearer <token>``): name, file, prefix. Read again whenever the file
    changes, because Kubernetes updates mounted secrets and projected tokens in place."""

    @property
    def bearer_token_file(self) -> Path | None:
        for name, path, prefix in self.secret_headers:
            if name == "Authorization" and prefix == "Bearer ":
                return path
        return None


def settings(
    spec: sinks.Spec,
    *,
    path: str | None,
    own: Mapping[str, str],
    example: str,
) -> tuple[Settings, dict[str, Any]]:
    """Check ``spec``'s endpoint and common options; return them and the sink's own options.

    ``path`` is appended to an endpoint that has none (``None``: the endpoint is used as it is);
    ``own`` holds the names of the sink's own options (each with a few words on what it takes,
    for readers of the sink's module); ``example`` is an endpoint to show when ``spec`` has none.
    """
    name = spec.name or spec.kind
    options: Mapping[str, Any] = spec.options or {}
    if not isinstance(options, Mapping):
        raise ValueError(
            f"sink {name!r}: options must be a mapping of option names to values, "
            f"got {type(options).__name__}"
        )
    accepted = sorted(COMMON_OPTIONS | set(own))
    for key in options:
        if key not in accepted:
            raise ValueError(
                f"sink {name!r}: unknown option {key!r}; accepted options: {', '.join(accepted)}"
            )
    url = _endpoint(name, spec.endpoint, path=path, example=example)
    o = Options(name, options)
    headers = o.headers()
    timeout = o.number("timeout", 30.0)
    compress = o.flag("gzip", False)
    context = tls_context(o)
    username, password = o.text("username"), o.text("password")
    token_file = o.path("bearer_token_file")
    secret_headers = o.header_files()
    if token_file is not None:
        secret_headers += (("Authorization", token_file, "Bearer "),)
    authorization = None
    if (username is None) != (password is None):
        missing = "password" if password is None else "username"
        raise ValueError(
            f"sink {name!r}: basic auth needs both 'username' and 'password'; add {missing!r}"
        )
    if username is not None and password is not None:
        if token_file is not None:
            raise ValueError(
                f"sink {name!r}: set either 'username'/'password' or 'bearer_token_file', not both"
            )
        pair = base64.b64encode(f"{username}:{password}".encode()).decode()
        authorization = f"Basic {pair}"
    own_options = {key: value for key, value in options.items() if key in own}
    common = Settings(
        name=name,
        url=url,
        headers=headers,
        timeout=timeout,
        gzip=compress,
        ssl=context,
        authorization=authorization,
        secret_headers=secret_headers,
    )
    return common, own_options


def tls_context(o: Options) -> ssl.SSLContext | bool:
    """The TLS settings of ``o`` (``ca_file``, ``cert_file``/``key_file``, ``tls_verify``) as a
    context; ``True`` when they are all defaults (the system's CAs, no client certificate)."""
    verify = o.flag("tls_verify", True)
    ca_file = o.path("ca_file")
    cert_file, key_file = o.path("cert_file"), o.path("key_file")
    if key_file is not None and cert_file is None:
        raise ValueError(
            f"sink {o.name!r}: option 'key_file' needs 'cert_file', the client certificate"
        )
    if ca_file is None and cert_file is None and verify:
        return True
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as exc:
        raise ValueError(
            f"sink {o.name!r}: option 'ca_file': {ca_file} holds no usable PEM certificate "
            f"({exc}); point it at the CA bundle that signed the receiver's certificate"
        ) from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        try:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"sink {o.name!r}: options 'cert_file'/'key_file': {cert_file} and "
                f"{key_file or '(no key_file)'} are not a PEM certificate and its private key "
                f"({exc}); give the client certificate in cert_file and its key in key_file"
            ) from exc
    return context


def _endpoint(name: str, endpoint: Any, *, path: str | None, example: str) -> str:
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValueError(f"sink {name!r} needs an endpoint URL, e.g. endpoint: {example}")
    text = endpoint.strip()
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 - raises ValueError for a port that is not a number below 65536
    except ValueError as exc:
        raise ValueError(
            f"sink {name!r}: endpoint {endpoint!r} is not a URL ({exc}); e.g. {example}"
        ) from exc
    if url.scheme not in ("http", "https") or not url.hostname or any(c in text for c in " \r\n"):
        raise ValueError(
            f"sink {name!r}: endpoint {endpoint!r} must be an http:// or https:// URL "
            f"with a host, e.g. {example}"
        )
    if path is not None and url.path in ("", "/"):
        url = url._replace(path=path)
    return urllib.parse.urlunsplit(url._replace(fragment=""))


class Options:
    """Typed reads of one sink's options, each failing with the option's name and the fix."""

    __slots__ = ("name", "options")

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name, self.options = name, options

    def _fail(self, key: str, wanted: str, value: Any) -> ValueError:
        return ValueError(f"sink {self.name!r}: option {key!r} must be {wanted}, got {value!r}")

    def flag(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def number(self, key: str, default: float) -> float:
        value = self.options.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise self._fail(key, "a positive number of seconds, e.g. 30", value)
        return float(value)

    def text(self, key: str) -> str | None:
        value = self.options.get(key)
        if value is None and key not in self.options:
            return None
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string", value)
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.options.get(key, choices[0])
        if value not in choices:
            raise self._fail(key, f"one of {', '.join(choices)}", value)
        return str(value)

    def path(self, key: str) -> Path | None:
        text = self.text(key)
        if text is None:
            return None
        path = Path(text)
        if not path.is_file():
            raise ValueError(
                f"sink {self.name!r}: option {key!r}: {text} is not a readable file; "
                f"mount it into the container or fix the path"
            )
        return path

    def header_files(self) -> tuple[tuple[str, Path, str], ...]:
        value = self.options.get("header_files", {})
        if not isinstance(value, Mapping):
            raise self._fail("header_files", "a mapping of header names to file paths", value)
        out = []
        for key, path in value.items():
            if not isinstance(key, str) or not key or any(c in key for c in " :\r\n"):
                raise self._fail("header_files", "a mapping with header names as keys", key)
            if not isinstance(path, str) or not Path(path).is_file():
                raise ValueError(
                    f"sink {self.name!r}: option 'header_files.{key}': {path!r} is not a "
                    "readable file; mount the secret into the container or fix the path"
                )
            out.append((key, Path(path), ""))
        return tuple(out)

    def headers(self) -> tuple[tuple[str, str], ...]:
        value = self.options.get("headers", {})
        if not isinstance(value, Mapping):
            raise self._fail("headers", "a mapping of header names to values", value)
        out = []
        for key, text in value.items():
            if not isinstance(key, str) or not key or any(c in key for c in " :\r\n"):
                raise self._fail("headers", "a mapping with header names as keys", key)
            if isinstance(text, bool) or not isinstance(text, str | int | float):
                raise self._fail(f"headers.{key}", "a string", text)
            if any(c in str(text) for c in "\r\n"):
                raise self._fail(f"headers.{key}", "a single line", text)
            out.append((key, str(text)))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Reply:
    """The receiver's answer to one request."""

    status: int
    body: bytes
    retry_after: float | None
    """Seconds from ``Retry-After``, capped at ``MAX_RETRY_AFTER``."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Client:
    """POSTs bodies to one URL over kept-alive connections made on first use (``_client``)."""

    __slots__ = ("_context", "_head", "_idle", "_loop", "_secrets", "limit", "settings")

    def __init__(
        self,
        settings: Settings,
        *,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        limit: int = 1 << 20,
    ) -> None:
        self.settings = settings
        self.limit = limit
        """Largest answer read, in bytes; a longer one is an error (and the request retried)."""
        host, target = _client.target(settings.url)
        fixed = {
            "Host": host,
            "User-Agent": _USER_AGENT,
            "Accept": "*/*",
            **dict(settings.headers),
            **(headers or {}),
        }
        fixed["Content-Type"] = content_type
        if settings.gzip:
            fixed["Content-Encoding"] = "gzip"
        if settings.authorization is not None:
            fixed["Authorization"] = settings.authorization
        lines = [f"POST {target} HTTP/1.1", *(f"{k}: {v}" for k, v in fixed.items())]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1", "replace")
        self._idle: list[_client.Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: ssl.SSLContext | None = None
        self._secrets = _Secrets(settings.secret_headers) if settings.secret_headers else None

    def _tls(self) -> ssl.SSLContext | None:
        if not self.settings.url.startswith("https:"):
            return None
        if self._context is None:
            option = self.settings.ssl
            if isinstance(option, ssl.SSLContext):
                self._context = option
            else:
                self._context = ssl.create_default_context()
                if not option:
                    self._context.check_hostname = False
                    self._context.verify_mode = ssl.CERT_NONE
        return self._context

    async def post(self, body: bytes) -> Reply:
        """Send ``body``; return the answer, whatever its status.

        Raises ``OSError`` (``_client.ProtocolError`` among them) or ``TimeoutError`` when no
        answer came: the whole request is then to be retried.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._idle, self._loop = [], loop  # connections of a loop since closed are dropped
        head = self._head
        if self._secrets is not None:
            head += self._secrets.lines()
        if self.settings.gzip:
            if len(body) > _GZIP_INLINE:
                body = await loop.run_in_executor(None, gzip, body)
            else:
                body = gzip(body)
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        async with asyncio.timeout(self.settings.timeout):
            while True:
                connection = self._idle.pop() if self._idle else None
                reused = connection is not None
                if connection is None:
                    connection = await _client.Connection.open(self.settings.url, self._tls())
                try:
                    status, headers, data, keep = await _client.exchange(
                        connection, head, body, limit=self.limit
                    )
                except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as e:
                    connection.close()
                    if reused:
                        continue  # closed while idle (keep-alive timeout): once more, afresh
                    if isinstance(e, asyncio.IncompleteReadError):
                        raise ConnectionResetError(
                            f"{self.settings.url} closed the connection before its whole answer"
                        ) from e
                    raise
                except BaseException:
                    connection.close()
                    raise
                if keep and len(self._idle) < _client.IDLE:
                    self._idle.append(connection)
                else:
                    connection.close()
                return Reply(status, data, retry_after(headers.get("retry-after")))

    async def close(self) -> None:
        """Close the idle connections, if this loop made them (those of a closed loop are
        dropped)."""
        idle, self._idle = self._idle, []
        if self._loop is not asyncio.get_running_loop():
            return
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError, ssl.SSLError):
                await connection.writer.wait_closed()


class _Secrets:
    """Header lines whose values are files' contents, read again when a file changes.

    A ``stat`` per file and request tells whether it changed (inode, size, time): Kubernetes
    replaces a mounted secret by swapping a symlink, and rotates projected tokens in place. A
    file that cannot be read keeps its last value, with a warning; one never read is an
    ``OSError``, so the request is retried later."""

    __slots__ = ("_files", "_lines", "_stamps", "_values")

    def __init__(self, files: tuple[tuple[str, Path, str], ...]) -> None:
        self._files = files
        self._stamps: list[tuple[int, int, int] | None] = [None] * len(files)
        self._values: list[str | None] = [None] * len(files)
        self._lines = b""

    def lines(self) -> bytes:
        changed = False
        for n, (name, path, prefix) in enumerate(self._files):
            try:
                st = path.stat()
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                if stamp == self._stamps[n]:
                    continue
                text = path.read_text().strip()
            except OSError as exc:
                if self._values[n] is None:
                    raise OSError(f"cannot read {path} for the {name} header: {exc}") from exc
                log.warning(
                    "cannot read %s for the %s header (%s); using its last value", path, name, exc
                )
                continue
            if any(c in text for c in "\r\n"):
                log.warning("%s holds more than one line; only the first is sent as %s", path, name)
                text = text.splitlines()[0]
            self._stamps[n], self._values[n] = stamp, prefix + text
            changed = True
        if changed:
            self._lines = b"".join(
                f"{name}: {value}\r\n".encode("latin-1", "replace")
                for (name, _, _), value in zip(self._files, self._values, strict=True)
            )
        return self._lines


def gzip(body: bytes) -> bytes:
    """``body`` as a gzip member, level 1."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date).

    ``None`` when absent or unreadable; never negative; at most ``MAX_RETRY_AFTER``.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def count(batch: records.Batch) -> int:
    """Events in ``batch``, counted (``Batch.events`` is only as right as its maker)."""
    return sum(group.count() for group in batch.groups)


def short(text: str, limit: int = 120) -> str:
    """The first line of ``text``, at most ``limit`` characters: fit for a log line or reason."""
    line = text.strip().split("\n", 1)[0].strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def refuse(
    sink: str, batch: records.Batch, reason: str, detail: str, *, events: int | None = None
) -> records.Outcome:
    """``events`` of ``batch`` (default: all) refused for good, for ``reason``; the shipper logs
    ``detail`` with the batch's first event as a sample."""
    events = count(batch) if events is None else events
    first = records.sample(batch.groups[0]) if batch.groups else ""
    return records.Outcome(rejected=events, reasons={reason: events}, detail=detail, sample=first)


def encode(build: Callable[[records.Batch], bytes], batch: records.Batch) -> bytes:
    """``build(batch)``, or, if the batch holds what JSON cannot carry, ``build`` of it cleaned.

    Undecodable bytes arrive as lone surrogates, which orjson refuses; so do integers past 64
    bits. Cleaning costs a copy of the batch, so it is only done for the batches that need it.
    """
    try:
        return build(batch)
    except orjson.JSONEncodeError:
        return build(cleaned(batch))


def cleaned(batch: records.Batch) -> records.Batch:
    """A copy of ``batch`` whose strings have U+FFFD for lone surrogates, and whose values all
    fit JSON (too-large integers and unknown objects become strings)."""
    groups = [
        records.Group(
            records.clean(group.source),
            group.key,
            [
                (line, records.clean(message), _clean_fields(fields), time_ns)
                for line, message, fields, time_ns in group.events
            ],
            group.time_ns,
        )
        for group in batch.groups
    ]
    labels = {records.clean(k): records.clean(v) for k, v in batch.labels.items()}
    return records.Batch(groups, labels, batch.events, batch.size, batch.seq)


def _clean_fields(fields: dict[str, Any] | None) -> dict[str, Any] | None:
    if fields is None:
        return None
    return {records.clean(str(k)): _clean_value(v) for k, v in fields.items()}


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return records.clean(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dict):
        return {records.clean(str(k)): _clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_value(v) for v in value]
    return records.clean(str(value))


@lru_cache(maxsize=256)
def second(seconds: int) -> bytes:
    """``seconds`` since the epoch as RFC 3339 UTC without fraction or zone, as bytes; hot
    loops keep the last one and append ``.%09dZ`` themselves."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode()


def rfc3339(time_ns: int) -> str:
    """``time_ns`` as RFC 3339 UTC with nanoseconds: ``2026-08-21T10:11:12.123456789Z``."""
    seconds, ns = divmod(time_ns, 1_000_000_000)
    return f"{second(seconds).decode()}.{ns:09d}Z"
