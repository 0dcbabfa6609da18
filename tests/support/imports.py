"""What a Python process imported, read from ``-X importtime``: start-up cost tests use it."""

from __future__ import annotations

import subprocess
import sys


def imported_by(*args: str, interpreter: tuple[str, ...] = ()) -> set[str]:
    """Run ``python [interpreter...] -X importtime ARGS`` and return the modules it imported.

    The run must succeed (its stderr is the assertion's message otherwise)."""
    result = subprocess.run(
        [sys.executable, *interpreter, "-X", "importtime", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
