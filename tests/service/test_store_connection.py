"""The PostgreSQL store holds one connection from batch to batch; when the server ends it
while it idles (a restart, an administrator, a failover), the next batch opens another
instead of failing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL
from tests.factories import make_work_session
from tests.pipeline_run import Recorder, pipeline_for
from worksession.kit.db import Database
from worksession.pipeline.commands import Actor, StartChat

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs WORKSESSION_TEST_DATABASE_URL (CI sets it)"),
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


@pytest.mark.parametrize("delay", [0.0, 0.2], ids=["at-once", "after-goodbye"])
async def test_a_connection_the_server_ended_is_replaced(db: Database, delay: float) -> None:
    """At once: the next BEGIN races the server's goodbye (asyncpg then refuses the
    connection with an internal error); after it: the connection is known closed."""
    async with db.transaction() as s:
        first = await make_work_session(s, seeker_id="s-a", provider_id="p-a", state="active")
        second = await make_work_session(s, seeker_id="s-b", provider_id="p-b", state="active")
    pipeline = pipeline_for(db, Recorder(), now=None)
    try:
        await pipeline.submit(StartChat(first.session_id, Actor("s-a", "seeker")))
        dsn = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        admin = await asyncpg.connect(dsn)
        try:
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'worksession-pipeline' AND datname = current_database()"
            )
        finally:
            await admin.close()
        assert ended == 1
        await asyncio.sleep(delay)

        outcome = await pipeline.submit(StartChat(second.session_id, Actor("s-b", "seeker")))
    finally:
        await pipeline.store.dispose()
    assert [event.kind for event in outcome.events] == ["chat_ready"]
    assert (pipeline.splits, pipeline.retries) == (0, 0)
