"""The CA's HTTPS endpoint: a CSR and a token in, a short-lived workload certificate out.

==========================  ====================================================================
``POST /v1/certificates``   ``Authorization: Bearer <token>``, JSON ``{"csr": "<PEM>"}``;
                            200 ``{"certificate_chain", "trust_bundle", "spiffe_id",
                            "expires"}``; 401 the token proves nothing; 400/403 a CSR that
                            cannot be signed or asks for another identity; 413 over 64 KiB
``GET /v1/bundle``          the trust bundle (root certificate, PEM): public
``GET /healthz``            200 while serving
==========================  ====================================================================

The identity in a certificate is always the one the token proved (``authority`` refuses a CSR
asking for another). Every issuance and refusal is logged with the caller's address, the
identity and the reason; a token or a key never is.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from cryptography import x509

from sidecarkit.security import authority as ca
from sidecarkit.security import proving, spiffe

__all__ = ["CA_KEY", "MAX_BODY", "Ca", "app", "server_context"]

log = logging.getLogger("sidecarkit.ca")

MAX_BODY = 64 << 10
"""A CSR is under 1 KiB; anything much larger is not one."""


@dataclass(slots=True)
class Ca:
    """What the endpoint serves with."""

    authority: ca.Authority
    ttl: float
    """Seconds a workload certificate is valid; 24 h by default, as Istio and Linkerd."""
    tokens: proving.TokensFile | None = None
    reviewer: proving.TokenReviewer | None = None
    issued: int = 0
    refused: int = 0
    problem: str | None = None
    """The last reason the tokens file could not be re-read, logged once."""

    async def prove(self, token: str) -> spiffe.Identity:
        if self.tokens is not None:
            grants, problem = self.tokens.current()
            if problem is not None and problem != self.problem:
                log.warning("tokens file: %s", problem)
            self.problem = problem
            try:
                return grants.prove(token)
            except proving.Refusal:
                if self.reviewer is None:
                    raise
        if self.reviewer is not None:
            return await self.reviewer.prove(token)
        raise proving.Refusal("this CA accepts no tokens (no --tokens, no --token-review)")


CA_KEY = web.AppKey("ca", Ca)


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _certificates(request: web.Request) -> web.Response:
    state: Ca = request.app[CA_KEY]
    peer = request.remote or "unknown"
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        state.refused += 1
        log.warning("refused %s: no 'Authorization: Bearer <token>' header", peer)
        return _answer(401, "send the workload's token as 'Authorization: Bearer <token>'")
    if request.content_length is not None and request.content_length > MAX_BODY:
        state.refused += 1
        return _answer(413, f"the body is over {MAX_BODY} bytes; send one CSR")
    try:
        who = await state.prove(token.strip())
    except proving.Refusal as exc:
        state.refused += 1
        log.warning("refused %s: %s", peer, exc)
        return _answer(401, str(exc))
    try:  # orjson: bounded nesting (the stdlib parser recurses into a RecursionError)
        body: Any = orjson.loads(await request.read())
    except ValueError:
        body = None
    csr = body.get("csr") if isinstance(body, dict) else None
    if not isinstance(csr, str):
        state.refused += 1
        log.warning("refused %s (%s): the body is not JSON with a 'csr' string", peer, who)
        return _answer(400, 'send JSON {"csr": "<PEM certificate signing request>"}')
    try:
        chain = ca.issue_workload(state.authority, csr.encode(), who, ttl=state.ttl)
    except ca.CsrError as exc:
        state.refused += 1
        log.warning("refused %s (%s): %s", peer, who, exc)
        return _answer(exc.status, str(exc))
    leaf = x509.load_pem_x509_certificate(chain)
    expires = leaf.not_valid_after_utc
    state.issued += 1
    log.info(
        "issued %s to %s: serial %x, valid until %s",
        who, peer, leaf.serial_number, expires.isoformat(timespec="seconds"),
    )  # fmt: skip
    return web.json_response({
        "certificate_chain": chain.decode(),
        "trust_bundle": state.authority.bundle.decode(),
        "spiffe_id": who.uri,
        "expires": expires.astimezone(datetime.UTC).isoformat(timespec="seconds"),
    })  # fmt: skip


async def _bundle(request: web.Request) -> web.Response:
    state: Ca = request.app[CA_KEY]
    return web.Response(body=state.authority.bundle, content_type="application/x-pem-file")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    state: Ca = request.app[CA_KEY]
    expiry = state.authority.intermediate.not_valid_after_utc.timestamp()
    text = (
        "# HELP sidecarkit_ca_certificates_issued_total Workload certificates issued.\n"
        "# TYPE sidecarkit_ca_certificates_issued_total counter\n"
        f"sidecarkit_ca_certificates_issued_total {state.issued}\n"
        "# HELP sidecarkit_ca_requests_refused_total Certificate requests refused.\n"
        "# TYPE sidecarkit_ca_requests_refused_total counter\n"
        f"sidecarkit_ca_requests_refused_total {state.refused}\n"
        "# HELP sidecarkit_ca_intermediate_expiry_timestamp_seconds When the intermediate "
        "expires.\n"
        "# TYPE sidecarkit_ca_intermediate_expiry_timestamp_seconds gauge\n"
        f"sidecarkit_ca_intermediate_expiry_timestamp_seconds {expiry:.0f}\n"
    )
    return web.Response(text=text, content_type="text/plain")


def app(state: Ca) -> web.Application:
    application = web.Application(client_max_size=MAX_BODY)
    application[CA_KEY] = state
    application.router.add_post("/v1/certificates", _certificates)
    application.router.add_get("/v1/bundle", _bundle)
    application.router.add_get("/healthz", _healthz)
    application.router.add_get("/metrics", _metrics)
    return application


def server_context(pair: ca.Pair) -> ssl.SSLContext:
    """TLS 1.2+ for the CA's endpoint, loaded from memory (the serving key never hits disk)."""
    from sidecarkit.security import contexts  # noqa: PLC0415

    context = contexts.server_context(alpn=("http/1.1",))
    contexts.load_pair(context, pair)
    return context
