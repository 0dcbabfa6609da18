"""Which upstream a request goes to, in HTTP-proxy mode: by the authority it names.

An app that uses the proxy as its HTTP proxy (``HTTP_PROXY=http://127.0.0.1:15080``) sends
absolute-form targets, ``GET http://payments.shop:8080/orders HTTP/1.1``; some clients send
origin-form with a ``Host`` header instead. The authority (from the target, else ``Host``;
RFC 9112 3.2.2 says the target's wins) is looked up first as ``host:port``, then as ``host``,
among the names each upstream answers to. The target sent upstream is the origin form
(``/orders``), as a server expects it.

No I/O here, and nothing per request but a split and two dictionary lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

__all__ = ["Router"]

T = TypeVar("T")


class Router(Generic[T]):
    def __init__(self, names: Mapping[str, T]) -> None:
        self.table = {name.lower().encode(): value for name, value in names.items()}

    def route(self, target: bytes, host: bytes | None) -> tuple[T | None, bytes, bytes]:
        """(the upstream or None, the origin-form target, the authority looked up)."""
        authority = host or b""
        if target[:7].lower() == b"http://":
            rest = target[7:]
            slash = rest.find(b"/")
            query = rest.find(b"?")
            cut = min(i for i in (slash, query, len(rest)) if i >= 0)
            authority = rest[:cut]
            target = rest[cut:] or b"/"
            if target[:1] == b"?":
                target = b"/" + target
        authority = authority.rpartition(b"@")[2].lower()
        found = self.table.get(authority)
        if found is None:
            name, sep, port = authority.rpartition(b":")
            if (sep and port.isdigit() and not name.endswith(b"]")) or (
                sep and name.endswith(b"]")
            ):
                found = self.table.get(name)
        return found, target, authority
