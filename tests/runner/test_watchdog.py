"""The orphan watchdog starts cheaply: it is started before the pod's first container."""

from __future__ import annotations

import os
import subprocess
import sys

from sidecarkit.runner import containing, watchdog
from tests.support.imports import imported_by


def test_the_watchdog_imports_nothing_beyond_the_few_standard_modules_it_needs() -> None:
    # The interpreter's own start-up imports (encodings, codecs, io, os, ...) are allowed; the
    # package, typing, re and pathlib would cost the runner's start-up some 20 ms of CPU.
    imported = imported_by(
        "-c",
        containing._START_WATCHDOG,
        os.path.dirname(watchdog.__file__),
        "nothing-carries-this-mark.",
        "",
        interpreter=("-I", "-S"),
    )
    assert "watchdog" in imported
    for heavy in ("sidecarkit", "typing", "re", "pathlib", "subprocess", "ctypes"):
        assert heavy not in imported


def test_the_watchdog_kills_the_groups_it_was_told_about_when_its_input_ends() -> None:
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    dog = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            containing._START_WATCHDOG,
            os.path.dirname(watchdog.__file__),
            "nothing-carries-this-mark.",
            "",
        ],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        assert dog.stdin is not None
        dog.stdin.write(f"add {victim.pid}\n")
        dog.stdin.close()
        assert dog.wait(timeout=60) == 0
        assert victim.wait(timeout=60) == -9
    finally:
        for process in (victim, dog):
            if process.poll() is None:
                process.kill()
                process.wait()
