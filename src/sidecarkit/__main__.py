"""``python -m sidecarkit``: the same as the ``sidecarkit`` command."""

from sidecarkit.cli import main

main()
