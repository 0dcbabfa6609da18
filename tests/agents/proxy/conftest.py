"""Every process a proxy test starts is stopped when the test ends, even when it failed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agents.proxy import support


@pytest.fixture(autouse=True)
def _stop_leftovers() -> Iterator[None]:
    yield
    while support.STARTED:
        proc = support.STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
