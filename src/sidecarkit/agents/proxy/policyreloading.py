"""The policy file, read again when its content changes (a ConfigMap update, an edit).

Checked once a second by content hash, as the endpoints files are, so a ConfigMap's ``..data``
symlink swap is seen. A new file is checked whole before anything changes: a file that does not
parse or names a bad key keeps the last good policy, logs why with the key and the fix, and
counts ``policy_reloads_total{result="error"}``; so does one that cannot hold on the running
inbound ports (``tcpguarding.check``). Rules and rate limits take effect from the next
request, and on a tcp port from the next connection (one already relayed stays); limits kept
with the same name, rate and burst keep their buckets. A change to ``authentication`` is
applied once its new key sources were read (``keysources.Sources.update``), then the whole new
file at once, so rules never run against the old authentication's users.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from sidecarkit import errors
from sidecarkit.agents.proxy import policies, policyfiles

__all__ = ["PolicyFile"]

log = logging.getLogger("sidecarkit.agent.proxy.policy")


class PolicyFile:
    def __init__(self, path: str, policy: policies.Policy) -> None:
        self.path = path
        self.policy = policy
        self.digest = self._digest()
        self.reloads = 0
        self.errors = 0
        self.reported = (0, 0)
        """(reloads, errors) already added to the registry's counters."""
        self.check: Callable[[policies.Policy], None] | None = None
        """Raises ConfigError for a policy that cannot hold on the running ports."""

    def _digest(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                return hashlib.sha256(f.read()).digest()
        except OSError as exc:
            return b"!" + str(exc.strerror).encode()

    def poll(self) -> policies.Policy | None:
        """The new policy when the file changed and is good, else None."""
        digest = self._digest()
        if digest == self.digest:
            return None
        self.digest = digest
        from sidecarkit import configfiles  # noqa: PLC0415 - loaded by the command already

        try:
            new = policyfiles.from_mapping(configfiles.load_mapping(self.path), source=self.path)
            if self.check is not None:
                self.check(new)
        except (ValueError, errors.SidecarkitError) as exc:
            self.errors += 1
            log.warning("policy not reloaded: %s; the last good policy stays", exc)
            return None
        self.policy = new
        self.reloads += 1
        log.info(
            "policy reloaded from %s: %s rule(s), %d rate limit(s)",
            self.path,
            "no" if new.rules is None else len(new.rules),
            len(new.rate_limits),
        )
        return new
