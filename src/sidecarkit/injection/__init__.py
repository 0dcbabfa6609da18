"""The pure injection core: no I/O, shared by the offline CLI and the admission webhook."""

from sidecarkit.injection.configs import Config
from sidecarkit.injection.facts import Facts
from sidecarkit.injection.injecting import inject, uninject
from sidecarkit.injection.profiles import Mode, Parts, Profile
from sidecarkit.injection.reports import Code, Decision, Reason, Report

__all__ = [
    "Code",
    "Config",
    "Decision",
    "Facts",
    "Mode",
    "Parts",
    "Profile",
    "Reason",
    "Report",
    "inject",
    "uninject",
]
