"""examples/proxy-demo: the proxy sidecar balances an app's calls over three backends, retries
what the broken one answers and ejects it, all run here by `sidecarkit run`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_app_sees_no_error_while_the_proxy_ejects_the_broken_backend() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecarkit", "run", "examples/proxy-demo/pod.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    out = result.stdout
    assert "app: 60 calls to http://127.0.0.1:18001/, 0 failed" in out
    served = {
        port: int(n) for n, port in re.findall(r"app: +(\d+) x orders backend on port (\d+)", out)
    }
    assert set(served) == {"18081", "18082"}, served
    assert sum(served.values()) == 60

    def metric(name: str, endpoint: str = "") -> float:
        where = f',endpoint="{endpoint}"' if endpoint else ""
        found = re.search(rf'{name}{{direction="outbound",upstream="orders"{where}}} (\S+)', out)
        assert found, f"{name} {endpoint} not in the app's output"
        return float(found.group(1))

    assert metric("ejections") == 1
    assert metric("endpoints_ejected") == 1
    tried = metric("request_total", "127.0.0.1:18083")
    assert 5 <= tried < 60  # five 503s in a row eject it; then it gets no more
