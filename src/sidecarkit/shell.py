"""What every command of the ``sidecarkit`` command line does alike: read an input, parse
``--namespace-labels``, and end with an error message and the error's exit code."""

from __future__ import annotations

import sys
from typing import NoReturn

from sidecarkit import errors

__all__ = ["fail", "namespace_labels", "read"]


def fail(exc: errors.SidecarkitError) -> NoReturn:
    import click  # noqa: PLC0415 - `sidecarkit run` starts without click (runner.quick)

    click.echo(f"sidecarkit: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def read(path: str) -> tuple[str, str]:
    """(source name, text) of ``-`` (stdin) or a file."""
    if path == "-":
        return "<stdin>", sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return path, f.read()
    except OSError as exc:
        raise errors.InputError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise errors.ManifestError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc


def namespace_labels(text: str | None) -> dict[str, str]:
    """``--namespace-labels a=b,c=d`` as a mapping."""
    if not text:
        return {}
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise errors.ConfigError(
                f"--namespace-labels {text!r}: {part!r} is not key=value; "
                "write them as sidecarkit.io/inject=true,team=a"
            )
        labels[key.strip()] = value.strip()
    return labels
