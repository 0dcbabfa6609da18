"""Settings of ``sidecarkit agent logs``: flags, ``SIDECARKIT_LOGS_*`` env, or YAML.

Flags and env win over the YAML file (``--config``), which wins over the defaults. A YAML file
looks like this (every key optional)::

    sources:
      - name: app                       # names the source in metrics and in the offsets file
        paths: /var/log/app/*.log       # a glob
        parser: {format: json, multiline: java}
    sinks:                              # a mapping of names to sinks (or a list of sinks)
      errors:
        kind: loki
        endpoint: http://loki.monitoring:3100
        options: {tenant: shop}
        match: {level: [error, fatal]}  # routing: which records it takes (default: all)
      console:
        kind: stdout
    labels: {team: payments}            # static labels on every record
    pod_labels: [app, version]          # pod labels copied from the Downward API volume ("*": all)
    offsets_dir: /var/log/app/.sidecarkit
    batch_bytes: 524288
    batch_wait: 1s
    max_inflight: 2097152               # bytes read but not yet confirmed; reading pauses above
    max_lead: 8388608                   # bytes read past the committed offsets; pauses above
    spool_max: 268435456                # per sink: bytes spooled while it holds the others back
    spool_after: 5s                     # how long it must hold them back first
    max_line: 262144
    long_lines: split                   # or truncate
    retry_initial: 500ms
    retry_max: 30s
    max_retries: null                   # null: retry forever
    drain_timeout: 25s                  # on SIGTERM, how long to wait for the sinks
    stages:                             # processing between parse and ship (docs/logs-pipeline.md)
      - {type: grep, field: level, drop: ^debug$}

The pod's identity comes from the Downward API env the ``logs`` injection profile sets and
becomes the labels ``pod``, ``namespace``, ``node`` and ``container``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sidecarkit import durations
from sidecarkit.agents.identity import identity_labels, parse_labels
from sidecarkit.agents.logs import parsing, routing, shipping, sinks

if TYPE_CHECKING:  # imported when a config has stages: an agent without them starts smaller
    from sidecarkit.agents.logs import stages

__all__ = [
    "Settings",
    "SourceSettings",
    "effective_sources",
    "from_mapping",
    "identity_labels",
    "parse_sink",
]


@dataclass(frozen=True, slots=True)
class SourceSettings:
    name: str
    paths: str
    """A glob of files to follow."""
    parser: parsing.ParserSpec = field(default_factory=parsing.ParserSpec)


@dataclass(frozen=True, slots=True)
class Settings:
    sources: tuple[SourceSettings, ...] = (SourceSettings("app", "/var/log/app/*.log"),)
    sinks: tuple[sinks.Spec, ...] = (sinks.Spec("stdout"),)
    offsets_dir: str | None = None
    """Where offsets are saved; in the shared volume, so they survive agent restarts."""
    host: str = "0.0.0.0"
    port: int = 15100
    """Port of ``/healthz``, ``/ready`` and ``/metrics``."""
    labels: tuple[tuple[str, str], ...] = ()
    """Labels added to every record: the pod's identity, then static labels."""
    pod_labels: tuple[str, ...] = ()
    """Pod labels (from the Downward API volume) added to every record; ``*`` for all."""
    podinfo_dir: str | None = None
    tuning: shipping.Tuning = field(default_factory=shipping.Tuning)
    max_line: int = 256 << 10
    long_lines: str = "split"
    read_size: int = 1 << 20
    drain_timeout: float = 25.0
    """Seconds to wait for the sinks on SIGTERM; inside Kubernetes' default 30 s grace."""
    exit_when_done: tuple[str, ...] = ()
    """App containers whose ``<name>.done`` file ends the agent (legacy Job pods)."""
    lifecycle_dir: str = "/run/sidecarkit"
    stages: tuple[stages.Stage, ...] = ()
    """Processing stages, run in order on every record between parsing and shipping."""


def effective_sources(settings: Settings) -> tuple[SourceSettings, ...]:
    """The sources with a leading ``multiline`` stage moved into their parsers, which join
    lines before any stage runs; ValueError when a source already joins lines its own way."""
    if not settings.stages:
        return settings.sources
    from sidecarkit.agents.logs import stages  # noqa: PLC0415 - only with stages

    first = settings.stages[0]
    if not isinstance(first, stages.Multiline):
        return settings.sources
    out = []
    for source in settings.sources:
        parser = source.parser
        if parser.multiline or parser.multiline_start or parser.multiline_continue:
            raise ValueError(
                f"stages[0] ({first.name}): source {source.name!r} already has a multiline "
                "parser; keep one of the two (the source's parser or the multiline stage)"
            )
        out.append(
            replace(
                source,
                parser=replace(
                    parser,
                    multiline=first.preset,
                    multiline_start=first.start,
                    multiline_continue=first.more,
                    flush_timeout=first.flush_timeout,
                    max_lines=first.max_lines,
                ),
            )
        )
    return tuple(out)


def pod_labels(podinfo_dir: str | None, wanted: tuple[str, ...]) -> dict[str, str]:
    """Labels from the Downward API ``labels`` file (``key="value"`` lines), the wanted ones."""
    if not podinfo_dir or not wanted:
        return {}
    try:
        text = (Path(podinfo_dir) / "labels").read_text()
    except OSError:
        return {}
    labels: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if "*" in wanted or key in wanted:
            labels[key.strip()] = value
    return labels


def parse_sink(text: str, where: str) -> sinks.Spec:
    """``KIND`` or ``KIND=ENDPOINT``, as given to ``--sink``."""
    kind, _, endpoint = text.partition("=")
    kind = kind.strip()
    if kind not in sinks.KINDS:
        raise ValueError(
            f"{where}: unknown sink {kind!r}; use KIND or KIND=ENDPOINT with KIND one of "
            f"{', '.join(sorted(sinks.KINDS))} (e.g. loki=http://loki:3100)"
        )
    return sinks.Spec(kind, endpoint.strip() or None)


def _count(value: Any, where: str, *, low: int = 1) -> int:
    try:
        number = int(str(value).replace("_", ""))
    except ValueError:
        number = low - 1
    if number < low:
        raise ValueError(f"{where}: must be a whole number of at least {low}, not {value!r}")
    return number


_PARSER_KEYS: Final = (
    "format",
    "regex",
    "message_key",
    "time_key",
    "level_key",
    "multiline",
    "multiline_start",
    "multiline_continue",
    "flush_timeout",
    "max_lines",
)


def _parser(data: Any, where: str) -> parsing.ParserSpec:
    if isinstance(data, str):
        data = {"format": data}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: a parser is a format name or a mapping of {_PARSER_KEYS}")
    unknown = sorted(set(data) - set(_PARSER_KEYS))
    if unknown:
        raise ValueError(
            f"{where}: unknown parser option {unknown[0]!r}; accepted: {', '.join(_PARSER_KEYS)}"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key == "flush_timeout":
            values[key] = durations.setting(value, f"{where}.flush_timeout")
        elif key == "max_lines":
            values[key] = _count(value, f"{where}.max_lines")
        else:
            values[key] = str(value)
    spec = parsing.ParserSpec(**values)
    try:
        spec.validate()
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return spec


def _sources(data: Any, where: str) -> tuple[SourceSettings, ...]:
    if isinstance(data, str):
        data = [{"paths": p.strip()} for p in data.split(",") if p.strip()]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{where}: sources is a list of {{name, paths, parser}}")
    out = []
    names = set()
    for index, item in enumerate(data):
        here = f"{where}[{index}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("paths"), str):
            raise ValueError(f"{here}: each source needs paths: a glob such as /var/log/app/*.log")
        unknown = sorted(set(item) - {"name", "paths", "parser"})
        if unknown:
            raise ValueError(f"{here}: unknown key {unknown[0]!r}; accepted: name, paths, parser")
        name = str(item.get("name") or (f"source{index}" if index else "app"))
        if name in names:
            raise ValueError(f"{here}: source name {name!r} is used twice; names must differ")
        names.add(name)
        parser = _parser(item["parser"], f"{here}.parser") if "parser" in item else None
        out.append(SourceSettings(name, item["paths"], parser or parsing.ParserSpec()))
    return tuple(out)


_SINK_KEYS: Final = ("kind", "endpoint", "options", "name", "match")


def _sinks(data: Any, where: str) -> tuple[sinks.Spec, ...]:
    """A list of sinks (``KIND=URL`` strings or mappings), or a mapping of names to sinks."""
    if isinstance(data, str):
        data = [s for s in data.split(",") if s.strip()]
    items: list[tuple[str, Any, str | None]]
    if isinstance(data, Mapping) and data:
        items = [(f"{where}.{name}", item, str(name)) for name, item in data.items()]
    elif isinstance(data, list) and data:
        items = [(f"{where}[{index}]", item, None) for index, item in enumerate(data)]
    else:
        raise ValueError(
            f"{where}: sinks is a mapping of names to {{kind, endpoint, options, match}}, "
            "or a list of such mappings or KIND=URL strings"
        )
    out = []
    for here, item, name in items:
        if isinstance(item, str) and name is None:
            spec = parse_sink(item, here)
        elif isinstance(item, Mapping):
            unknown = sorted(str(k) for k in set(item) - set(_SINK_KEYS))
            if unknown:
                raise ValueError(
                    f"{here}: unknown key {unknown[0]!r}; accepted: {', '.join(_SINK_KEYS)}"
                )
            spec = parse_sink(str(item.get("kind", "")), here)
            options = item.get("options") or {}
            if not isinstance(options, Mapping):
                raise ValueError(f"{here}.options: must be a mapping")
            endpoint = item.get("endpoint")
            if name is not None and item.get("name") not in (None, name):
                raise ValueError(f"{here}: the sink is named by its key; remove `name`")
            spec = replace(
                spec,
                endpoint=str(endpoint) if endpoint is not None else None,
                options=dict(options),
                name=name or (str(item["name"]) if item.get("name") else None),
                match=(
                    routing.parse_match(item["match"], f"{here}.match")
                    if item.get("match") is not None
                    else None
                ),
            )
        else:
            raise ValueError(
                f"{here}: a sink is a mapping such as {{kind: loki, endpoint: http://loki:3100}}"
                + ("" if name else " or a KIND=ENDPOINT string")
            )
        try:
            sinks.create(spec)  # validates the endpoint and options now, not at the first batch
        except ValueError as exc:
            raise ValueError(f"{here}: {exc}") from exc
        out.append(spec)
    names = [s.name or s.kind for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: two sinks share a name; give them distinct `name`s")
    return tuple(out)


_TUNING: Final = {
    "batch_bytes": "count",
    "batch_wait": "seconds",
    "max_inflight": "count",
    "max_lead": "count",
    "poll": "seconds",
    "retry_initial": "seconds",
    "retry_max": "seconds",
    "max_retries": "count0",
    "checkpoint_interval": "seconds",
    "spool_max": "count0",
    "spool_after": "seconds",
}
_KEYS: Final = (
    "sources",
    "paths",
    "parser",
    "sinks",
    "offsets_dir",
    "host",
    "port",
    "labels",
    "pod_labels",
    "max_line",
    "long_lines",
    "read_size",
    "drain_timeout",
    "stages",
    *_TUNING,
)


def from_mapping(data: Mapping[str, Any], *, source: str, base: Settings | None = None) -> Settings:
    """Settings from a YAML mapping (or the CLI's collected options); ValueError says where."""
    settings = base or Settings()
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ValueError(
            f"{source}: unknown setting {unknown[0]!r}; accepted: {', '.join(sorted(_KEYS))}"
        )
    changes: dict[str, Any] = {}
    if "sources" in data:
        changes["sources"] = _sources(data["sources"], f"{source}: sources")
    if data.get("paths"):
        changes["sources"] = _sources(data["paths"], f"{source}: paths")
    if data.get("parser"):
        parser = _parser(data["parser"], f"{source}: parser")
        changes["sources"] = tuple(
            replace(s, parser=parser) for s in changes.get("sources", settings.sources)
        )
    if "sinks" in data:
        changes["sinks"] = _sinks(data["sinks"], f"{source}: sinks")
    if "stages" in data:
        from sidecarkit.agents.logs import stages  # noqa: PLC0415 - only with stages

        changes["stages"] = stages.from_config(data["stages"], f"{source}: stages")
    for key in ("offsets_dir", "host"):
        if data.get(key) is not None:
            changes[key] = str(data[key])
    if "port" in data:
        port = _count(data["port"], f"{source}: port", low=0)
        if port > 65535:
            raise ValueError(f"{source}: port must be a port number from 0 to 65535")
        changes["port"] = port
    if "labels" in data:
        changes["labels"] = (*settings.labels, *parse_labels(data["labels"], source))
    if "pod_labels" in data:
        wanted = data["pod_labels"]
        if isinstance(wanted, str):
            wanted = [w.strip() for w in wanted.split(",") if w.strip()]
        if not isinstance(wanted, list):
            raise ValueError(f"{source}: pod_labels is a list of label names, or [*] for all")
        changes["pod_labels"] = tuple(str(w) for w in wanted)
    for key in ("max_line", "read_size"):
        if key in data:
            changes[key] = _count(data[key], f"{source}: {key}", low=64)
    if "long_lines" in data:
        if data["long_lines"] not in ("split", "truncate"):
            raise ValueError(f"{source}: long_lines must be split or truncate")
        changes["long_lines"] = data["long_lines"]
    if "drain_timeout" in data:
        changes["drain_timeout"] = durations.setting(
            data["drain_timeout"], f"{source}: drain_timeout"
        )
    tuning: dict[str, Any] = {}
    for key, kind in _TUNING.items():
        if key not in data:
            continue
        value = data[key]
        where = f"{source}: {key}"
        if kind == "seconds":
            tuning[key] = durations.setting(value, where)
        elif kind == "count0":
            tuning[key] = None if value is None else _count(value, where, low=0)
        else:
            tuning[key] = _count(value, where)
    if tuning:
        changes["tuning"] = replace(settings.tuning, **tuning)
        final = changes["tuning"]
        if final.max_inflight < final.batch_bytes:
            raise ValueError(
                f"{source}: max_inflight ({final.max_inflight}) must be at least batch_bytes "
                f"({final.batch_bytes}), or no batch could fill up; twice or more keeps a sink "
                "busy while the next batch is read"
            )
    return replace(settings, **changes)


def from_env(env: Mapping[str, str] | None = None, *, base: Settings | None = None) -> Settings:
    """The ``SIDECARKIT_LOGS_*`` and Downward API env the injection profile sets."""
    env = os.environ if env is None else env
    settings = base or Settings()
    settings = replace(
        settings,
        labels=(*identity_labels(env), *settings.labels),
        podinfo_dir=env.get("SIDECARKIT_PODINFO_DIR") or settings.podinfo_dir,
        exit_when_done=tuple(n for n in env.get("SIDECARKIT_EXIT_WHEN_DONE", "").split(",") if n),
        lifecycle_dir=env.get("SIDECARKIT_LIFECYCLE_DIR", settings.lifecycle_dir),
    )
    given: dict[str, Any] = {}
    for key in (
        "paths",
        "parser",
        "offsets_dir",
        "labels",
        "pod_labels",
        "max_line",
        "long_lines",
        "batch_bytes",
        "batch_wait",
        "max_inflight",
        "max_retries",
        "drain_timeout",
    ):
        value = env.get(f"SIDECARKIT_LOGS_{key.upper()}")
        if value:
            given[key] = value
    if env.get("SIDECARKIT_LOGS_MULTILINE"):
        given["parser"] = {
            "format": env.get("SIDECARKIT_LOGS_PARSER") or "raw",
            "multiline": env["SIDECARKIT_LOGS_MULTILINE"],
        }
    sink = env.get("SIDECARKIT_LOGS_SINK")
    if sink:
        endpoint = env.get("SIDECARKIT_LOGS_ENDPOINT")
        given["sinks"] = [f"{sink}={endpoint}" if endpoint and "=" not in sink else sink]
    if env.get("SIDECARKIT_ADMIN_PORT"):
        given["port"] = env["SIDECARKIT_ADMIN_PORT"]
    return from_mapping(given, source="environment", base=settings) if given else settings
