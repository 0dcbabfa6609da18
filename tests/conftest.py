"""With ``SIDECARKIT_EXPECT_COMPILED=1`` (``make test``'s second pass), refuse to run unless every
module listed under ``[tool.sidecarkit] compiled`` in pyproject.toml imports as a C extension, so
that pass cannot quietly test the Python sources instead of the build the image ships."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def compiled_modules() -> list[str]:
    """The dotted names of the modules the image compiles."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["sidecarkit"]["compiled"]
    names: list[str] = []
    for entry in listed:
        path = ROOT / "src" / entry
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        names += [".".join(f.relative_to(ROOT / "src").with_suffix("").parts) for f in files]
    return [name.removesuffix(".__init__") for name in names]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("SIDECARKIT_EXPECT_COMPILED") != "1":
        return
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    pure = [
        f"{name} ({module.__file__})"
        for name in compiled_modules()
        if not str((module := importlib.import_module(name)).__file__).endswith(suffixes)
    ]
    if pure:
        raise pytest.UsageError(
            "SIDECARKIT_EXPECT_COMPILED=1 but these modules are not compiled: "
            + ", ".join(pure)
            + "; run `make compiled` and put build/compiled first on PYTHONPATH"
        )
