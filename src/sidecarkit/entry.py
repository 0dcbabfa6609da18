"""The ``sidecarkit`` console script.

``sidecarkit agent logs`` and ``sidecarkit agent proxy`` are dispatched before the rest of the
command line is imported: the sidecars run in every pod that opts in, and the injection core,
the YAML round-tripper and the HTTP client it would otherwise load cost them memory and
start-up time for nothing. ``sidecarkit run`` likewise: its start-up time is the time before
the pod's first container starts, so a plain ``run`` command line does without click too
(``runner.quick``).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    if sys.argv[1:3] == ["agent", "logs"]:
        from sidecarkit.agents.logs.command import logs  # noqa: PLC0415

        logs.main(args=sys.argv[3:], prog_name="sidecarkit agent logs")
        return
    if sys.argv[1:3] == ["agent", "proxy"]:
        from sidecarkit.agents.proxy.command import proxy  # noqa: PLC0415

        proxy.main(args=sys.argv[3:], prog_name="sidecarkit agent proxy")
        return
    if sys.argv[1:2] == ["run"]:
        from sidecarkit.runner import quick  # noqa: PLC0415

        quick.main(sys.argv[2:])
        return
    from sidecarkit.cli import main as everything  # noqa: PLC0415

    everything()
