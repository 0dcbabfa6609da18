"""Which build of sidecarkit a benchmark measures: the image's (compiled) unless told otherwise.

The image compiles the modules listed under ``[tool.sidecarkit] compiled`` in pyproject.toml
with mypyc (setup.py). A benchmark of a path those modules serve measures that build: it brings
build/compiled up to date with ``make compiled`` (a no-op when nothing changed), puts it first
on the measured process's PYTHONPATH and checks there that the modules really are compiled.
``pure=True`` measures the Python sources instead, for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPILED = ROOT / "build" / "compiled"

_CHECK = """
import importlib, importlib.machinery, sys
for name in sys.argv[1:]:
    path = importlib.import_module(name).__file__ or ""
    if not path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        sys.exit(f"{name} is not compiled: {path}")
"""


def option(parser: argparse.ArgumentParser) -> None:
    """The ``--pure`` option of every benchmark that measures a compiled path."""
    parser.add_argument(
        "--pure",
        action="store_true",
        help="Measure the Python sources, not the compiled build the image ships.",
    )


def environment(*, pure: bool = False, probe: str = "sidecarkit.webhook.serving") -> dict[str, str]:
    """The environment to start a measured sidecarkit process with."""
    env = dict(os.environ)
    if pure:
        env.pop("PYTHONPATH", None)
        return env
    made = subprocess.run(["make", "-s", "-C", str(ROOT), "compiled"], check=False)
    if made.returncode != 0:
        raise SystemExit("`make compiled` failed: the compiled build cannot be measured")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(COMPILED), env.get("PYTHONPATH")]))
    checked = subprocess.run(
        [sys.executable, "-c", _CHECK, probe], env=env, capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        raise SystemExit(f"build/compiled is not what it should be: {checked.stderr.strip()}")
    return env


def use(*, pure: bool = False, probe: str = "sidecarkit.agents.proxy.forwarding") -> None:
    """Make every process this benchmark starts from now on run the build it measures."""
    env = environment(pure=pure, probe=probe)
    os.environ.clear()
    os.environ.update(env)


def export_sources(revision: str, into: Path) -> Path:
    """The ``src`` tree of git ``revision`` written under ``into``, for a benchmark that
    compares this tree with another revision in the same run; returns its path."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"
