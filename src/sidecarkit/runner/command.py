"""``sidecarkit run``: the command line of the local runner.

It lives apart from the rest of the CLI, and ``sidecarkit.entry`` dispatches to it before the
rest is imported, because its users wait for it: everything imported before the first
container starts is start-up time (the injection core is imported only for ``--inject``, the
YAML round-tripper only for YAML, TLS only for an HTTPS probe).

Exit codes: 0 the pod Succeeded (every main container exited 0, also after SIGTERM or SIGINT
when they exit 0 on the stop signal); otherwise the pod Failed and the code is the first
failing main container's exit code in spec order (128 + n for a death by signal n: 143 for
SIGTERM, 137 for SIGKILL), a failed init container's code, or 1 when no container exit code
applies (stopped before the main containers ran); 2 the manifest or an option is wrong and
nothing was started.
"""

from __future__ import annotations

import math
import sys

import click

from sidecarkit import durations, errors, shell
from sidecarkit.runner import quick

__all__ = ["run_pod"]


def _not_nan(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if math.isnan(value):
        raise click.BadParameter("nan is not a number; use one above 0, e.g. 0.01")
    return value


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("manifest", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--inject", is_flag=True, help="Inject sidecars first, as if the pod's namespace opted in."
)
@click.option("--config", "config_path", metavar="FILE", help="Injection config (--inject).")
@click.option(
    "--command",
    "commands",
    multiple=True,
    metavar="NAME='PROGRAM ARGS'",
    help="The command of a container whose image cannot be pulled here; repeatable.",
)
@click.option("--grace", help="Termination grace period, overriding the pod's (e.g. 5s).")
@click.option(
    "--backoff-scale",
    type=click.FloatRange(min=0, min_open=True, max=1e6),
    callback=_not_nan,
    default=1.0,
    show_default=True,
    help="Multiply restart backoff (10 s to 300 s) by this (> 0), for tests and demos.",
)
@click.option(
    "--events",
    "events_format",
    type=click.Choice(["text", "json", "none"]),
    default=None,
    help="Lifecycle events on stderr [default: text; none under the live status table].",
)
@click.option(
    "--lenient", is_flag=True, help="Ignore (with a warning) fields the Pod schema does not know."
)
@click.option("--keep", is_flag=True, help="Keep the pod's emptyDir volumes afterwards.")
@click.option(
    "--status",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="A live status table on a terminal (auto: when stderr is one).",
)
def run_pod(
    manifest: str,
    inject: bool,
    config_path: str | None,
    commands: tuple[str, ...],
    grace: str | None,
    backoff_scale: float,
    events_format: str | None,
    keep: bool,
    status: str,
    lenient: bool,
) -> None:
    """Run a Pod (or a workload's pod template) here, as processes, with sidecar lifecycle.

    Exits 0 when the pod Succeeded, else with the failing main container's exit code (1 when
    none applies); 2 when the manifest or an option is wrong.
    """
    try:
        try:
            seconds = durations.seconds(grace) if grace else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--grace") from exc
        code = quick.start(
            manifest=manifest,
            inject=inject,
            config_path=config_path,
            commands=commands,
            grace=seconds,
            backoff_scale=backoff_scale,
            events_format=events_format,
            keep=keep,
            status=status,
            lenient=lenient,
        )
    except errors.SidecarkitError as exc:
        shell.fail(exc)
    sys.exit(code)
