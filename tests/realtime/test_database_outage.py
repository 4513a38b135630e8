"""An unexpected server-side failure (the database goes away) answers ``internal_error``;
the socket stays open and works again once the database is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, _admin_dsn
from tests.realtime.conftest import Server, dedicated_server, live_session


async def _allow_connections(database_url: str, allow: bool) -> None:
    name = make_url(database_url).database
    admin = await asyncpg.connect(_admin_dsn(database_url))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                name,
            )
    finally:
        await admin.close()


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[Server]:
    assert PG_URL
    with dedicated_server(PG_URL, tmp_path) as server:
        yield server


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL to take the database away")
async def test_database_outage_is_internal_error_and_the_socket_survives(
    pg_server: Server,
) -> None:
    database_url = pg_server.settings_database_url
    async with live_session(pg_server) as pair:
        await _allow_connections(database_url, False)
        try:
            error = await pair.seeker.request(
                {"type": "start_chat", "session_id": pair.session_id, "request_id": "x"},
                "error",
                timeout=15,
            )
        finally:
            await _allow_connections(database_url, True)
        ready = await pair.seeker.request(
            {"type": "start_chat", "session_id": pair.session_id}, "chat_ready", timeout=15
        )
    assert (error["code"], error["request_id"]) == ("internal_error", "x")
    assert "password" not in error["message"].lower()
    assert ready["seq"] == 2
