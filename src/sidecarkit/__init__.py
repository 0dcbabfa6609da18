"""sidecarkit: the Kubernetes sidecar pattern end to end.

What users may import lives here; everything else is internal and may change.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidecarkit.errors import (
        AnnotationError,
        ConfigError,
        ConflictError,
        InputError,
        ManifestError,
        SidecarkitError,
    )
    from sidecarkit.injection import (
        Code,
        Config,
        Decision,
        Facts,
        Mode,
        Parts,
        Profile,
        Reason,
        Report,
        inject,
        uninject,
    )

__version__ = "0.1.0"

__all__ = [
    "AnnotationError",
    "Code",
    "Config",
    "ConfigError",
    "ConflictError",
    "Decision",
    "Facts",
    "InputError",
    "ManifestError",
    "Mode",
    "Parts",
    "Profile",
    "Reason",
    "Report",
    "SidecarkitError",
    "__version__",
    "inject",
    "uninject",
]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that an agent, which needs none of this, starts small.
    if name in __all__:
        import importlib  # noqa: PLC0415

        module = "sidecarkit.errors" if name.endswith("Error") else "sidecarkit.injection"
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sidecarkit' has no attribute {name!r}")
