from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import webhooks


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> webhooks.Tls:
    return webhooks.make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tls: webhooks.Tls) -> Iterator[int]:
    """A ``sidecarkit webhook`` process with the built-in config; yields its port."""
    with webhooks.process(tls) as (_, port):
        yield port


@pytest.fixture
def client(server: int, tls: webhooks.Tls) -> Iterator[webhooks.Client]:
    c = webhooks.Client(server, tls)
    yield c
    c.close()


CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
