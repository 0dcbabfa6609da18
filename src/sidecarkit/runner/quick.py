"""``sidecarkit run`` for a plain command line, without importing click.

click and what it imports (``inspect``, ``uuid``, ``datetime``) cost a good share of the
runner's start-up, which is time before the pod's first container starts. A command line made
only of the options ``run`` knows, each with a value it accepts, is read here and started
directly; anything else (``--help``, an unknown or misspelled option, a value click would
refuse, a missing manifest) goes to the click command in ``command``, which says what is wrong
exactly as it always has. So this reader never produces an error of its own: it only says
"plain" or "ask click".
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

from sidecarkit import durations, errors, shell

__all__ = ["main", "parse", "start"]

_FLAGS: Final = {"--inject": "inject", "--lenient": "lenient", "--keep": "keep"}
_VALUES: Final = {
    "--config": "config_path",
    "--command": "commands",
    "--grace": "grace",
    "--backoff-scale": "backoff_scale",
    "--events": "events_format",
    "--status": "status",
}
_CHOICES: Final = {"events_format": ("text", "json", "none"), "status": ("auto", "on", "off")}
_BACKOFF_MAX: Final = 1e6
"""The largest ``--backoff-scale`` the click option accepts."""


def parse(argv: Sequence[str]) -> dict[str, Any] | None:
    """The parameters of ``run_pod`` for ``argv``, or None when click should read it."""
    params: dict[str, Any] = {
        "manifest": None,
        "inject": False,
        "config_path": None,
        "commands": [],
        "grace": None,
        "backoff_scale": 1.0,
        "events_format": None,
        "keep": False,
        "status": "auto",
        "lenient": False,
    }
    args = iter(argv)
    for arg in args:
        if arg in _FLAGS:
            params[_FLAGS[arg]] = True
            continue
        name, eq, value = arg.partition("=")
        if name in _VALUES:
            if not eq:
                following = next(args, None)
                if following is None or following.startswith("-"):
                    return None  # click decides what a missing or dash-led value means
                value = following
            key = _VALUES[name]
            if key == "commands":
                params[key].append(value)
            elif not _accepts(key, value):
                return None
            else:
                params[key] = value
        elif (arg == "-" or not arg.startswith("-")) and params["manifest"] is None:
            params["manifest"] = arg
        else:
            return None  # --help, an option run does not know, a second manifest, "--"
    manifest = params["manifest"]
    if manifest is None or (manifest != "-" and os.path.isdir(manifest)):
        return None
    params["commands"] = tuple(params["commands"])
    params["backoff_scale"] = float(params["backoff_scale"])
    return params


def _accepts(key: str, value: str) -> bool:
    """Whether the click option behind ``key`` takes ``value`` as it is."""
    if key in _CHOICES:
        return value in _CHOICES[key]
    if key == "backoff_scale":
        try:
            number = float(value)
        except ValueError:
            return False
        return not math.isnan(number) and 0 < number <= _BACKOFF_MAX
    if key == "grace":
        try:
            durations.seconds(value)
        except ValueError:
            return False
    return True


def start(
    *,
    manifest: str,
    inject: bool,
    config_path: str | None,
    commands: tuple[str, ...],
    grace: float | None,
    backoff_scale: float,
    events_format: str | None,
    keep: bool,
    status: str,
    lenient: bool,
) -> int:
    """Read the manifest and run its pod; the exit code (see ``command``)."""
    from sidecarkit.runner import launching  # noqa: PLC0415

    source, text = shell.read(manifest)
    documents = _documents(text, source)
    if inject:
        documents = _inject(documents, config_path)
    overrides: dict[str, list[str]] = {}
    if commands:
        import shlex  # noqa: PLC0415
    for item in commands:
        name, eq, command = item.partition("=")
        if not eq or not name or not command.strip():
            raise errors.InputError(
                f"--command {item!r}: write it as NAME='program args', e.g. app='python app.py'"
            )
        overrides[name] = shlex.split(command)
    return launching.launch(
        documents,
        commands=overrides,
        backoff_scale=backoff_scale,
        grace=grace,
        events_format=events_format,
        keep=keep,
        status=status,
        lenient=lenient,
    )


def _documents(text: str, source: str) -> list[Any]:
    """The manifest's documents as plain data; JSON without loading the YAML round-tripper."""
    if text.lstrip().startswith("{"):
        import json  # noqa: PLC0415

        try:
            return [json.loads(text)]
        except ValueError:
            pass  # the YAML reader says what is wrong, with the line and column
    from sidecarkit.k8s import manifests  # noqa: PLC0415

    return [manifests.to_plain(d.data) for d in manifests.load_stream(text, source=source)]


def _inject(documents: list[Any], config_path: str | None) -> list[Any]:
    from types import MappingProxyType  # noqa: PLC0415

    from sidecarkit import configfiles  # noqa: PLC0415
    from sidecarkit.injection import configs, facts, injecting  # noqa: PLC0415
    from sidecarkit.k8s import manifests  # noqa: PLC0415

    config = configfiles.load_config(config_path) if config_path else configs.Config()
    cluster = facts.Facts(namespace_labels=MappingProxyType({"sidecarkit.io/inject": "true"}))
    return [manifests.to_plain(injecting.inject(d, config, cluster)[0]) for d in documents]


def main(argv: Sequence[str]) -> None:
    """``sidecarkit run ARGV``: started here when plain, else by the click command."""
    params = parse(argv)
    if params is None:
        from sidecarkit.runner.command import run_pod  # noqa: PLC0415

        run_pod.main(args=list(argv), prog_name="sidecarkit run")
        return
    grace = params.pop("grace")
    try:
        code = start(**params, grace=durations.seconds(grace) if grace else None)
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    sys.exit(code)
