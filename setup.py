"""Build hook: compile the request-path modules to C with mypyc when asked.

``SIDECARKIT_COMPILE=1 pip install --no-build-isolation .`` (with mypy and the project's
dependencies installed: mypyc type-checks against them) compiles the modules listed under
``[tool.sidecarkit] compiled`` in pyproject.toml; the Containerfile builds the image this way
and ``make compiled`` builds the same thing into build/compiled for the tests and benchmarks.
Without the variable (an editable install, a plain ``pip install``) nothing is compiled and the
same modules run as Python: both builds pass the same tests.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent

ext_modules = []
if os.environ.get("SIDECARKIT_COMPILE") == "1":
    from mypyc.build import mypycify

    listed = tomllib.loads((HERE / "pyproject.toml").read_text())["tool"]["sidecarkit"]["compiled"]
    ext_modules = mypycify([f"src/{path}" for path in listed], opt_level="3")

setup(ext_modules=ext_modules)
