"""TLS on the proxy's connections: its workload certificate, mTLS both ways, termination.

``Mesh`` holds this workload's identity. With ``identity.ca`` it makes a key, gets a
certificate from ``sidecarkit ca serve`` before any listener opens, and renews it at half-life
in a worker thread; with ``identity.cert``/``key`` it reloads the files when they change. A new
certificate is loaded into the live contexts: handshakes from then on use it, connections
already up keep theirs, so nothing is dropped. Its two contexts are the inbound server side
(client certificate required, chained to the trust bundle) and the outbound client side.

After a handshake ``Mesh.peer`` checks what chain verification cannot: exactly one SPIFFE ID,
in our trust domain. The verified identity goes to the app in ``x-forwarded-client-cert``
(Envoy's and Istio's header: ``By=<us>;Hash=<sha256 of the peer certificate>;URI=<peer>``),
which the proxy removes from every inbound request first, so an app never sees one a client
wrote.

``Acceptor`` serves an mTLS port: it peeks at the first byte of each connection (a TLS
handshake starts with 0x16) and hands the socket to the loop with TLS, or in ``permissive``
mode without; in ``strict`` mode a plaintext client gets a 400 naming the fix and is closed.

TLS termination for clients outside the mesh is ``terminating``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecarkit import errors, watching
from sidecarkit.agents.proxy import telemetry, tlsconfig
from sidecarkit.security import authority, contexts, workload

__all__ = ["Acceptor", "Mesh"]

log = logging.getLogger("sidecarkit.agent.proxy")

START_WAIT = 30.0
"""Seconds the first certificate is tried for before the proxy gives up (the CA may be
starting at the same moment); a pod without one cannot serve mTLS."""
RETRY_MAX = 30.0
"""Longest pause between renewal attempts after a failure."""
_TLS_RECORD_HANDSHAKE = 0x16


class Mesh:
    """This workload's identity and the mTLS contexts built on it."""

    def __init__(self, settings: tlsconfig.Identity, metrics: telemetry.Registry) -> None:
        self.settings = settings
        self.metrics = metrics
        self.trust_domain = settings.trust_domain
        self.bundle_watch = watching.FileWatch((Path(settings.trust_bundle),))
        try:
            (bundle,) = self.bundle_watch.changed() or (b"",)
            self.server, self.client = self._contexts(bundle)
        except (OSError, ssl.SSLError) as exc:
            raise errors.ConfigError(
                f"identity.trust_bundle {settings.trust_bundle}: cannot use it ({exc}); give "
                "the root.crt of `sidecarkit ca init`"
            ) from exc
        self.bundle_watch.accept((bundle,))
        self.bundle = bundle
        self.issued: workload.Issued | None = None
        self.by = b""
        """Our SPIFFE ID, for the ``By=`` of the header."""
        self.watch = (
            watching.FileWatch((Path(settings.cert), Path(settings.key)))
            if settings.cert and settings.key
            else None
        )
        self.renewing = False
        self.due = 0.0
        self.failures = 0
        self.refused: dict[str, int] = {}
        self.quiet_until = 0.0
        self.quieted = 0

    @staticmethod
    def _contexts(bundle: bytes) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        server = contexts.server_context()
        server.verify_mode = ssl.CERT_REQUIRED
        contexts.load_bundle(server, bundle)
        return server, contexts.client_context(bundle)

    def _reload_bundle(self) -> None:
        """A changed trust bundle (a root being added or retired) makes new contexts: roots
        cannot be taken out of a context. New handshakes use them; open connections go on."""
        try:
            contents = self.bundle_watch.changed()
        except OSError as exc:
            log.error("trust bundle unreadable (%s); keeping the one in use", exc.strerror)
            return
        if contents is None:
            return
        try:
            server, client = self._contexts(contents[0])
            if self.issued is not None:
                for context in (server, client):
                    contexts.load_pair(context, self.issued.pair)
        except ssl.SSLError as exc:
            log.warning("trust bundle %s not usable, keeping the one in use: %s",
                        self.settings.trust_bundle, _short(exc))  # fmt: skip
            self.bundle_watch.accept(contents)
            return
        self.bundle_watch.accept(contents)
        self.server, self.client, self.bundle = server, client, contents[0]
        log.info("trust bundle reloaded from %s", self.settings.trust_bundle)

    # -- getting and renewing the certificate --------------------------------------------
    def _fetch(self) -> workload.Issued:
        settings = self.settings
        assert settings.ca is not None
        assert settings.token is not None
        return workload.fetch(settings.ca, Path(settings.token), bundle=self.bundle)

    def _use(self, issued: workload.Issued) -> None:
        server, client = self.server, self.client
        for context in (server, client):
            contexts.load_pair(context, issued.pair)
        self.issued = issued
        self.by = issued.identity.uri.encode() if issued.identity else b""
        self.due = issued.renew_at
        self.failures = 0
        log.info(
            "identity %s: certificate valid until %s, renewal at %s",
            issued.identity, _stamp(issued.not_after), _stamp(issued.renew_at),
        )  # fmt: skip

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first certificate, before any listener opens; ConfigError when none comes."""
        if self.watch is not None:
            if not self._reload_files():
                raise errors.ConfigError(
                    f"identity.cert {self.settings.cert} and key {self.settings.key}: cannot "
                    "load them (see the log line above)"
                )
            return
        deadline = time.monotonic() + START_WAIT
        while True:
            try:
                issued = await loop.run_in_executor(None, self._fetch)
                self._use(issued)
                return
            except (workload.FetchError, ssl.SSLError) as exc:
                if time.monotonic() > deadline:
                    raise errors.ConfigError(f"identity: no certificate: {exc}") from None
                log.warning("identity: no certificate yet: %s; trying again", _short(exc))
                await asyncio.sleep(1.0)

    def tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Once a second: reload changed files, or renew when the half-life passed."""
        self.flush(now=time.monotonic())
        self._reload_bundle()
        if self.watch is not None:
            self._reload_files()
            return
        if self.renewing or time.time() < self.due:
            return
        self.renewing = True
        future = loop.run_in_executor(None, self._fetch)
        future.add_done_callback(self._renewed)

    def _renewed(self, future: asyncio.Future[workload.Issued]) -> None:
        self.renewing = False
        try:
            self._use(future.result())
        except Exception as exc:  # any failure: keep serving, try again later
            self.failures += 1
            pause = min(RETRY_MAX, 2.0 ** min(self.failures, 5))
            self.due = time.time() + pause
            left = (self.issued.not_after - time.time()) if self.issued else 0.0
            log.warning(
                "identity: renewal failed (%s); trying again in %.0fs, the certificate in use "
                "has %.0fs left", _short(exc), pause, left,
            )  # fmt: skip

    def _reload_files(self) -> bool:
        assert self.watch is not None
        try:
            contents = self.watch.changed()
        except OSError as exc:
            log.error("identity files unreadable (%s); keeping the ones in use", exc.strerror)
            return self.issued is not None
        if contents is None:
            return True
        try:
            issued = workload.from_pair(authority.Pair(contents[0], contents[1]))
            if issued.identity is None or issued.identity.trust_domain != self.trust_domain:
                raise ssl.SSLError(
                    f"the certificate has no SPIFFE ID in trust domain {self.trust_domain}"
                )
            self._use(issued)
        except ssl.SSLError as exc:
            # most often a rotation caught half way (new certificate, old key): next tick
            log.warning(
                "identity certificate not (yet) loadable, keeping the one in use: %s", _short(exc)
            )
            return self.issued is not None
        self.watch.accept(contents)
        return True

    def gauges(self) -> None:
        if self.issued is not None:
            self.metrics.set_gauge(
                "identity_cert_expiration_timestamp_seconds",
                "When this workload's certificate expires (Unix time).",
                {"identity": str(self.issued.identity)},
                self.issued.not_after,
            )
        for reason, count in self.refused.items():
            self.metrics.set_gauge(
                "mtls_refused_connections",
                "Inbound connections refused by mTLS (total), by reason.",
                {"reason": reason},
                count,
            )

    # -- peers ---------------------------------------------------------------------------
    def peer(self, transport: Any, expected: str | None = None) -> bytes | None:
        """The ``x-forwarded-client-cert`` value for a verified peer on ``transport``; b""
        for a plaintext connection; None (logged, counted) when the peer must be refused."""
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return b""
        who, der = contexts.peer_identity(ssl_object, self.trust_domain)
        if who is None or (expected is not None and who.uri != expected):
            reason = der.decode() if who is None else f"identity {who.uri}, not {expected}"
            self._refuse("identity" if who is None else "unexpected-peer", reason, transport)
            return None
        return b"By=%s;Hash=%s;URI=%s" % (
            self.by,
            hashlib.sha256(der).hexdigest().encode(),
            who.uri.encode(),
        )

    def _refuse(self, kind: str, reason: str, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        self.refuse(kind, f"refused {peer[0] if peer else 'a peer'}: {reason}")

    def refuse(self, kind: str, message: str) -> None:
        """Count a refused connection and log it, at most one line a second: a client
        hammering the port must not flood the log (the counter has them all)."""
        self.refused[kind] = self.refused.get(kind, 0) + 1
        now = time.monotonic()
        if now < self.quiet_until:
            self.quieted += 1
            return
        more = f" ({self.quieted} more refusals not logged)" if self.quieted else ""
        log.warning("mTLS: %s%s", message, more)
        self.quiet_until = now + 1.0
        self.quieted = 0

    def flush(self, *, now: float | None = None) -> None:
        """Log the refusals held back once their quiet second is over (at once when ``now`` is
        None): a flood that stops is still summed up in the log."""
        if self.quieted and (now is None or now >= self.quiet_until):
            log.warning("mTLS: %d more refusals not logged", self.quieted)
            self.quieted = 0

    def outbound(
        self, expected: str | None
    ) -> tuple[Callable[[], ssl.SSLContext], Callable[[Any], bool]]:
        """The client context in use (it changes with the trust bundle), and the check of the
        endpoint's identity after the handshake."""

        def context() -> ssl.SSLContext:
            return self.client

        def check(transport: Any) -> bool:
            return bool(self.peer(transport, expected))

        return context, check


class Acceptor:
    """An mTLS port: TLS or (permissive) plaintext, told apart by the first byte."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.Protocol],
        *,
        mesh: Mesh,
        mode: str,
        handshake_timeout: float,
        http: bool = True,
    ) -> None:
        self.loop = loop
        self.http = http
        """An HTTP port answers a refused plaintext client with a 400; an L4 one just closes."""
        self.factory = factory
        self.mesh = mesh
        self.mode = mode
        self.timeout = handshake_timeout or 10.0
        self.sock: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None
        self.pending: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4096)
        sock.setblocking(False)
        self.sock = sock
        self.task = self.loop.create_task(self._accept(sock), name=f"mtls accept {host}:{port}")

    def close(self) -> None:
        """Stop accepting (what ``asyncio.Server.close`` does for the drain)."""
        if self.task is not None:
            self.task.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = await self.loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and friends: the listener stays
                log.warning("mTLS port: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = self.loop.create_task(self._classify(conn), name="mtls classify")
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _classify(self, conn: socket.socket) -> None:
        loop = self.loop
        readable: asyncio.Future[None] = loop.create_future()
        fd = conn.fileno()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await asyncio.wait_for(readable, self.timeout)
            first = conn.recv(1, socket.MSG_PEEK)
        except (TimeoutError, OSError):
            conn.close()
            return
        finally:
            loop.remove_reader(fd)
        if not first:
            conn.close()
            return
        if first[0] != _TLS_RECORD_HANDSHAKE:
            if self.mode != "permissive":
                self._plaintext_refused(conn)
                return
            try:
                await loop.connect_accepted_socket(self.factory, conn)
            except OSError:  # gone before it was handed over
                conn.close()
            return
        try:
            await loop.connect_accepted_socket(
                self.factory, conn, ssl=self.mesh.server, ssl_handshake_timeout=self.timeout
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            self.mesh.refuse("handshake", f"handshake refused: {_short(exc)}")
            with contextlib.suppress(OSError):
                conn.close()

    def _plaintext_refused(self, conn: socket.socket) -> None:
        try:
            peer = str(conn.getpeername()[0])
        except OSError:
            peer = "a peer"
        self.mesh.refuse("plaintext", f"refused plaintext from {peer}")
        body = b"this port accepts mTLS only (strict); call it through a sidecarkit proxy\n"
        with contextlib.suppress(OSError):
            if self.http:  # on an L4 port no answer is one the client could read
                conn.send(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
                )
        conn.close()


def _stamp(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


_short = contexts.why
