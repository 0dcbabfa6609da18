"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Several replicas of a controller (``sidecarkit repair --watch``) may run; only the holder of
the Lease acts. A candidate takes the Lease when it does not exist, when it already holds it
(a renewal), or when the holder's ``renewTime`` is older than ``leaseDurationSeconds`` (the
holder is gone). Every write carries the ``resourceVersion`` it read, so of two candidates
racing for an expired Lease the API server lets exactly one win (the other gets 409 Conflict
and stays a follower). On a clean stop the holder releases the Lease (empty holder, duration
1 s) so a follower takes over at its next try instead of a full duration later.

Decisions (pure) are separate from the reads and writes, and take the clock as an argument.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Final, cast

from lightkube import ApiError, Client
from lightkube.resources.coordination_v1 import Lease

__all__ = ["Elector", "expired"]

Json = Any
_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def _time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def expired(spec: Json, now: datetime.datetime) -> bool:
    """Whether a Lease ``spec`` is free: no holder, or not renewed within its duration."""
    if not spec.get("holderIdentity"):
        return True
    renewed = _time(spec.get("renewTime")) or _time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    return renewed is None or renewed + datetime.timedelta(seconds=duration) < now


@dataclass(slots=True)
class Elector:
    """One candidate for one Lease."""

    client: Client
    name: str
    namespace: str
    identity: str
    duration: int = 15
    """Seconds a holder stays leader without renewing; followers wait this long for a takeover."""

    def _spec(self, now: datetime.datetime, *, acquired: Json, transitions: int) -> Json:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": acquired,
            "renewTime": now.strftime(_FORMAT),
            "leaseTransitions": transitions,
        }

    def try_lead(self, now: datetime.datetime | None = None) -> bool:
        """Acquire or renew the Lease; True while this candidate leads."""
        now = now or datetime.datetime.now(datetime.UTC)
        stamp = now.strftime(_FORMAT)
        try:
            current = self.client.get(Lease, self.name, namespace=self.namespace).to_dict()
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquired=stamp, transitions=0),
            }
            return self._write(body, create=True)
        spec = current.get("spec") or {}
        if spec.get("holderIdentity") == self.identity:
            acquired, transitions = spec.get("acquireTime", stamp), spec.get("leaseTransitions", 0)
        elif expired(spec, now):
            acquired, transitions = stamp, int(spec.get("leaseTransitions") or 0) + 1
        else:
            return False
        current["spec"] = self._spec(now, acquired=acquired, transitions=transitions)
        return self._write(current, create=False)

    def _write(self, body: Json, *, create: bool) -> bool:
        lease = cast(Lease, Lease.from_dict(body))
        try:
            if create:
                self.client.create(lease, namespace=self.namespace)
            else:
                self.client.replace(lease)
        except ApiError as exc:
            if exc.status.code in (409, 422):  # another candidate wrote first
                return False
            raise
        return True

    def release(self) -> None:
        """Give the Lease up if held, so a follower need not wait out the duration."""
        try:
            current = self.client.get(Lease, self.name, namespace=self.namespace).to_dict()
        except ApiError:
            return
        spec = current.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        spec["holderIdentity"] = ""
        spec["leaseDurationSeconds"] = 1
        current["spec"] = spec
        self._write(current, create=False)
