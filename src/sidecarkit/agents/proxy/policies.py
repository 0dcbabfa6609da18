"""The proxy's security policy: who may call the app, how callers prove who they are, how often.

A policy file (``policy:`` in the proxy's settings, ``--policy``) looks like this; every
section is optional::

    authentication:                   # end users: a JWT or an API key
      required: true                  # no credential: 401 (default true when a method is set)
      realm: orders                   # in WWW-Authenticate
      jwt:
        - issuer: https://auth.example.com
          audiences: [orders-api]     # the token's aud must name one (none given: any)
          jwks_url: https://auth.example.com/.well-known/jwks.json   # or jwks_file: PATH
          algorithms: [RS256, ES256, EdDSA]
          clock_skew: 30s             # leeway on exp and nbf
          claims_to_headers: {sub: x-user-id, email: x-user-email}
          forward_token: false        # keep Authorization for the app (default: removed)
      api_keys:
        file: /etc/sidecarkit/api-keys/keys   # NAME sha256:SALT:HASH lines (a mounted Secret)
        header: x-api-key
        name_header: x-api-key-name   # the key's name goes to the app here
    authorization:                    # with rules: present, what no rule allows is denied
      rules:
        - name: no-admin-from-outside
          action: deny
          paths: [/admin]
          namespaces: [public]        # the namespace in the peer's SPIFFE ID
        - name: lock-reports          # tried on real traffic first: counted and
          action: deny                # logged as it would decide, never refusing
          paths: [/reports]
          shadow: true
        - name: frontend-reads
          action: allow
          peers: [spiffe://cluster.local/ns/shop/sa/frontend]
          methods: [GET, HEAD]
          paths: [/api]
          headers: {x-tenant: [acme, "beta-*"]}
          subjects: ["*"]             # any authenticated user (JWT sub or API key name)
          ports: [8080]               # on these inbound ports only (default: every one)
        - name: db-clients            # on a protocol: tcp port: peers and namespaces only
          action: allow
          namespaces: [shop]
          ports: [5432]
    rate_limits:
      - name: per-client
        key: client_ip                # or header:NAME, subject, peer
        rate: 100/s                   # or 6000/m, 10/h
        burst: 200                    # default: one second's worth
        ports: [8080]                 # default: every inbound port (tcp: per connection)
    outbound:                         # what the app may call: outbound ports, HTTP-proxy mode
      authorization:
        rules:
          - {name: payments-reads, action: allow, upstreams: [payments], methods: [GET]}
      rate_limits:
        - {name: to-payments, key: upstream, rate: 50/s, upstreams: [payments]}

Rules are Istio's ``AuthorizationPolicy`` semantics, not first-match: any matching ``deny``
rule denies (so an allow rule placed earlier cannot undo it); otherwise any matching
``allow`` rule allows; otherwise the request is denied. Inside a rule every condition given
must hold (AND); inside a condition any listed value may match (OR). Patterns are exact,
``*`` (present at all), ``prefix*`` or ``*suffix``.

Headers are matched in the way least kind to the caller: for an ``allow`` every value the
request carries for the name must match, for a ``deny`` one is enough, so repeating a header
can neither earn an allow nor dodge a deny. Paths are matched by whole segments (``/api``
matches ``/api`` and ``/api/orders``, not ``/apix``) after percent-decoding, dropping
``;`` path parameters (``/admin;jsessionid=1`` is ``/admin`` to Tomcat and Spring) and merging
``//``; a target with dot segments (``/a/../b``, also encoded or with ``;`` parameters), an
encoded ``/`` or ``\\``, or a bad ``%`` escape is refused outright (400), because the app
might read it differently from the policy (the path-confusion bypasses known from Tomcat's
``..;`` and Envoy's ``%2F``).

Pure: no I/O. ``policyfiles`` turns the file's data into a ``Policy``; the shell
(``guarding``, ``keysources``) reads files, fetches keys and calls in here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

__all__ = [
    "ALGORITHMS",
    "HTTP_FIELDS",
    "ApiKeys",
    "Authentication",
    "Decision",
    "JwtProvider",
    "Policy",
    "RateLimit",
    "Request",
    "Rule",
    "compile_policy",
    "namespace_of",
    "normal_path",
    "peer_identity",
]

ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                     "ES256", "ES384", "ES512", "EdDSA")  # fmt: skip
"""Public-key algorithms only: with no shared secret, HS256 signed with a public key (the
algorithm-confusion attack) and ``none`` have nothing to verify against and are refused."""
DEFAULT_ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")
KEY_KINDS: Final = ("client_ip", "subject", "peer", "header:NAME")
OUTBOUND_KEY_KINDS: Final = ("upstream", "client_ip", "header:NAME")
"""The app's own requests carry no peer identity and no end user: on the outbound side a
bucket is per upstream, per client address or per header value."""


@dataclass(frozen=True, slots=True)
class JwtProvider:
    issuer: str
    audiences: tuple[str, ...] = ()
    """The token's ``aud`` must name one of these; empty: any audience."""
    jwks_url: str | None = None
    jwks_file: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    clock_skew: float = 30.0
    """Seconds of leeway on ``exp`` and ``nbf``: clocks in a cluster drift by a few seconds;
    Istio and Envoy allow 60 s, 30 s keeps an expired token's afterlife shorter."""
    claims_to_headers: tuple[tuple[str, str], ...] = ()
    """(claim, header) pairs: the verified claim's value goes to the app in that header."""
    forward_token: bool = False
    """Keep ``Authorization`` for the app; removed by default as Istio and Envoy do."""


@dataclass(frozen=True, slots=True)
class ApiKeys:
    file: str
    header: str = "x-api-key"
    name_header: str = "x-api-key-name"


@dataclass(frozen=True, slots=True)
class Authentication:
    jwt: tuple[JwtProvider, ...] = ()
    api_keys: ApiKeys | None = None
    required: bool = True
    """No credential at all: 401. False lets anonymous requests on to the rules (which may
    still demand ``subjects``)."""
    realm: str = "sidecarkit"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    action: str
    peers: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    headers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    subjects: tuple[str, ...] = ()
    upstreams: tuple[str, ...] = ()
    """Outbound rules: the upstream names (as in the proxy's settings) the request goes to."""
    shadow: bool = False
    """Evaluated, counted and logged as if enforced, but never decides (Envoy's
    ``shadow_rules``, Istio's dry-run): to try a rule on real traffic before enforcing it."""
    ports: tuple[int, ...] = ()
    """Inbound ports (as the proxy listens on them) the rule applies on; empty: every one.
    Istio's ``to.operation.ports``: what keeps an HTTP rule off a ``protocol: tcp`` port."""

    def http_fields(self) -> tuple[str, ...]:
        """The conditions that need an HTTP request: an L4 connection has none of them."""
        return tuple(key for key in HTTP_FIELDS if getattr(self, key))


HTTP_FIELDS: Final = ("methods", "paths", "headers", "subjects")


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str
    key: str
    """``client_ip``, ``subject``, ``peer`` or ``header:NAME`` (lower-case)."""
    rate: float
    """Tokens a second."""
    burst: float
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    upstreams: tuple[str, ...] = ()
    shadow: bool = False
    """Its bucket fills and empties, an empty one is counted and logged, nothing is refused."""
    headers: bool = False
    """Admitted responses carry ``RateLimit-*`` fields too (429s always do)."""
    ports: tuple[int, ...] = ()
    """Inbound ports the limit applies on; empty: every one (on a tcp port: per connection)."""

    def http_fields(self) -> tuple[str, ...]:
        """What needs an HTTP request: a key an L4 connection lacks, methods, paths."""
        key = () if self.key in ("client_ip", "peer") else (f"key {self.key}",)
        return (*key, *(name for name in ("methods", "paths") if getattr(self, name)))


class Request:
    """What the policy sees of a request; built by the shell from the parsed head.

    A plain slotted class rather than a frozen dataclass: one is made per request, and a frozen
    dataclass's ``__init__`` costs several times as much."""

    __slots__ = ("client", "headers", "method", "path", "peer", "subject", "upstream")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        headers: Mapping[bytes, tuple[bytes, ...]],
        peer: str = "",
        subject: str = "",
        client: bytes = b"",
        upstream: str = "",
    ) -> None:
        self.method = method
        self.path = path
        """Normalized by ``normal_path``."""
        self.headers = headers
        """Lower-case names: the fields the rules and limits read, claims as forwarded."""
        self.peer = peer
        self.subject = subject
        self.client = client
        self.upstream = upstream
        """The upstream the request goes to (``app`` on the inbound side)."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str
    """The rule that decided, or ``default``."""


_Match = Callable[[Request], bool]


@dataclass(frozen=True, slots=True)
class Policy:
    authentication: Authentication | None = None
    rules: tuple[Rule, ...] | None = None
    """None: no authorization section, everything is allowed; empty: everything denied."""
    rate_limits: tuple[RateLimit, ...] = ()
    outbound: Policy | None = None
    """The ``outbound:`` section: rules and limits on what the app calls (no authentication)."""
    _deny: tuple[tuple[str, _Match], ...] = field(default=(), repr=False, compare=False)
    _allow: tuple[tuple[str, _Match], ...] = field(default=(), repr=False, compare=False)
    _limits: tuple[tuple[RateLimit, _Match], ...] = field(default=(), repr=False, compare=False)
    _enforced: bool = field(default=False, repr=False, compare=False)
    _audit: Policy | None = field(default=None, repr=False, compare=False)

    def authorize(self, request: Request) -> Decision:
        """The decision of the rules not in shadow mode."""
        if not self._enforced:
            return _ALLOWED
        for name, match in self._deny:
            if match(request):
                return Decision(False, name)
        for name, match in self._allow:
            if match(request):
                return Decision(True, name)
        return _DEFAULT_DENY

    @property
    def shadowed(self) -> bool:
        """Some rule is in shadow mode: ``audit`` has something to say."""
        return self._audit is not None

    def audit(self, request: Request) -> Decision:
        """The decision the rules would make with the shadow ones enforced too."""
        assert self._audit is not None
        return self._audit.authorize(request)

    def on_port(self, port: int) -> Policy:
        """The policy as one inbound port sees it: the rules whose ``ports`` leave it out are
        dropped (decided once, when a listener takes the policy). Default deny stays the whole
        policy's: a port no enforced rule names is denied everything when some rule is
        enforced elsewhere, as an Istio ALLOW policy denies a port none of its rules name."""
        rules = self.rules
        scoped = rules is not None and any(r.ports for r in rules)
        if not scoped and not any(x.ports for x in self.rate_limits):
            return self
        kept = None if rules is None else tuple(r for r in rules if not r.ports or port in r.ports)
        limits = tuple(x for x in self.rate_limits if not x.ports or port in x.ports)
        return compile_policy(
            self.authentication, kept, limits, self.outbound,
            enforced=rules is not None and (not rules or any(not r.shadow for r in rules)),
        )  # fmt: skip

    def limits_for(self, request: Request) -> list[RateLimit]:
        """The rate limits whose methods and paths take in this request."""
        return [limit for limit, match in self._limits if match(request)]

    def scope_of(self, limit: RateLimit) -> _Match | None:
        """The check of a limit's methods and paths; None when it takes in every request."""
        for known, match in self._limits:
            if known is limit:
                return None if not (limit.methods or limit.paths or limit.upstreams) else match
        raise KeyError(limit.name)


_ALLOWED: Final = Decision(True, "no-rules")
_DEFAULT_DENY: Final = Decision(False, "default")


# -- paths ------------------------------------------------------------------------------
_PLAIN: Final = b"!$&'()*+,-./0123456789:=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
"""RFC 3986 path characters without ``%`` and ``;``: a path of these alone needs no work."""
_ESCAPE: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
_SLASHES: Final = re.compile(rb"%(2[fF]|5[cC])")
_CONTROL: Final = re.compile(rb"[\x00-\x1f\x7f\\]")
_DOTS: Final = re.compile(rb"/\.\.?(/|;|$)")
_RUNS: Final = re.compile(rb"//+")
_PARAMS: Final = re.compile(rb";[^/]*")


def normal_path(target: bytes) -> tuple[bytes, str]:
    """The path of a request target as the policy matches it, or (b"", why) when it is
    ambiguous and must be refused: see the module docstring."""
    path = target.partition(b"?")[0]
    plain = not path.translate(None, _PLAIN) and b"/." not in path and b"//" not in path
    if plain and path[:1] == b"/":  # the common case: nothing to decode, merge or refuse
        return path, ""
    path = path.partition(b"#")[0]
    if not path.startswith(b"/"):
        return b"", "the target is not a path starting with /"
    if b"%" in path:
        if path.count(b"%") != len(_ESCAPE.findall(path)):
            return b"", "a % in the path does not start a %XX escape"
        if _SLASHES.search(path):
            return b"", "the path holds an encoded / or \\ (%2F, %5C)"
        path = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), path)
    if _CONTROL.search(path):
        return b"", "the path holds a backslash or a control character"
    if b"/." in path and _DOTS.search(path):
        return b"", "the path has a . or .. segment"
    if b";" in path:  # path parameters, which Tomcat and Spring drop: /admin;x is /admin
        path = _PARAMS.sub(b"", path)
    if b"//" in path:
        path = _RUNS.sub(b"/", path)
    return path, ""


def _path_matcher(prefixes: tuple[str, ...]) -> _Match | None:
    """None when a prefix is ``/``: every path matches, there is nothing to check."""
    exact = tuple(p.encode().rstrip(b"/") or b"/" for p in prefixes)
    if b"/" in exact:
        return None
    below = tuple(p + b"/" for p in exact)
    return lambda r: r.path in exact or r.path.startswith(below)


# -- patterns ---------------------------------------------------------------------------
def _pattern(text: str) -> Callable[[str], bool]:
    if text == "*":
        return bool
    if text.endswith("*"):
        head = text[:-1]
        return lambda v: v.startswith(head)
    if text.startswith("*"):
        tail = text[1:]
        return lambda v: v.endswith(tail)
    return lambda v: v == text


def _any_of(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    if "*" in patterns:
        return bool
    exact = frozenset(p for p in patterns if not p.startswith("*") and not p.endswith("*"))
    tests = tuple(_pattern(p) for p in patterns if p not in exact)
    if not tests:
        return exact.__contains__
    return lambda v: v in exact or any(t(v) for t in tests)


_NS: Final = re.compile(r"^spiffe://[^/]+/ns/([^/]+)/sa/[^/]+$")


def peer_identity(verified: bytes | None) -> str:
    """The SPIFFE ID in what the mTLS stage verified of the client: an
    ``x-forwarded-client-cert`` element (``By=...;Hash=...;URI=spiffe://...``) or the bare ID;
    "" for a client without one (plaintext: None or b"")."""
    if not verified:
        return ""
    if verified.startswith(b"spiffe://"):
        return verified.decode()
    for part in verified.split(b";"):
        if part[:4].upper() == b"URI=":
            return part[4:].strip(b'"').decode()
    return ""


def namespace_of(peer: str) -> str:
    """The namespace in a SPIFFE ID ``spiffe://TD/ns/NS/sa/SA``; empty for any other."""
    m = _NS.match(peer)
    return m.group(1) if m else ""


def _rule_matcher(rule: Rule) -> _Match:
    checks: list[_Match] = []
    if rule.peers:
        peers = _any_of(rule.peers)
        checks.append(lambda r: peers(r.peer))
    if rule.namespaces:
        spaces = _any_of(rule.namespaces)
        checks.append(lambda r: spaces(namespace_of(r.peer)))
    if rule.methods:
        methods = frozenset(m.encode() for m in rule.methods)
        checks.append(lambda r: r.method in methods)
    paths = _path_matcher(rule.paths) if rule.paths else None
    if paths is not None:
        checks.append(paths)
    for name, values in rule.headers:
        checks.append(_header_matcher(name.encode(), values, every=rule.action == "allow"))
    if rule.subjects:
        subjects = _any_of(rule.subjects)
        checks.append(lambda r: subjects(r.subject))
    if rule.upstreams:
        upstreams = _any_of(rule.upstreams)
        checks.append(lambda r: upstreams(r.upstream))
    return _all(checks)


def _all(checks: list[_Match]) -> _Match:
    """One matcher for all ``checks`` (a loop in a function costs less than ``all()`` over a
    generator, and most rules have one or two conditions)."""
    if not checks:
        return lambda r: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda r: first(r) and second(r)
    every = tuple(checks)

    def match(r: Request) -> bool:
        for check in every:  # noqa: SIM110 - no generator on the request path
            if not check(r):
                return False
        return True

    return match


def _header_matcher(name: bytes, values: tuple[str, ...], *, every: bool) -> _Match:
    test = _any_of(values)

    def match(r: Request) -> bool:
        got = r.headers.get(name, ())
        if not got:
            return False
        found = (test(v.decode("latin-1")) for v in got)
        return all(found) if every else any(found)

    return match


def _scope_matcher(limit: RateLimit) -> _Match:
    checks: list[_Match] = []
    if limit.methods:
        methods = frozenset(m.encode() for m in limit.methods)
        checks.append(lambda r: r.method in methods)
    paths = _path_matcher(limit.paths) if limit.paths else None
    if paths is not None:
        checks.append(paths)
    if limit.upstreams:
        upstreams = _any_of(limit.upstreams)
        checks.append(lambda r: upstreams(r.upstream))
    return _all(checks)


def compile_policy(
    authentication: Authentication | None,
    rules: tuple[Rule, ...] | None,
    rate_limits: tuple[RateLimit, ...] = (),
    outbound: Policy | None = None,
    *,
    enforced: bool | None = None,
) -> Policy:
    """A policy with its rules turned into matchers once, so a request costs calls, not
    interpretation of the file.

    Shadow rules are left out of the enforced decision; when every rule is a shadow one,
    nothing is enforced (as if the section were absent, not an empty deny-all). ``audit``
    decides with all of them. ``enforced`` overrides that test (``Policy.on_port``: the
    rules of one port are a part of the file, whose other rules may be enforced)."""
    rules_seen = rules or ()
    enforcing = tuple(r for r in rules_seen if not r.shadow)
    if enforced is None:
        enforced = rules is not None and (bool(enforcing) or not rules_seen)
    audit = None
    if len(enforcing) < len(rules_seen):
        audit = compile_policy(None, tuple(replace(r, shadow=False) for r in rules_seen))
    return Policy(
        authentication=authentication,
        rules=rules,
        rate_limits=rate_limits,
        outbound=outbound,
        _deny=tuple((r.name, _rule_matcher(r)) for r in enforcing if r.action == "deny"),
        _allow=tuple((r.name, _rule_matcher(r)) for r in enforcing if r.action == "allow"),
        _limits=tuple((x, _scope_matcher(x)) for x in rate_limits),
        _enforced=enforced,
        _audit=audit,
    )
