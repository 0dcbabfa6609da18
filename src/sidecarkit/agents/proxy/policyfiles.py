"""Reading a policy file (YAML-shaped data) into a compiled ``policies.Policy``.

The file's keys and their meaning are in ``policies``' docstring and docs/policy.md. Every
error names the file, the key and what would be accepted, because the reader is usually looking
at a crash-looping pod's log (or at a reload the proxy refused). No I/O: the shell reads the
file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from sidecarkit import durations
from sidecarkit.agents.proxy import policies

__all__ = ["from_mapping"]


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys, not {type(value).__name__}")
    return value


def _known(data: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            place = f"{where}.{key}" if where else str(key)
            raise ValueError(f"{place}: unknown key; the keys here are {', '.join(allowed)}")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str | int) or isinstance(item, bool) or str(item).strip() == "":
            raise ValueError(f"{where}[{i}]: expected a non-empty string, not {item!r}")
        out.append(str(item).strip())
    return tuple(out)


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{where}: {value!r} is not true or false")


_TOKEN: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _header_name(value: Any, where: str) -> str:
    name = str(value).strip().lower()
    if not _TOKEN.match(name):
        raise ValueError(f"{where}: {value!r} is not an HTTP header name such as x-user-id")
    return name


def _jwt(data: Any, where: str) -> policies.JwtProvider:
    data = _mapping(data, where)
    allowed = ("issuer", "audiences", "jwks_url", "jwks_file", "algorithms", "clock_skew",
               "claims_to_headers", "forward_token")  # fmt: skip
    _known(data, where, allowed)
    issuer = str(data.get("issuer") or "").strip()
    if not issuer:
        raise ValueError(f"{where}.issuer: missing; give the iss the tokens carry")
    url, file = data.get("jwks_url"), data.get("jwks_file")
    if bool(url) == bool(file):
        raise ValueError(f"{where}: give exactly one of jwks_url: URL or jwks_file: PATH")
    if url and not str(url).startswith(("https://", "http://")):
        raise ValueError(f"{where}.jwks_url: {url!r} is not an http(s) URL")
    algorithms = (
        _strings(data.get("algorithms"), f"{where}.algorithms") or policies.DEFAULT_ALGORITHMS
    )
    for alg in algorithms:
        if alg not in policies.ALGORITHMS:
            raise ValueError(
                f"{where}.algorithms: {alg!r} is not accepted; use public-key algorithms "
                f"({', '.join(policies.ALGORITHMS)}): shared-secret and 'none' tokens are refused"
            )
    claims = _mapping(data.get("claims_to_headers"), f"{where}.claims_to_headers")
    pairs = tuple(
        (str(c), _header_name(h, f"{where}.claims_to_headers.{c}")) for c, h in claims.items()
    )
    return policies.JwtProvider(
        issuer=issuer,
        audiences=_strings(data.get("audiences"), f"{where}.audiences"),
        jwks_url=str(url) if url else None,
        jwks_file=str(file) if file else None,
        algorithms=algorithms,
        clock_skew=durations.setting(data.get("clock_skew", 30), f"{where}.clock_skew"),
        claims_to_headers=pairs,
        forward_token=_bool(data.get("forward_token", False), f"{where}.forward_token"),
    )


def _authentication(data: Any, where: str) -> policies.Authentication:
    data = _mapping(data, where)
    _known(data, where, ("jwt", "api_keys", "required", "realm"))
    jwt_items = data.get("jwt") or []
    if not isinstance(jwt_items, list):
        raise ValueError(f"{where}.jwt: expected a list of issuers")
    providers = tuple(_jwt(p, f"{where}.jwt[{i}]") for i, p in enumerate(jwt_items))
    issuers = [p.issuer for p in providers]
    if len(set(issuers)) != len(issuers):
        raise ValueError(f"{where}.jwt: an issuer is listed twice; give each once")
    keys = None
    if data.get("api_keys") is not None:
        section = _mapping(data["api_keys"], f"{where}.api_keys")
        _known(section, f"{where}.api_keys", ("file", "header", "name_header"))
        if not section.get("file"):
            raise ValueError(f"{where}.api_keys.file: missing; give the mounted key file")
        keys = policies.ApiKeys(
            file=str(section["file"]),
            header=_header_name(section.get("header", "x-api-key"), f"{where}.api_keys.header"),
            name_header=_header_name(
                section.get("name_header", "x-api-key-name"), f"{where}.api_keys.name_header"
            ),
        )
    realm = str(data.get("realm", "sidecarkit"))
    if '"' in realm or "\\" in realm or not realm.isprintable():
        raise ValueError(f"{where}.realm: {realm!r} may not hold quotes or backslashes")
    return policies.Authentication(
        jwt=providers,
        api_keys=keys,
        required=_bool(data.get("required", bool(providers or keys)), f"{where}.required"),
        realm=realm,
    )


_INBOUND_ONLY: Final = ("peers", "namespaces", "subjects")
"""Rule keys that name the caller: outbound, the caller is the app itself."""


def _rule(data: Any, where: str, index: int, *, outbound: bool = False) -> policies.Rule:
    data = _mapping(data, where)
    allowed = ("name", "action", "peers", "namespaces", "methods", "paths", "headers", "subjects",
               "upstreams", "shadow", "ports")  # fmt: skip
    _known(data, where, allowed)
    _sided(data, where, outbound=outbound)
    action = data.get("action")
    if action not in ("allow", "deny"):
        raise ValueError(f"{where}.action: {action!r} is unknown; use allow or deny")
    methods = tuple(m.upper() for m in _strings(data.get("methods"), f"{where}.methods"))
    paths = _strings(data.get("paths"), f"{where}.paths")
    for i, p in enumerate(paths):
        if not p.startswith("/") or policies.normal_path(p.encode())[1]:
            raise ValueError(f"{where}.paths[{i}]: {p!r} is not a plain path such as /api")
    headers = _mapping(data.get("headers"), f"{where}.headers")
    return policies.Rule(
        name=str(data.get("name") or f"rules[{index}]"),
        action=action,
        peers=_strings(data.get("peers"), f"{where}.peers"),
        namespaces=_strings(data.get("namespaces"), f"{where}.namespaces"),
        methods=methods,
        paths=paths,
        headers=tuple(
            (_header_name(n, f"{where}.headers"), _strings(v, f"{where}.headers.{n}"))
            for n, v in headers.items()
        ),
        subjects=_strings(data.get("subjects"), f"{where}.subjects"),
        upstreams=_strings(data.get("upstreams"), f"{where}.upstreams"),
        shadow=_bool(data.get("shadow", False), f"{where}.shadow"),
        ports=_ports(data.get("ports"), f"{where}.ports"),
    )


def _ports(value: Any, where: str) -> tuple[int, ...]:
    items = value if isinstance(value, list | tuple) else [] if value is None else [value]
    out = []
    for i, item in enumerate(items):
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"{where}[{i}]: {item!r} is not a port number such as 8080")
        out.append(int(text))
    return tuple(out)


def _sided(data: Mapping[str, Any], where: str, *, outbound: bool) -> None:
    """Refuse a key that cannot match on this side, rather than a rule that never matches."""
    if outbound:
        if data.get("ports"):
            raise ValueError(
                f"{where}.ports: ports are the proxy's inbound ports; outbound, name where "
                "the request goes with upstreams:"
            )
        for key in _INBOUND_ONLY:
            if data.get(key):
                raise ValueError(
                    f"{where}.{key}: outbound requests come from the app itself, {key} "
                    "names an inbound caller; put this under the top-level sections"
                )
    elif data.get("upstreams"):
        raise ValueError(
            f"{where}.upstreams: inbound requests all go to the app; "
            "put rules on upstreams under outbound:"
        )


_RATE: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|m|h|second|minute|hour)\s*$")
_PER: Final = {"s": 1.0, "second": 1.0, "m": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def _rate_limit(data: Any, where: str, index: int, *, outbound: bool = False) -> policies.RateLimit:
    data = _mapping(data, where)
    allowed = ("name", "key", "rate", "burst", "methods", "paths", "upstreams", "shadow",
               "headers", "ports")  # fmt: skip
    _known(data, where, allowed)
    _sided(data, where, outbound=outbound)
    key = str(data.get("key", "client_ip")).strip()
    kinds = policies.OUTBOUND_KEY_KINDS if outbound else policies.KEY_KINDS
    if key.startswith("header:"):
        key = "header:" + _header_name(key[7:], f"{where}.key")
    elif key not in kinds:
        raise ValueError(f"{where}.key: {key!r} is unknown here; use one of {', '.join(kinds)}")
    m = _RATE.match(str(data.get("rate", "")))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(
            f"{where}.rate: {data.get('rate')!r} is not a rate; write e.g. 100/s, 6000/m or 10/h"
        )
    rate = float(m.group(1)) / _PER[m.group(2)]
    burst = data.get("burst", max(1.0, rate))
    if isinstance(burst, bool) or not isinstance(burst, int | float) or burst < 1:
        raise ValueError(f"{where}.burst: must be a number of at least 1, not {burst!r}")
    paths = _strings(data.get("paths"), f"{where}.paths")
    for i, p in enumerate(paths):
        if not p.startswith("/") or policies.normal_path(p.encode())[1]:
            raise ValueError(f"{where}.paths[{i}]: {p!r} is not a plain path such as /api")
    methods = tuple(x.upper() for x in _strings(data.get("methods"), f"{where}.methods"))
    return policies.RateLimit(
        name=str(data.get("name") or f"rate_limits[{index}]"),
        key=key,
        rate=rate,
        burst=float(burst),
        methods=methods,
        paths=paths,
        upstreams=_strings(data.get("upstreams"), f"{where}.upstreams"),
        shadow=_bool(data.get("shadow", False), f"{where}.shadow"),
        headers=_bool(data.get("headers", False), f"{where}.headers"),
        ports=_ports(data.get("ports"), f"{where}.ports"),
    )


def _rules_and_limits(
    data: Mapping[str, Any], where: str, *, outbound: bool
) -> tuple[tuple[policies.Rule, ...] | None, tuple[policies.RateLimit, ...]]:
    at = f"{where}." if where else ""
    rules: tuple[policies.Rule, ...] | None = None
    if "authorization" in data:
        section = _mapping(data["authorization"], f"{at}authorization")
        _known(section, f"{at}authorization", ("rules", "shadow"))
        items = section.get("rules") or []
        if not isinstance(items, list):
            raise ValueError(f"{at}authorization.rules: expected a list of rules")
        rules = tuple(
            _rule(r, f"{at}authorization.rules[{i}]", i, outbound=outbound)
            for i, r in enumerate(items)
        )
        if _bool(section.get("shadow", False), f"{at}authorization.shadow"):
            if not rules:
                raise ValueError(
                    f"{at}authorization.shadow: there are no rules to try; give the rules "
                    "to evaluate in shadow mode"
                )
            rules = tuple(replace(r, shadow=True) for r in rules)
    items = data.get("rate_limits") or []
    if not isinstance(items, list):
        raise ValueError(f"{at}rate_limits: expected a list of limits")
    limits = tuple(
        _rate_limit(x, f"{at}rate_limits[{i}]", i, outbound=outbound) for i, x in enumerate(items)
    )
    return rules, limits


def from_mapping(data: Mapping[str, Any], *, source: str) -> policies.Policy:
    """A policy from YAML-shaped data; ValueError names ``source``, the key and the fix."""
    try:
        _known(data, "", ("authentication", "authorization", "rate_limits", "outbound"))
        authn = None
        if data.get("authentication") is not None:
            authn = _authentication(data["authentication"], "authentication")
        rules, limits = _rules_and_limits(data, "", outbound=False)
        outbound = None
        if data.get("outbound") is not None:
            section = _mapping(data["outbound"], "outbound")
            _known(section, "outbound", ("authorization", "rate_limits"))
            out_rules, out_limits = _rules_and_limits(section, "outbound", outbound=True)
            outbound = policies.compile_policy(None, out_rules, out_limits)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    return policies.compile_policy(authn, rules, limits, outbound)
