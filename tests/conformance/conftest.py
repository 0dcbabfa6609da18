"""Every test here must leave no process behind (tests/support/leftovers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.leftovers import no_leftover_processes


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    with no_leftover_processes():
        yield
