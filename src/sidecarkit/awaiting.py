"""``sidecarkit await URL``: block until a sidecar says it is ready.

Legacy mode runs this as the postStart hook of each sidecar. The kubelet starts regular
containers one after another and waits for each postStart hook to finish, so the app, placed
after the sidecars, starts only once they answer 2xx on their readiness endpoint. Only loopback
URLs are expected; each attempt is bounded by the time left.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

__all__ = ["wait_ready"]


def wait_ready(
    url: str,
    *,
    timeout: float,
    interval: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str]:
    """Poll ``url`` until it answers 2xx or ``timeout`` seconds pass: (ready, last outcome)."""
    deadline = clock() + timeout
    outcome = "no attempt made"
    while True:
        left = deadline - clock()
        if left <= 0:
            return False, outcome
        try:
            with urllib.request.urlopen(url, timeout=max(0.05, min(left, 2.0))) as response:
                if 200 <= response.status < 300:
                    return True, f"HTTP {response.status}"
                outcome = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            outcome = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome = str(reason)
        sleep(min(interval, max(0.0, deadline - clock())))
