"""TLS termination for clients outside the mesh: certificates from files, chosen by SNI.

One context per certificate (a mounted Secret each), the first the default; the SNI callback
moves a handshake to the context whose certificate names the host (exactly, or by a
one-label wildcard). The files are checked every second and a changed pair is loaded into its
live context: new handshakes get it, open connections keep theirs. A pair caught half way
through a rotation (new certificate, old key) is retried on the next tick.
"""

from __future__ import annotations

import logging
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from sidecarkit import errors, watching
from sidecarkit.agents.proxy import tlsconfig
from sidecarkit.security import authority, contexts

__all__ = ["Terminator"]

log = logging.getLogger("sidecarkit.agent.proxy")


class Terminator:
    """TLS termination with certificates from files, chosen by SNI, reloaded on change."""

    def __init__(self, settings: tlsconfig.Termination) -> None:
        self.settings = settings
        self.contexts: list[ssl.SSLContext] = []
        self.names: list[tuple[str, ssl.SSLContext]] = []
        self.watches: list[watching.FileWatch] = []
        for _ in settings.certificates:
            context = contexts.server_context(alpn=settings.alpn)
            if settings.min_version == "1.3":
                context.minimum_version = ssl.TLSVersion.TLSv1_3
            self.contexts.append(context)
        self.leaves: list[Any] = [None] * len(self.contexts)
        self.contexts[0].sni_callback = self._pick
        _quiet_bad_server_names()
        for cert in settings.certificates:
            self.watches.append(watching.FileWatch((Path(cert.cert), Path(cert.key))))
        for index in range(len(self.contexts)):
            if not self._reload(index):
                cert = settings.certificates[index]
                raise errors.ConfigError(
                    f"inbound.tls.certificates[{index}]: cannot load {cert.cert} and "
                    f"{cert.key} (see the log line above)"
                )

    @property
    def context(self) -> ssl.SSLContext:
        return self.contexts[0]

    def _pick(self, ssl_object: Any, server_name: str | None, _: ssl.SSLContext) -> None:
        if not server_name:
            return
        name = server_name.lower().rstrip(".")
        wildcard = "*." + name.partition(".")[2]
        for pattern, context in self.names:
            if pattern in (name, wildcard):
                if context is not self.contexts[0]:
                    ssl_object.context = context
                return

    def tick(self) -> None:
        for index in range(len(self.contexts)):
            self._reload(index)

    def _reload(self, index: int) -> bool:
        cert = self.settings.certificates[index]
        try:
            contents = self.watches[index].changed()
        except OSError as exc:
            log.error("TLS files %s unreadable (%s); keeping the ones in use", cert.cert, exc)
            return self.leaves[index] is not None
        if contents is None:
            return True
        try:
            leaf = contexts.load_pair(self.contexts[index], authority.Pair(*contents))
        except ssl.SSLError as exc:
            log.warning("TLS certificate %s not (yet) loadable, keeping the one in use: %s",
                        cert.cert, contexts.why(exc))  # fmt: skip
            return self.leaves[index] is not None
        if index:  # the SNI choice moves the connection to this context: share the callback
            self.contexts[index].sni_callback = self._pick
        self.watches[index].accept(contents)
        self.leaves[index] = leaf
        self.names = [
            (name.lower(), self.contexts[i])
            for i, found in enumerate(self.leaves)
            if found is not None
            for name in _dns_names(found)
        ]
        log.info("TLS certificate %s loaded, valid until %s", cert.cert,
                 leaf.not_valid_after_utc.isoformat(timespec="seconds"))  # fmt: skip
        return True


def _quiet_bad_server_names() -> None:
    """A ClientHello whose server name is not ASCII fails in the ssl module before our SNI
    callback runs, and CPython prints that as an "Exception ignored" traceback. The handshake
    is refused either way (an alert); this turns the traceback into one log line a second, so
    that a client sending such names cannot flood the log."""
    default = sys.unraisablehook
    last = [0.0, 0]

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, UnicodeDecodeError) and isinstance(
            unraisable.object, bytes
        ):
            now = time.monotonic()
            last[1] += 1
            if now >= last[0]:
                log.warning("TLS: refused %d ClientHello(s) with a server name that is not "
                            "ASCII", last[1])  # fmt: skip
                last[0], last[1] = now + 1.0, 0
            return
        default(unraisable)

    if getattr(sys.unraisablehook, "__name__", "") != "hook":
        sys.unraisablehook = hook


def _dns_names(cert: Any) -> list[str]:
    from cryptography import x509  # noqa: PLC0415

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)]
