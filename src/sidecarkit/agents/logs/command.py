"""The ``sidecarkit agent logs`` command.

It lives apart from the rest of the command line, and imports only what the agent needs, so
the log sidecar starts small: every megabyte it holds is a megabyte of each pod that runs it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click

from sidecarkit import errors
from sidecarkit.agents import process
from sidecarkit.agents.logs import running
from sidecarkit.agents.logs import settings as logs_settings

__all__ = ["logs"]


def _fail(exc: errors.SidecarkitError) -> NoReturn:
    click.echo(f"sidecarkit: error: {exc}", err=True)
    sys.exit(exc.exit_code)


@click.command("logs", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="SIDECARKIT_LOGS_CONFIG",
    help="YAML settings (flags and env win).",
)
@click.option(
    "--check-config",
    "check_path",
    type=click.Path(dir_okay=False),
    help="Validate this YAML file (with env and flags), print the pipeline, exit: 0 or 2.",
)
@click.option(
    "--paths",
    multiple=True,
    metavar="GLOB",
    help="Files to follow; repeatable. Env: SIDECARKIT_LOGS_PATHS (a,b).",
)
@click.option(
    "--parser",
    help="raw, json, cri, docker, container or regex. Env: SIDECARKIT_LOGS_PARSER.",
)
@click.option(
    "--multiline",
    help="Join stack traces: java, python, go, ruby, backslash. Env: SIDECARKIT_LOGS_MULTILINE.",
)
@click.option(
    "--sink",
    "sink_args",
    multiple=True,
    metavar="KIND[=ENDPOINT]",
    help="Where records go, e.g. stdout, stdout=json, loki=http://loki:3100, "
    "syslog=tcp://host:514; repeatable. Env: SIDECARKIT_LOGS_SINK and SIDECARKIT_LOGS_ENDPOINT.",
)
@click.option(
    "--offsets-dir",
    help="Where to save offsets (in the shared volume, to survive restarts).",
)
@click.option("--port", help="Port of /healthz, /ready and /metrics, 15100; 0 picks one.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="K=V",
    help="Static label for every record; repeatable. Env: SIDECARKIT_LOGS_LABELS.",
)
@click.option("--max-line", help="Longest line in bytes; longer ones are split or truncated.")
@click.option("--long-lines", type=click.Choice(["split", "truncate"]))
@click.option("--batch-bytes", help="Bytes of input per request, 524288.")
@click.option("--batch-wait", help="Longest wait before a partial batch is sent, 1s.")
@click.option("--max-inflight", help="Bytes read but unconfirmed before reading pauses, 2 MiB.")
@click.option("--max-retries", help="Give up on a batch after this many retries; default never.")
@click.option("--drain-timeout", help="On SIGTERM, how long to wait for the sinks, 25s.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def logs(
    config_path: str | None,
    check_path: str | None,
    paths: tuple[str, ...],
    parser: str | None,
    multiline: str | None,
    sink_args: tuple[str, ...],
    offsets_dir: str | None,
    port: str | None,
    labels: tuple[str, ...],
    max_line: str | None,
    long_lines: str | None,
    batch_bytes: str | None,
    batch_wait: str | None,
    max_inflight: str | None,
    max_retries: str | None,
    drain_timeout: str | None,
    log_level: str,
) -> None:
    """Follow the app's log files and ship every line, at least once, with the pod's identity."""

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config_path = check_path or config_path
    parser_spec: Any = None
    if parser or multiline:
        parser_spec = {"format": parser or "raw", "multiline": multiline}
    given: dict[str, Any] = {
        "paths": ",".join(paths),
        "parser": parser_spec,
        "sinks": list(sink_args),
        "offsets_dir": offsets_dir,
        "port": port,
        "labels": ",".join(labels),
        "max_line": max_line,
        "long_lines": long_lines,
        "batch_bytes": batch_bytes,
        "batch_wait": batch_wait,
        "max_inflight": max_inflight,
        "max_retries": max_retries,
        "drain_timeout": drain_timeout,
    }
    given = {k: v for k, v in given.items() if v}

    def load() -> logs_settings.Settings:
        """The file's settings under env and flags: at start, and again on each reload."""
        config = logs_settings.Settings()
        if config_path:
            from sidecarkit import configfiles  # noqa: PLC0415 - YAML only when asked for

            data = configfiles.load_mapping(config_path)
            config = logs_settings.from_mapping(data, source=config_path, base=config)
        config = logs_settings.from_env(base=config)
        return logs_settings.from_mapping(given, source="options", base=config)

    try:
        config = load()
        if check_path:
            from sidecarkit.agents.logs import checking  # noqa: PLC0415 - only for the check

            click.echo(checking.check(config), nl=False)
            click.echo(f"{check_path}: ok", err=True)
            return
        instance = running.Agent(config, load=load, config_path=config_path)
    except (ValueError, errors.SidecarkitError) as exc:
        # Settings that are wrong stop the agent before it starts, with exit status 2.
        _fail(errors.InputError(str(exc)))
    process.run_agent(instance)
