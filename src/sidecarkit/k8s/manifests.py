"""Multi-document YAML streams, read and written so that GitOps diffs stay small.

The stream is cut into documents at the ``---`` and ``...`` marker lines (YAML forbids those
at column 0 inside any content, so the cut is exact), and each document is parsed on its own
with ruamel's round-trip loader. A document the caller does not change is written back as its
original text, byte for byte; a changed one is dumped by ruamel, which keeps its comments, key
order and quoting, with the indentation style detected from its own text.

Every document is parsed before anything is written, so malformed YAML produces an error with
``file:line:column`` and no partial output.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.representer import RoundTripRepresenter

from sidecarkit import errors
from sidecarkit.k8s import limits

__all__ = [
    "Document",
    "dump",
    "dump_objects",
    "iter_stream",
    "lines_of",
    "load_data",
    "load_stream",
    "parse",
    "split",
    "to_plain",
]

_MARKER: Final = re.compile(r"^(---|\.\.\.)(?=[ \t\r\n]|$)")
_CONTENT: Final = re.compile(r"^[ \t]*[^ \t\r\n#%]")
_KEY_LINE: Final = re.compile(r"^( *)[^ #-][^#]*:[ \t]*(#.*)?$")
_DASH_LINE: Final = re.compile(r"^( *)- ")
_ANY_LINE: Final = re.compile(r"^( *)\S")


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a stream: its exact source text and its round-trip data."""

    text: str
    data: Any
    line: int
    """0-based line of the file where ``text`` begins."""
    index: int
    """1-based position in the stream, as used in reports (``document 2``)."""


def split(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Cut a stream, given as lines with their endings, into (first line, text) chunks.

    One chunk per YAML document. Comments and directives before the first ``---`` belong to
    the document that follows (YAML does not make a document of them), a ``...`` ends the chunk
    it is in, and whitespace after a ``...`` stays with the chunk it ended. Lazy: a stream is
    never held whole, so a long one costs the memory of its largest document.
    """
    pending: tuple[int, str] | None = None
    for chunk in _chunks(lines):
        if pending is not None and not chunk[1].strip():
            pending = (pending[0], pending[1] + chunk[1])
        elif chunk[1]:
            if pending is not None:
                yield pending
            pending = chunk
    if pending is not None:
        yield pending


def _chunks(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    current: list[str] = []
    start, has_content, has_marker = 0, False, False
    for number, line in enumerate(lines):
        marker = _MARKER.match(line)
        if marker and marker.group(1) == "---" and (has_content or has_marker):
            yield start, "".join(current)
            start, current, has_content = number, [], False
        current.append(line)
        if marker:
            has_marker = marker.group(1) == "---"
            rest = line[3:].strip()
            if has_marker and rest and not rest.startswith("#"):
                has_content = True
            if marker.group(1) == "...":
                yield start, "".join(current)
                start, current, has_content, has_marker = number + 1, [], False, False
        elif _CONTENT.match(line):
            has_content = True
    yield start, "".join(current)


def lines_of(text: str) -> Iterator[str]:
    """The lines of ``text`` with their endings, broken where YAML breaks them (LF, CR, CRLF)."""
    return iter(io.StringIO(text, newline=""))


def _yaml(null: str = "") -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    if null:
        yaml.Representer = _null_representer(null)
    return yaml


@functools.cache
def _null_representer(token: str) -> type[RoundTripRepresenter]:
    """ruamel's round-trip representer, writing null as ``token`` rather than as nothing."""

    def represent_none(self: RoundTripRepresenter, data: None) -> Any:
        return self.represent_scalar("tag:yaml.org,2002:null", token)

    class NullRepresenter(RoundTripRepresenter):
        pass

    NullRepresenter.add_representer(type(None), represent_none)
    return NullRepresenter


_NULL: Final = re.compile(
    r"(?:^|[:\-,\[{])[ \t]+(null|Null|NULL|~)[ \t]*(?:#[^\r\n]*)?\r?$", re.MULTILINE
)
_VERSION: Final = re.compile(r"^%YAML[ \t]+(\d+)\.(\d+)", re.MULTILINE)
_HEAD_LINE: Final = re.compile(r"^(?:[ \t]*(?:#.*)?|%.*)(?:\r?\n|\r)?$")


def _null_token(text: str) -> str:
    """How the document writes null, if it writes one: ``null``, ``~``...; else nothing.

    ruamel reads ``key: null`` and ``key:`` alike and writes both as ``key:``. A document
    that spells its nulls out gets them spelled out the same way (the first spelling found),
    so that a changed document keeps ``nodeSelector: null`` as it was.
    """
    match = _NULL.search(text)
    return match.group(1) if match else ""


def _head(text: str) -> tuple[str, str]:
    """(the lines up to and including a bare ``---``, the rest) of a document's text.

    ruamel drops comments and directives before the ``---`` and the comment after it, so the
    head is written back as it was and only the body is dumped. Without a bare marker (or when
    content follows it on its line), the head is empty.
    """
    offset = 0
    for line in io.StringIO(text, newline=""):
        marker = _MARKER.match(line)
        if marker and marker.group(1) == "---":
            rest = line[3:].strip()
            if rest and not rest.startswith("#"):
                return "", text
            end = offset + len(line)
            return text[:end], text[end:]
        if not _HEAD_LINE.match(line):
            return "", text
        offset += len(line)
    return "", text


def _after_head(head: str, dumped: str, *, directive: bool) -> str:
    """ruamel's output without what the head already says (the directive, the marker and
    the comment after it)."""
    if directive:
        dumped = re.sub(r"\A(?:%[^\n]*\n)*---[^\n]*\n", "", dumped, count=1)
    marker_line = head.rstrip("\r\n").rsplit("\n", 1)[-1]
    comment = marker_line[3:].strip() if marker_line.startswith("---") else ""
    if comment:
        first, _, rest = dumped.partition("\n")
        if first.strip() == comment:
            dumped = rest
    return dumped


def parse(chunk: str, *, line: int, index: int, source: str) -> Document:
    """One chunk of ``split`` as a Document; ManifestError names ``source:line:column``.

    Documents that nest too deeply or whose aliases expand too far (``limits``) are refused
    here, before anything walks their data.
    """
    yaml = _yaml()
    try:
        limits.scan(chunk)
    except limits.Breach as exc:
        raise errors.ManifestError(f"{source}:{line + (exc.line or 0) + 1}: {exc}") from exc
    try:
        data = yaml.load(chunk)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{line + mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "malformed YAML"
        raise errors.ManifestError(f"{where}: {problem}; fix the YAML") from exc
    except YAMLError as exc:
        raise errors.ManifestError(f"{source}:{line + 1}: {exc}; fix the YAML") from exc
    except RecursionError as exc:
        raise errors.ManifestError(
            f"{source}:{line + 1}: the document nests more than {limits.MAX_DEPTH} levels "
            "deep, which no Kubernetes object does; flatten it"
        ) from exc
    try:
        limits.measure(data)
    except limits.Breach as exc:
        raise errors.ManifestError(f"{source}:{line + (exc.line or 0) + 1}: {exc}") from exc
    return Document(chunk, data, line, index)


def iter_stream(lines: Iterable[str], *, source: str) -> Iterator[Document]:
    """Parse the documents of a stream one at a time (see ``split`` and ``parse``)."""
    for index, (line, chunk) in enumerate(split(lines), start=1):
        yield parse(chunk, line=line, index=index, source=source)


def load_stream(text: str, *, source: str) -> list[Document]:
    """Parse every document of ``text``; ManifestError names ``source:line:column`` on failure."""
    return list(iter_stream(lines_of(text), source=source))


def load_data(text: str, *, source: str) -> Any:
    """Parse a single-document YAML file (configs, facts) with round-trip positions."""
    documents = load_stream(text, source=source)
    if len(documents) > 1:
        raise errors.ManifestError(
            f"{source}:{documents[1].line + 1}: expected one YAML document, found "
            f"{len(documents)}; keep one"
        )
    return documents[0].data if documents else None


def _indentation(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) as ruamel wants them, read off the document's own lines."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    mapping, offset = 0, None
    for before, after in itertools.pairwise(lines):
        key = _KEY_LINE.match(before)
        if not key:
            continue
        base = len(key.group(1))
        dash = _DASH_LINE.match(after)
        if dash and offset is None and len(dash.group(1)) >= base:
            offset = len(dash.group(1)) - base
        nested = _ANY_LINE.match(after)
        if not dash and nested and not mapping and len(nested.group(1)) > base:
            mapping = len(nested.group(1)) - base
        if mapping and offset is not None:
            break
    mapping = mapping or 2
    offset = offset if offset is not None else 0
    return mapping, offset + 2, offset


def dump(document: Document, data: Any, *, changed: bool | None = None) -> str:
    """The text of ``document`` with ``data`` in place of what it held.

    Objects added to the tree as plain dicts inside lists (injected containers, volumes,
    mounts, env entries) are rendered on their own, once per distinct content and indentation,
    and spliced into ruamel's output: an injected sidecar is the same in every workload of a
    stream, and emitting it node by node each time would cost more than the rest of the dump.

    ``changed`` says whether ``data`` differs from what the document held; by default, whether
    it is another object (a caller that changed the document in place must say so).
    """
    if not changed if changed is not None else data is document.data:
        return document.text
    head, body = _head(document.text)
    yaml = _yaml(null=_null_token(body))
    indent = _indentation(body)
    yaml.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    version = _VERSION.search(head)
    if version:
        yaml.version = (int(version.group(1)), int(version.group(2)))
    out = io.StringIO()
    if not head and _MARKER.match(body):
        yaml.explicit_start = True  # ``--- {a: 1}`` or ``--- !!map``: the marker carries content
    swapped: list[tuple[list[Any], int, Any]] = []
    _swap_plain_items(data, swapped)
    try:
        yaml.dump(data, out)
    finally:
        for items, index, item in swapped:
            items[index] = item
    text = _after_head(head, out.getvalue(), directive=version is not None)
    if swapped:
        text = _splice(text, swapped, indent)
    if "\r\n" in document.text.split("\n", 1)[0] + "\n" or head.endswith("\r\n"):
        text = text.replace("\n", "\r\n")
    return head + text


def _splice(
    text: str, swapped: list[tuple[list[Any], int, Any]], indent: tuple[int, int, int]
) -> str:
    """Put the separately rendered plain items of ``dump`` in place of their tokens."""

    def block(match: re.Match[str]) -> str:
        item = swapped[int(match.group(3))][2]
        rendered = _render_item(orjson.dumps(item), indent)
        pad = " " * (len(match.group(1)) - indent[2])
        return "".join(pad + line for line in rendered.splitlines(keepends=True)).rstrip("\n")

    text = _BLOCK_TOKEN.sub(block, text)
    # Whatever is left sits in a flow collection, where JSON is valid YAML.
    return _TOKEN.sub(lambda m: orjson.dumps(swapped[int(m.group(1))][2]).decode(), text)


_NONCE: Final = os.urandom(4).hex()  # not secrets: hashlib and hmac are start-up time
_TOKEN: Final = re.compile(rf"__sidecarkit_{_NONCE}_(\d+)__")
_BLOCK_TOKEN: Final = re.compile(rf"^( *)- (__sidecarkit_{_NONCE}_(\d+)__)$", re.MULTILINE)


def _swap_plain_items(node: Any, swapped: list[tuple[list[Any], int, Any]]) -> None:
    """Replace plain-dict list items by tokens, in place, noting what to put back."""
    if isinstance(node, dict):
        for value in node.values():
            if isinstance(value, dict | list):
                _swap_plain_items(value, swapped)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if type(item) is dict:
                node[index] = f"__sidecarkit_{_NONCE}_{len(swapped)}__"
                swapped.append((node, index, item))
            elif isinstance(item, dict | list):
                _swap_plain_items(item, swapped)


@functools.lru_cache(maxsize=512)
def _render_item(item: bytes, indent: tuple[int, int, int]) -> str:
    """One list item as block YAML at the top level, with the document's indentation."""
    yaml = _yaml()
    yaml.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    out = io.StringIO()
    yaml.dump([orjson.loads(item)], out)
    return out.getvalue()


def to_plain(data: Any) -> Any:
    """ruamel's round-trip types as plain dicts, lists and scalars (for JSON and for diffs)."""
    if isinstance(data, dict):
        return {str(k): to_plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_plain(v) for v in data]
    if isinstance(data, bool) or data is None:
        return data
    if isinstance(data, str):
        return str(data)
    if isinstance(data, int):
        return int(data)
    if isinstance(data, float):
        return float(data)
    return data


def dump_objects(objects: list[Any]) -> str:
    """Plain Kubernetes objects as one YAML stream, ``---`` between documents."""
    yaml = _yaml()
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    for index, obj in enumerate(objects):
        if index:
            out.write("---\n")
        yaml.dump(obj, out)
    return out.getvalue()
