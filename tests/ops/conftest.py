"""A real server for the operations tests, on a database of its own.

Not the realtime tests' session-wide ``server``: a second server on the run's database
would run the same scheduled jobs (typing auto-stop, offer expiry) against the same rows
and publish their frames on its own in-process broker, where nobody listens.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realtime.conftest import Server, dedicated_server


@pytest.fixture(scope="module")
def server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(db_url, tmp_path_factory.mktemp("ops-server")) as running:
        yield running
