"""The suite's own check that no test leaves a process behind catches an escaped process."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.leftovers import no_leftover_processes


def test_a_process_escaped_with_setsid_is_caught_and_killed() -> None:
    with (
        pytest.raises(AssertionError, match=r"sleep 30\.5"),
        no_leftover_processes(settle=0.5),
    ):
        subprocess.run(["sh", "-c", "setsid sleep 30.5 & exit 0"], check=True)


def test_a_process_that_ends_in_time_is_not_a_leftover() -> None:
    with no_leftover_processes(settle=5):
        subprocess.run(["sh", "-c", "setsid sleep 0.2 & exit 0"], check=True)
