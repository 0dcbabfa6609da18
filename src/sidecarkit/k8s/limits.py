"""Bounds on what one YAML document may make of itself: alias expansion and nesting.

YAML aliases let a few hundred bytes stand for billions of nodes (the "billion laughs"
document): the parser shares the nodes, but anything that walks the data as a tree (a copy,
a conflict check, JSON output, the API server) expands them. And a parser, a copy or a dump
that recurses per level of nesting runs out of stack on a document a few hundred levels deep.
No Kubernetes object needs either, so both are refused right after parsing, with a message
that says which document and why, before anything walks the data.

The alias rule is the one Kubernetes' own YAML decoder (go-yaml) applies, so that what
``kubectl apply`` accepts, sidecarkit accepts too: a document that expands to at most 400,000
nodes is always fine; past that, the share of nodes that come from expanding aliases must stay
under 99%, falling linearly to 10% at 4,000,000 nodes and beyond.

``measure`` walks each distinct node once (sizes of shared nodes are remembered), without
recursion, so it takes time linear in the document's text however much it would expand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["FLOW_DEPTH_SCAN", "MAX_DEPTH", "Breach", "allowed_alias_ratio", "measure", "scan"]

MAX_DEPTH: Final = 128
"""Deepest nesting of mappings and sequences accepted. A Deployment nests about 12 levels, the
largest CRD schemas about 60; Python's stack (for copies and dumps) holds about 250."""

FLOW_DEPTH_SCAN: Final = 512
"""Flow brackets (``[``, ``{``) open at once past which ``scan`` refuses a text unparsed."""

_FLOW_TOKEN: Final = re.compile(
    r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\n]|'')*'|(?:^|(?<=[ \t]))#[^\n]*|[\[\]{}]",
    re.MULTILINE,
)
_RATIO_LOW: Final = 400_000
_RATIO_HIGH: Final = 4_000_000


class Breach(Exception):
    """A bound that a document passes; ``line`` is 0-based within the document, if known."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def allowed_alias_ratio(expanded: int) -> float:
    """The share of ``expanded`` nodes that may come from aliases (go-yaml's rule)."""
    if expanded <= _RATIO_LOW:
        return 0.99
    if expanded >= _RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (expanded - _RATIO_LOW) / (_RATIO_HIGH - _RATIO_LOW)


def scan(text: str) -> None:
    """Refuse, before parsing, a text whose flow collections nest past FLOW_DEPTH_SCAN.

    ruamel's scanner takes time quadratic in the depth of nested ``[``/``{`` before its parser
    runs out of stack, so a 10 KB line of brackets would cost seconds. This looks only at
    brackets outside quotes and comments (a quote that does not close on its line is skipped
    over), which is cheap; the exact bound (MAX_DEPTH) is checked after parsing.
    """
    if "[" not in text and "{" not in text:
        return
    depth = 0
    for match in _FLOW_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > FLOW_DEPTH_SCAN:
                line = text.count("\n", 0, match.start())
                raise Breach(
                    f"the document nests more than {MAX_DEPTH} levels deep, which no "
                    "Kubernetes object does; flatten it",
                    line,
                )
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)


def _children(node: dict[Any, Any] | list[Any]) -> Iterator[Any]:
    return iter(node.values() if isinstance(node, dict) else node)


def _line(node: object) -> int | None:
    lc = getattr(node, "lc", None)
    line = getattr(lc, "line", None)
    return line if isinstance(line, int) else None


def measure(root: object) -> tuple[int, int]:
    """(nodes once aliases are expanded, nodes as written) of ``root``; Breach past a bound.

    Raises Breach when ``root`` nests deeper than MAX_DEPTH, contains itself through an
    alias (it would expand forever), or expands past ``allowed_alias_ratio``.
    """
    if not isinstance(root, dict | list):
        return 1, 1
    done: dict[int, int] = {}
    active = {id(root)}
    path: list[dict[Any, Any] | list[Any]] = [root]
    iterators = [_children(root)]
    sizes = [1]
    written = 0
    while path:
        child = next(iterators[-1], _END)
        if child is _END:
            node = path.pop()
            iterators.pop()
            size = sizes.pop()
            active.discard(id(node))
            done[id(node)] = size
            written += 1 + len(node)
            if sizes:
                sizes[-1] += size
            continue
        if not isinstance(child, dict | list):
            sizes[-1] += 1
            continue
        key = id(child)
        if key in done:
            sizes[-1] += done[key]
            continue
        if key in active:
            raise Breach(
                "an alias refers to a collection that contains itself, so the document "
                "never ends; replace the alias by the values it should have",
                _line(child) or _line(path[-1]),
            )
        if len(path) >= MAX_DEPTH:
            raise Breach(
                f"the document nests more than {MAX_DEPTH} levels deep, which no Kubernetes "
                "object does; flatten it",
                _line(child) or _line(path[-1]),
            )
        active.add(key)
        path.append(child)
        iterators.append(_children(child))
        sizes.append(1)
    expanded = done[id(root)]
    if expanded > _RATIO_LOW and (expanded - written) / expanded > allowed_alias_ratio(expanded):
        raise Breach(
            f"its aliases make {written:,} written nodes expand to {expanded:,}, past the "
            "limit Kubernetes' own YAML decoder keeps (an alias bomb?); write the values out "
            "or use fewer nested aliases",
            None,
        )
    return expanded, written


_END: Final = object()
