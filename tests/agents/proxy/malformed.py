"""A generator of malformed and ambiguous HTTP/1.1 requests: request smuggling shapes.

Each case is a request that RFC 9112 says a server must refuse (400) or whose framing two
servers could read differently: Content-Length with Transfer-Encoding, duplicate or malformed
lengths, transfer codings other than chunked, obs-fold, whitespace and control characters where
the grammar allows none, missing or repeated Host, bad request lines, bad chunk sizes. (Extra
spaces between the parts of a request line are not here: RFC 9112 section 3 lets a server split
on whitespace, and the proxy writes the line anew with single spaces.) A seeded
generator varies the header names' case, the other headers around them and the bodies, so the
same 10,000 cases come out every run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

__all__ = ["cases"]

_FILLER = ["Accept: */*", "User-Agent: t/1", "X-A: b", "Cookie: a=b", "Accept-Language: en"]


def _case(rng: random.Random, name: str) -> str:
    return rng.choice([name, name.lower(), name.upper(), name.title()])


def _head(
    rng: random.Random, fields: list[str], *, start: str = "POST /echo HTTP/1.1", host: bool = True
) -> bytes:
    lines = [start]
    extra = rng.sample(_FILLER, rng.randint(0, 3))
    if host:
        extra.append("Host: test")
    fields = fields + extra
    rng.shuffle(fields)
    return ("\r\n".join([*lines, *fields]) + "\r\n\r\n").encode("latin-1")


def _cl_and_te(rng: random.Random) -> bytes:
    te = rng.choice(["chunked", " chunked", "chunked ", "Chunked", "CHUNKED"])
    fields = [
        f"{_case(rng, 'Content-Length')}: {rng.randint(0, 50)}",
        f"{_case(rng, 'Transfer-Encoding')}:{te}",
    ]
    return _head(rng, fields) + b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def _two_lengths(rng: random.Random) -> bytes:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    name = _case(rng, "Content-Length")
    return _head(rng, [f"{name}: {a}", f"{name}: {b}"]) + b"x" * max(a, b)


def _bad_length(rng: random.Random) -> bytes:
    value = rng.choice(
        [
            "+5",
            "-1",
            "5 5",
            "0x5",
            "5,5",
            "5, 5",
            "",
            "5.0",
            "1e3",
            "5\x0b",
            "99999999999999999999999",
        ]
    )
    return _head(rng, [f"{_case(rng, 'Content-Length')}: {value}"]) + b"hello"


def _bad_coding(rng: random.Random) -> bytes:
    value = rng.choice(
        [
            "gzip",
            "chunked, gzip",
            "xchunked",
            "chunked\x0b",
            "identity",
            "gzip, chunked",
            "chunked, chunked",
            "chunkedx",
        ]
    )
    return _head(rng, [f"{_case(rng, 'Transfer-Encoding')}: {value}"]) + b"0\r\n\r\n"


def _two_codings(rng: random.Random) -> bytes:
    name = _case(rng, "Transfer-Encoding")
    return (
        _head(rng, [f"{name}: chunked", f"{name}: {rng.choice(['chunked', 'gzip', 'identity'])}"])
        + b"0\r\n\r\n"
    )


def _coding_in_http10(rng: random.Random) -> bytes:
    return (
        _head(rng, [f"{_case(rng, 'Transfer-Encoding')}: chunked"], start="POST /echo HTTP/1.0")
        + b"0\r\n\r\n"
    )


def _obs_fold(rng: random.Random) -> bytes:
    fold = rng.choice([" ", "\t", "  "])
    return _head(rng, [f"X-Folded: a\r\n{fold}b"])


def _bad_name(rng: random.Random) -> bytes:
    field = rng.choice(
        [
            "Content-Length : 5",
            "Host : x",
            "X\tY: z",
            ": empty",
            "X Y: z",
            "X(Y): z",
            "X\x00Y: z",
            "Tran\x7fsfer-Encoding: chunked",
        ]
    )
    return _head(rng, [field])


def _bad_value(rng: random.Random) -> bytes:
    value = rng.choice(["a\x00b", "a\rb", "a\x01b", "a\x7fb"])
    return _head(rng, [f"X-Bad: {value}"])


def _bare_lf(rng: random.Random) -> bytes:
    return _head(rng, ["X-A: b"]).replace(b"\r\n", b"\n", rng.randint(1, 3))


def _request_line(rng: random.Random) -> bytes:
    start = rng.choice([
        "GET / HTTP/1.1 x", "GET /\x00 HTTP/1.1", "G\x01T / HTTP/1.1", "GET / HTTP/1.2",
        "GET / HTTP/1", "GET / HTTPS/1.1", "GET / http/1.1", " GET / HTTP/1.1", "GET /a b HTTP/1.1",
        "GET\t/ HTTP/1.1", "get / HTTP/1.1", "GET / HTTP/1.1\x00",
    ])  # fmt: skip
    return _head(rng, [], start=start)


def _host(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return _head(rng, [], start="GET /echo HTTP/1.1", host=False)
    return _head(
        rng, ["Host: a", f"{_case(rng, 'Host')}: b"], start="GET /echo HTTP/1.1", host=False
    )


def _bad_chunk(rng: random.Random) -> bytes:
    size = rng.choice(["zz", "-1", "1 1", "fffffffffffffffff", "0x5", "", " 5", "5 ", "\x005"])
    body = rng.choice(
        [f"{size}\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX\r\n0\r\n\r\n", "5\nhello\n0\n\n"]
    )
    return _head(rng, [f"{_case(rng, 'Transfer-Encoding')}: chunked"]) + body.encode("latin-1")


_KINDS: list[Callable[[random.Random], bytes]] = [
    _cl_and_te, _two_lengths, _bad_length, _bad_coding, _two_codings, _coding_in_http10, _obs_fold,
    _bad_name, _bad_value, _bare_lf, _request_line, _host, _bad_chunk,
]  # fmt: skip


def cases(count: int, *, seed: int = 12) -> Iterator[tuple[str, bytes]]:
    """``count`` malformed requests, as (kind, bytes), the kinds in turn."""
    rng = random.Random(seed)
    for i in range(count):
        kind = _KINDS[i % len(_KINDS)]
        yield kind.__name__.strip("_"), kind(rng)
