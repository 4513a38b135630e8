"""`worksession serve --workers N` runs N worker processes that behave as one service."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, create_pg_database, drop_pg_database
from tests.realtime.conftest import Server, live_session, start_server, stop_server
from tests.scaleout.conftest import needs_postgresql_and_redis
from worksession import migrate

pytestmark = needs_postgresql_and_redis


@pytest.fixture
def two_worker_server(tmp_path: Path) -> Iterator[Server]:
    assert REDIS_URL
    database_url = create_pg_database("worksession_workers")
    migrate.upgrade(database_url)
    server = start_server(
        database_url,
        tmp_path,
        workers="2",
        redis_url=REDIS_URL,
        redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
        distance_interval_s="1",
    )
    try:
        yield server
    finally:
        stop_server(server)
        drop_pg_database(database_url)
    assert "Traceback" not in server.log()


async def test_two_workers_serve_sessions_and_tick_once(two_worker_server: Server) -> None:
    server = two_worker_server
    # Sixteen sockets spread over the two processes by the kernel; every pair works.
    async with (
        live_session(server) as one,
        live_session(server) as two,
        live_session(server) as three,
        live_session(server) as four,
    ):
        for pair in (one, two, three, four):
            ack = await pair.seeker.request(
                {"type": "chat_message", "session_id": pair.session_id, "message": "hello"},
                "chat_message_ack",
            )
            await pair.provider.expect("chat_message", message_id=ack["message_id"])
        await one.seeker.send(
            {"type": "location_update", "session_id": one.session_id, "lat": 12.97, "lng": 77.6}
        )
        await one.provider.send(
            {"type": "location_update", "session_id": one.session_id, "lat": 12.99, "lng": 77.6}
        )
        await one.seeker.expect("distance_update")
        ticks = [f for f in await one.seeker.drain(4.0) if f["type"] == "distance_update"]
    pids = set(re.findall(r"Started server process \[(\d+)\]", server.log()))
    assert len(pids) == 2, server.log()
    assert 3 <= len(ticks) <= 5, len(ticks)  # once a second, not once per worker
