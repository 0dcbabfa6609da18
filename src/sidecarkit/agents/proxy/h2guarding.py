"""The policy's stages on an HTTP/2 listener: ``guarding.Guard``, per stream.

One engine for both HTTPs: the stages, their order, the counters and the log lines are
``guarding``'s. A stream is decided from its ``:method``, its ``:path`` (ambiguous ones refused
with 400 as on HTTP/1.1), its fields, the connection's verified peer and the client's address.
What differs is the wire:

- a refusal is the stream's answer (``Stream.answer``): to a gRPC call a trailers-only
  response, HTTP 200 with the gRPC status of the HTTP one (401 UNAUTHENTICATED,
  403 PERMISSION_DENIED, 429 RESOURCE_EXHAUSTED, 400 INTERNAL) and the same fields
  (``www-authenticate``, ``retry-after``, ``ratelimit-*``), as Envoy answers; to any other
  HTTP/2 request the HTTP status itself;
- the request going upstream is a field list: the credential and every field only the proxy
  may set are removed from it, the verified claims appended;
- a stream whose JWT names a key not fetched yet waits (``Stream.gate``) while the key set is
  fetched again, its request body held within the stream's flow-control window, then goes on
  or is refused; the other streams of the connection are not held up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sidecarkit.agents.proxy import guarding, h2heads

if TYPE_CHECKING:
    from sidecarkit.agents.proxy.h2serving import Downstream
    from sidecarkit.agents.proxy.h2streams import Stream

__all__ = ["StreamGuard"]


class StreamGuard(guarding.Guard):
    """One HTTP/2 listener's policy, its buckets and its counters."""

    def _forwarder(self) -> guarding.Forward:
        return _rewrite

    def check(self, down: Downstream, stream: Stream, headers: list[tuple[bytes, bytes]]) -> bool:
        """Run the stages on a new stream; True when it was answered here or waits for a key
        set (``keys_arrived`` lets it go on), False when it may be dispatched now."""
        if self.idle:
            return False
        if b"host" in self.wanted:  # rules and limits on Host see HTTP/2's :authority
            authority = next((v for n, v in headers if n == b":authority"), None)
            if authority is not None and not any(n == b"host" for n, _ in headers):
                headers = [*headers, (b"host", authority)]
        down.headers = headers  # what ``stop`` reads, as on an HTTP/1.1 connection
        return self.stop(down, stream) or stream.gate is not None  # type: ignore[arg-type]

    def _answer(self, down: Any, ex: Any, status: int, body: bytes, extra: bytes) -> None:
        ex.answer(status, body, h2heads.fields(extra))  # counted by the stream

    def _resume(self, down: Any, ex: Any, *, answered: bool) -> None:
        if not answered and not ex.done:
            ex.dispatch()


def _rewrite(
    stream: Any, raw: list[tuple[bytes, bytes, bytes]], strip: frozenset[bytes], add: bytes
) -> None:
    """Remove the fields in ``strip`` from the stream's request and append ``add`` (header
    lines). HTTP/2 field names are lower case (``h2`` refuses others)."""
    headers = stream.req.headers
    if any(key in strip for key, _, _ in raw):
        headers[:] = [(name, value) for name, value in headers if name not in strip]
    if add:
        headers.extend(h2heads.fields(add))
