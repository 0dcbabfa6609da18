"""Single values of the proxy's settings file: addresses, Services, durations, counts, lists.

Each parser takes the value and ``where``, the key's path in the file, so that every error names
the key and says what would be accepted; the section parsers (``settings``, ``portsettings``)
only choose which parser a key gets. Kept apart from the sections so that each stays short and
a value is read the same way wherever it appears. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from sidecarkit import durations

__all__ = [
    "boolean",
    "known",
    "listed",
    "mapping",
    "methods",
    "parse_address",
    "parse_kubernetes",
    "ratio",
    "seconds",
    "section",
    "statuses",
    "whole",
]


def parse_kubernetes(value: Any, where: str) -> tuple[str, str, str]:
    """``SERVICE.NAMESPACE:PORT`` (a ``.svc.cluster.local`` suffix allowed) as its parts."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    parts = host.split(".")
    if len(parts) > 2 and parts[2] == "svc":
        parts = parts[:2]
    ok = (
        sep
        and port
        and len(parts) == 2
        and all(p and all(c.isalnum() or c == "-" for c in p) for p in parts)
        and all(c.isalnum() or c == "-" for c in port)
    )
    if not ok:
        raise ValueError(
            f"{where}: {value!r} is not a Service; write SERVICE.NAMESPACE:PORT with the "
            "Service's port number or name, e.g. payments.shop:8080 or payments.shop:http"
        )
    return parts[0], parts[1], port


def parse_address(value: Any, where: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or a bare port number."""
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535 or (host and any(c in host for c in " /")):
        raise ValueError(
            f"{where}: {value!r} is not an address; write HOST:PORT such as 127.0.0.1:8080"
        )
    return host or default_host, port


def seconds(value: Any, where: str) -> float:
    return durations.setting(value, where)


def whole(value: Any, where: str, *, low: int = 0) -> int:
    if isinstance(value, bool):
        value = "x"
    try:
        number = int(str(value).replace("_", ""))
    except ValueError:
        number = low - 1
    if number < low:
        raise ValueError(f"{where}: must be a whole number of at least {low}, not {value!r}")
    return number


def ratio(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number < 0 or isinstance(value, bool):
        raise ValueError(f"{where}: must be a number of at least 0, not {value!r}")
    return number


def mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys, not {type(value).__name__}")
    return value


def known(data: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise ValueError(
                f"{where}.{key}: unknown key; the keys here are {', '.join(allowed)}"
                if where
                else f"{key}: unknown key; the top-level keys are {', '.join(allowed)}"
            )


def listed(value: Any, where: str) -> list[Any]:
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: expected a list, not {type(value).__name__}")
    return list(value)


def section(cls: Any, base: Any, data: Mapping[str, Any], where: str, kinds: dict[str, Any]) -> Any:
    names = tuple(f.name.rstrip("_") for f in fields(cls))
    known(data, where, names)
    changes = {}
    for key, value in data.items():
        attr = key + "_" if key == "try" else key
        changes[attr] = kinds[key](value, f"{where}.{key}")
    return replace(base, **changes)


def methods(value: Any, where: str) -> tuple[str, ...]:
    out = []
    for item in listed(value, where):
        method = str(item).strip().upper()
        if not method.isalpha():
            raise ValueError(f"{where}: {item!r} is not an HTTP method such as GET")
        out.append(method)
    return tuple(out)


def statuses(value: Any, where: str) -> tuple[int, ...]:
    out = []
    for item in listed(value, where):
        code = whole(item, where, low=100)
        if code > 599:
            raise ValueError(f"{where}: {item!r} is not an HTTP status code (100-599)")
        out.append(code)
    return tuple(out)


def boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{where}: {value!r} is not true or false")
