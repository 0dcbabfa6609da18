"""``python -m sidecarkit``: the same as the ``sidecarkit`` command."""

from sidecarkit.entry import main

main()
