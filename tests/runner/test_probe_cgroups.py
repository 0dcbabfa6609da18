"""Exec probes and hooks join their container's cgroup only when they run on.

A join on cgroup v1 waits for an RCU grace period of the kernel (~10 ms with the runner's event
loop blocked); a probe such as ``true`` is over before that would help anything, and the pod's
start waits for its sidecars' startup probes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecarkit.runner import containing, processes


@pytest.fixture
def containment() -> Iterator[containing.Containment]:
    made = containing.Containment()
    try:
        if not made.cgroups:
            pytest.skip("no cgroup hierarchy this user can write to here")
        yield made
    finally:
        made.close()


def _cgroup_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def test_an_exec_probe_that_runs_on_joins_its_containers_cgroup(
    containment: containing.Containment, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    seen: list[str] = []

    async def probe_and_look() -> None:
        task = asyncio.create_task(
            processes.run_command(
                ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"],
                env={},
                cwd=None,
                container="app",
                containment=containment,
            )
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                text = pid_file.read_text() if pid_file.exists() else ""
                if text.endswith("\n"):
                    cgroup = _cgroup_of(int(text))
                    if f"sidecarkit-{containment.run}/app" in cgroup:
                        seen.append(cgroup)
                        return
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(probe_and_look())
    assert seen, "the probe never joined the container's cgroup"


def test_an_exec_probe_that_ends_before_the_join_delay_is_not_moved_into_a_cgroup(
    containment: containing.Containment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A delay no loaded machine takes to run ``true``, so the test does not race the 50 ms.
    monkeypatch.setattr(processes, "_JOIN_AFTER", 600.0)

    async def probe() -> int:
        return await processes.run_command(
            ["true"], env={}, cwd=None, container="app", containment=containment
        )

    assert asyncio.run(probe()) == 0
    assert containment._cgroups == {}  # no join asked for a cgroup (they are made on demand)
