"""sidecarkit: the Kubernetes sidecar pattern end to end.

What users may import lives here; everything else is internal and may change.
"""

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
