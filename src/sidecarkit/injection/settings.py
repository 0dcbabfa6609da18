"""Typed profile settings: what a ``sidecarkit.io/<profile>.<key>`` annotation may say.

A profile declares its settings; the config file may change their defaults; a pod may override
them with annotations. Every value is checked here, once, against its kind, and every error says
which values would have been accepted, because the person reading it is fixing a manifest.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from sidecarkit import durations
from sidecarkit.durations import seconds

__all__ = ["Kind", "Setting", "check", "is_dns_label", "seconds"]

_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Kubernetes resource.Quantity: a decimal number, then a binary or decimal suffix or an exponent.
_QUANTITY: Final = re.compile(
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$"
)
# A Go-style duration such as 15s, 1m30s or 500ms, the form every agent flag takes.
_IMAGE: Final = re.compile(r"^[^\s]+$")


class Kind(enum.StrEnum):
    """The kinds of value a setting can hold."""

    STRING = "string"
    INT = "int"
    PORT = "port"
    BOOL = "bool"
    PATH = "path"
    QUANTITY = "quantity"
    DURATION = "duration"
    IMAGE = "image"
    CHOICE = "choice"
    NAME = "name"


_EXPECTED: Final[dict[Kind, str]] = {
    Kind.STRING: "any string",
    Kind.INT: "a whole number such as 3",
    Kind.PORT: "a port number from 1 to 65535",
    Kind.BOOL: '"true" or "false"',
    Kind.PATH: "an absolute path such as /var/log/app",
    Kind.QUANTITY: "a Kubernetes quantity such as 100m, 64Mi or 1",
    Kind.DURATION: "a duration such as 500ms, 15s or 1m30s",
    Kind.IMAGE: "an image reference without spaces",
    Kind.NAME: "a DNS-1123 label: lowercase letters, digits and '-', at most 63",
}


@dataclass(frozen=True, slots=True)
class Setting:
    """One knob of a profile."""

    name: str
    """The key after the profile name in ``sidecarkit.io/<profile>.<key>``."""
    kind: Kind
    """What values are valid; checked when the config loads and when a pod overrides it."""
    default: str | None
    """The value when neither the config nor the pod says otherwise; None means unset."""
    description: str = ""
    """One sentence for ``sidecarkit profiles`` and the docs."""
    choices: tuple[str, ...] = ()
    """The accepted values when ``kind`` is CHOICE."""
    required: bool = False
    """Whether a pod must set it because there is no sensible default (user profiles only)."""

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices)
        return _EXPECTED[self.kind]


def check(setting: Setting, value: object) -> str | None:
    """Return why ``value`` is not valid for ``setting``, or None when it is.

    Values arrive as strings from annotations and as YAML scalars from the config file; both are
    judged on their string form so the same rule applies to each.
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        return f"expected {setting.expected()}, got a {type(value).__name__}"
    ok = _valid(setting, text)
    return None if ok else f"expected {setting.expected()}, got {text!r}"


def _valid(setting: Setting, text: str) -> bool:
    kind = setting.kind
    if kind is Kind.STRING:
        return True
    if kind is Kind.INT:
        return text.isdigit()
    if kind is Kind.PORT:
        return text.isdigit() and 1 <= int(text) <= 65535
    if kind is Kind.BOOL:
        return text in ("true", "false")
    if kind is Kind.PATH:
        return text.startswith("/") and "\n" not in text
    if kind is Kind.QUANTITY:
        return _QUANTITY.match(text) is not None
    if kind is Kind.DURATION:
        return durations.is_duration(text)
    if kind is Kind.IMAGE:
        return _IMAGE.match(text) is not None
    if kind is Kind.NAME:
        return _DNS_LABEL.match(text) is not None
    return text in setting.choices


def is_dns_label(text: object) -> bool:
    """True when ``text`` is a valid Kubernetes name for a container, port or volume."""
    return isinstance(text, str) and _DNS_LABEL.match(text) is not None
