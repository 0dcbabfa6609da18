"""What the ``redact`` stage masks: built-in patterns for common secrets, and your own regexes.

Built-ins, by name:

- ``email``: addresses such as ``jane.doe@example.com``.
- ``card``: payment card numbers, 13 to 19 digits, spaces or dashes between them allowed, that
  pass the Luhn check (so order numbers and timestamps of the same length are left alone).
- ``ipv4``: IPv4 addresses (and anything written like one, such as a four-part version).
- ``bearer``: the token after ``Bearer`` (an ``Authorization`` header as apps log it).
- ``jwt``: JSON Web Tokens (three base64url parts, the first starting ``eyJ``).
- ``secret``: the value after a key named like a secret (``password``, ``passwd``, ``secret``,
  ``token``, ``api_key``, ``apikey``, ``access_key``, ``private_key``) and ``=`` or ``:``, as in
  ``password=hunter2`` or ``"token": "abc"``; the key stays, the value goes.
- ``aws``: AWS access key ids (``AKIA...``, ``ASIA...``).

Each is a regex with a cheap test in front where one exists (a substring the text must hold), so
that lines without anything to mask cost one ``in``; a match is replaced by ``[REDACTED]`` (the
key and the ``Bearer`` word are kept). The built-ins read digits, letters and word boundaries as
ASCII, as Fluent Bit's regexes do, which also makes them scan several times faster. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["BUILTIN", "MASK", "Pattern", "compile", "luhn", "patterns"]

MASK: Final = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class Pattern:
    """A built-in by ``name``, or ``regex`` with its ``replacement`` (``\\g<name>`` allowed)."""

    name: str | None = None
    regex: str | None = None
    replacement: str = MASK

    def __str__(self) -> str:
        if self.name is not None:
            return self.name
        return f"{{regex: {self.regex!r}, replacement: {self.replacement!r}}}"


@dataclass(frozen=True, slots=True)
class _Builtin:
    regex: str
    replacement: str
    hints: tuple[str, ...]
    """Substrings one of which every match holds (lowercase text when ``folded``); none: scan."""
    folded: bool = False
    check: Callable[[re.Match[str]], bool] | None = None
    """A test of the match (Luhn, what is around it), when the regex alone would mask too
    much: cheaper than a regex that says it all, since it runs only where the regex matched."""


def _address(found: re.Match[str]) -> bool:
    """Not a part of a longer dotted number (``1.2.3.4.5``, a version)."""
    text, start, end = found.string, found.start(), found.end()
    if start and text[start - 1] == ".":
        return False
    return not (text[end : end + 1] == "." and text[end + 1 : end + 2].isdigit())


def luhn(text: str) -> bool:
    """True when the digits of ``text`` pass the Luhn checksum (payment card numbers do)."""
    digits = [ord(c) - 48 for c in text if "0" <= c <= "9"]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


_SECRET_KEYS: Final = r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"

BUILTIN: Final[dict[str, _Builtin]] = {
    "email": _Builtin(
        r"(?a)\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", MASK, ("@",)
    ),
    "card": _Builtin(
        r"(?a)\b\d{4}(?:[ -]?\d){9,15}\b", MASK, (), check=lambda found: luhn(found.group())
    ),
    "ipv4": _Builtin(r"(?a)\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", MASK, (".",), check=_address),
    "bearer": _Builtin(
        r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*", rf"\g<1>{MASK}", ("bearer",), folded=True
    ),
    "jwt": _Builtin(r"(?a)\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", MASK, ("eyJ",)),
    "secret": _Builtin(
        rf"""(?i)((?:{_SECRET_KEYS})["']?\s*[:=]\s*["']?)[^\s"'&,;]+""",
        rf"\g<1>{MASK}",
        ("pass", "pwd", "secret", "token", "key"),
        folded=True,
    ),
    "aws": _Builtin(r"(?a)\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", MASK, ("AKIA", "ASIA")),
}


def patterns(where: str, value: Any) -> tuple[Pattern, ...]:
    """The ``patterns`` of a redact stage read and checked; ValueError names the bad one."""
    if isinstance(value, str | Mapping):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"{where}: expected a list of built-in names ({', '.join(BUILTIN)}) or "
            "{regex: ..., replacement: ...} mappings"
        )
    out = []
    for index, item in enumerate(value):
        here = f"{where}[{index}]"
        if isinstance(item, str):
            if item not in BUILTIN:
                raise ValueError(
                    f"{here}: {item!r} is not a built-in pattern; use one of "
                    f"{', '.join(BUILTIN)}, or {{regex: {item!r}}} for a regex of your own"
                )
            out.append(Pattern(name=item))
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("regex"), str):
            raise ValueError(
                f"{here}: expected a built-in name or {{regex: ..., replacement: ...}}"
            )
        unknown = sorted(set(item) - {"regex", "replacement"})
        if unknown:
            raise ValueError(f"{here}: unknown key {unknown[0]!r}; accepted: regex, replacement")
        replacement = item.get("replacement", MASK)
        if not isinstance(replacement, str):
            raise ValueError(f"{here}.replacement: expected a string, not {replacement!r}")
        try:
            compiled = re.compile(item["regex"])
        except re.error as exc:
            raise ValueError(
                f"{here}.regex: {item['regex']!r} is not a valid regular expression: {exc}; "
                "fix the pattern (Python re syntax)"
            ) from exc
        if compiled.match(""):
            raise ValueError(
                f"{here}.regex: {item['regex']!r} matches the empty string, so it would mask "
                "between every character; make it match at least one character"
            )
        try:
            _template_check(compiled, replacement)
        except (re.error, IndexError) as exc:
            raise ValueError(
                f"{here}.replacement: {replacement!r} is not a valid replacement for this "
                f"regex: {exc}; refer to groups as \\g<name> or \\1"
            ) from exc
        out.append(Pattern(regex=item["regex"], replacement=replacement))
    return tuple(out)


def _template_check(compiled: re.Pattern[str], replacement: str) -> None:
    """Raise ``re.error`` when ``replacement`` names a group ``compiled`` does not have, or
    holds a bad escape: checked now, since ``sub`` reads its template at the first match."""
    for name, number in _REFERENCE.findall(replacement):
        if name and not name.isdigit() and name not in compiled.groupindex:
            raise re.error(f"unknown group name {name!r}")
        index = int(number or name) if (number or name.isdigit()) else 0
        if index > compiled.groups:
            raise re.error(f"invalid group reference {index}")
    re.sub("", _REFERENCE.sub("", replacement), "")  # "" matches: the escapes are read


_REFERENCE: Final = re.compile(r"\\g<(\w+)>|\\(\d+)")


def _one(pattern: Pattern) -> Callable[[str], str]:
    if pattern.name is None:
        assert pattern.regex is not None
        sub = re.compile(pattern.regex).sub
        replacement = pattern.replacement
        return lambda text: sub(replacement, text)
    builtin = BUILTIN[pattern.name]
    sub = re.compile(builtin.regex).sub
    check = builtin.check
    template: Any = builtin.replacement
    if check is not None:

        def template(found: re.Match[str]) -> str:
            return MASK if check(found) else found.group()

    hints = builtin.hints
    if not hints:
        return lambda text: sub(template, text)
    if builtin.folded:

        def folded(text: str) -> str:
            low = text.lower()
            for hint in hints:
                if hint in low:
                    return sub(template, text)
            return text

        return folded

    def plain(text: str) -> str:
        for hint in hints:
            if hint in text:
                return sub(template, text)
        return text

    return plain


def compile(chosen: tuple[Pattern, ...]) -> Callable[[str], str]:
    """One function applying every pattern in turn: text in, masked text out."""
    steps = [_one(p) for p in chosen]
    if len(steps) == 1:
        return steps[0]

    def every(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return every
