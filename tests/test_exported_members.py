"""The public face: what ``import sidecarkit`` offers is exactly what ``__all__`` says."""

from __future__ import annotations

import sidecarkit
import sidecarkit.injection


def test_all_lists_every_public_name_and_nothing_else() -> None:
    for module in (sidecarkit, sidecarkit.injection):
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and getattr(value, "__module__", "").startswith("sidecarkit")
        }
        assert public <= set(module.__all__), public - set(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name


def test_public_classes_say_they_are_public() -> None:
    for name in sidecarkit.__all__:
        value = getattr(sidecarkit, name)
        if isinstance(value, type):
            assert value.__doc__, f"{name} has no docstring"
