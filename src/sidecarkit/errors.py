"""Every error sidecarkit raises on purpose, and the exit code the CLI gives it.

The tree::

    SidecarkitError                 exit 1   something we could not do
    ├── InputError                  exit 2   a manifest we were given is wrong
    │   ├── ManifestError                    YAML that does not parse, or a field of the wrong shape
    │   ├── AnnotationError                  a sidecarkit.io/ label or annotation that is wrong
    │   └── ConflictError                    injecting would overwrite something the pod already has
    └── ConfigError                 exit 3   the injection config or the facts file is wrong

Each message names the input, the place in it and the fix, because the person reading it is
usually looking at a CI log, not at our code. Third-party exceptions are wrapped with ``from``.
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "ConfigError",
    "ConflictError",
    "InputError",
    "ManifestError",
    "SidecarkitError",
]


class SidecarkitError(Exception):
    """The base of every error sidecarkit raises on purpose."""

    exit_code = 1


class InputError(SidecarkitError):
    """A manifest given to us is wrong; fixing the manifest fixes the error."""

    exit_code = 2


class ManifestError(InputError):
    """YAML that does not parse, or a Kubernetes field that has the wrong shape."""


class AnnotationError(InputError):
    """A ``sidecarkit.io/`` label or annotation with an unknown key or a bad value."""


class ConflictError(InputError):
    """Injecting would overwrite a container, port, volume, mount or env var of the pod."""


class ConfigError(SidecarkitError):
    """The injection config or the facts given to the injector are wrong."""

    exit_code = 3
