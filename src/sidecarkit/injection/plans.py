"""Plans: the part of an injection that does not depend on the pod itself.

Pods of many workloads ask for the same profiles with the same settings, and get the same
sidecars, volumes, mounts and env; only where those go, and what they might clash with, depends
on the pod. A plan is the shared part: the selection read from the pod's ``sidecarkit.io/``
annotations, each profile rendered, the sets the conflict check compares pods against, and the
pod-independent half of placement. ``find`` keeps plans in a bounded cache keyed by everything
they are computed from:

================================  ===========================================================
the config                        by identity: a Config never changes, a reload makes another
``sidecarkit.io/`` annotations    keys and string values, in order (the status excepted)
the cluster's version             resolves mode ``auto``
``hostNetwork``                   skips the profiles that cannot run there
run to completion                 legacy sidecars then need the lifecycle plumbing
================================  ===========================================================

A plan is built only from valid input: when reading the annotations fails, ``find`` answers
None and the injector takes the step-by-step path, which raises the error naming the pod, at
the point it always has. Everything a plan holds is shared between pods and never mutated.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sidecarkit.injection import (
    configs,
    conflicts,
    facts,
    placing,
    policy,
    profiles,
    reports,
)

__all__ = ["Plan", "build", "find"]

#: Settings longer than this in total are rendered but not cached (memory stays bounded).
CACHEABLE_SETTINGS: Final = 4096


@dataclass(frozen=True, slots=True)
class Plan:
    """What a pod with these annotations gets, before looking at the rest of the pod."""

    selection: policy.Selection
    """The profiles, settings and modes the annotations ask for."""
    reasons: tuple[reports.Reason, ...]
    """The selection's reasons, then one per profile skipped for hostNetwork."""
    rendered: tuple[conflicts.Rendered, ...]
    """The profiles' parts, in placement order, the lifecycle plumbing last when needed."""
    added: conflicts.Added | None
    """What the parts add that a pod may have already; None when every pod needs the full
    conflict check."""
    placement: placing.Placement | None
    """The pod-independent half of placement; None when it depends on the pod."""
    summary: str
    """``logs (native), metrics (native)``: the profiles placed, for the report."""


def build(selection: policy.Selection, *, host_network: bool, run_to_completion: bool) -> Plan:
    """Render the profiles of ``selection`` for pods of this kind."""
    reasons = list(selection.reasons)
    rendered: list[conflicts.Rendered] = []
    for profile in selection.chosen:
        if host_network and not profile.allow_host_network:
            reasons.append(
                reports.Reason(
                    reports.Code.SKIPPED_HOST_NETWORK,
                    f"profile {profile.name} does not work in a hostNetwork pod: its ports would "
                    "be the node's; skipped",
                    profile.name,
                )
            )
            continue
        mode = selection.modes[profile.name]
        ctx = profiles.Context(mode=mode, run_to_completion=run_to_completion)
        values = tuple(selection.values[profile.name].items())
        if sum(len(v) for _, v in values) <= CACHEABLE_SETTINGS:
            parts = _render(profile.render, values, ctx)
        else:  # huge annotation values: render, but don't keep them alive in the cache
            parts = profile.render(dict(values), ctx)
        rendered.append(conflicts.Rendered(profile.name, mode, parts))
    if run_to_completion and any(
        r.mode is profiles.Mode.LEGACY and r.parts.sidecars for r in rendered
    ):
        rendered.append(placing.lifecycle_parts())
    added = conflicts.summarize(rendered) if rendered else None
    try:
        placement = (
            placing.prepare(rendered, run_to_completion=run_to_completion, app_names=None)
            if rendered
            else None
        )
    except Exception:  # placing the parts per pod meets it again, where it always has
        placement = None
    summary = ", ".join(
        f"{r.profile} ({r.mode})" for r in rendered if r.profile != placing.LIFECYCLE
    )
    return Plan(selection, tuple(reasons), tuple(rendered), added, placement, summary)


_PLAN_PREFIXES: Final = (policy.PREFIX, "prometheus.io/")
"""Annotations that can change a plan: ours, and the Prometheus ones the metrics profile reads."""


def find(
    annotations: Mapping[str, object],
    config: configs.Config,
    cluster: facts.Facts,
    *,
    host_network: bool,
    run_to_completion: bool,
) -> Plan | None:
    """The plan for a pod with these annotations, or None to take the step-by-step path.

    None when an annotation value is not a string or the values are very long (they are not
    worth keeping), or when the annotations are not valid (the step-by-step path says why).
    """
    items: list[tuple[str, str]] = []
    length = 0
    for key, value in annotations.items():
        if not isinstance(key, str) or not key.startswith(_PLAN_PREFIXES):
            continue
        if key == policy.STATUS_ANNOTATION:
            continue
        if type(value) is not str:  # True == 1 as a key, but they are different settings
            return None
        items.append((key, value))
        length += len(value)
    if length > CACHEABLE_SETTINGS:
        return None
    try:
        return _cached(_Key(config, cluster, tuple(items), host_network, run_to_completion))
    except Exception:
        return None


class _Key:
    """Equal for inputs that give the same plan; carries what the plan is computed from."""

    __slots__ = ("cluster", "config", "hash", "ident")

    def __init__(
        self,
        config: configs.Config,
        cluster: facts.Facts,
        items: tuple[tuple[str, str], ...],
        host_network: bool,
        run_to_completion: bool,
    ) -> None:
        self.config = config
        self.cluster = cluster
        # A cached key holds its config, so no other config can have its id meanwhile.
        self.ident = (
            id(config),
            cluster.kubernetes_version,
            items,
            host_network,
            run_to_completion,
        )
        self.hash = hash(self.ident)

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and self.ident == other.ident and self.config is other.config


@functools.lru_cache(maxsize=256)
def _cached(key: _Key) -> Plan:
    # The selection reads only the sidecarkit.io/ annotations and, of the facts, the version;
    # errors are not cached, so the empty target never reaches anyone.
    _, _, items, host_network, run_to_completion = key.ident
    selection = policy.select(dict(items), key.config, key.cluster, target="")
    return build(selection, host_network=host_network, run_to_completion=run_to_completion)


@functools.lru_cache(maxsize=512)
def _render(
    render: profiles.Renderer, values: tuple[tuple[str, str], ...], ctx: profiles.Context
) -> profiles.Parts:
    """Rendering is pure, and the same few settings come back for every pod of a workload.

    Keyed by the render function itself, which is new for every loaded config, so a reloaded
    profile never gets an old profile's parts. The parts are shared: nobody may mutate them.
    """
    return render(dict(values), ctx)
