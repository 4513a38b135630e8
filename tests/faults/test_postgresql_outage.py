"""PostgreSQL goes away and comes back: what a client and the scheduled jobs see.

The outage is made by a :class:`~tests.faults.proxy.TcpProxy` between the service and
PostgreSQL, not by ``ALTER DATABASE .. ALLOW_CONNECTIONS false`` with
``pg_terminate_backend``: a restart resets every connection and then *refuses* new ones at
the TCP level (ECONNREFUSED), which is what the proxy does, whereas a database that
disallows connections still accepts the TCP connection and answers the login with an error
of its own, a different path through asyncpg and SQLAlchemy. The machine's PostgreSQL is
shared with other tests and is never stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from tests.conftest import REDIS_URL
from tests.faults.chat import ChatFlow, check_against_database, stored_messages, stored_seqs
from tests.faults.conftest import ProxyTo, needs_postgresql_and_redis, proxied_servers
from tests.realtime.conftest import live_session, open_client, uid

pytestmark = needs_postgresql_and_redis

LEASE_TTL_S = 3.0
OUTAGE_S = 4.0
"""Longer than the leader's lease and than an offer's life: both are tested across it."""


async def _wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.2)


async def _count(database_url: str, query: str, *args: object) -> int:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(query, *args))
    finally:
        await connection.close()


async def test_a_socket_opened_while_postgresql_is_down_gets_1013_and_the_jobs_go_on(
    tmp_path: Path, proxy_to: ProxyTo
) -> None:
    async with proxied_servers(
        tmp_path,
        proxy_to,
        offer_ttl_s="2",
        message_retention_hours="0.0003",  # about a second
        sweep_interval_s="1",
        leader_ttl_s=str(LEASE_TTL_S),
    ) as run:
        [server] = run.servers
        run.pg.down()
        try:
            async with open_client(
                server, "provider", uid("provider"), expect_connected=False
            ) as refused:
                code = await refused.closed_with(timeout=15)
            # The jobs run (and fail) throughout, past a lease's life.
            await asyncio.sleep(OUTAGE_S)
        finally:
            run.pg.up()
        assert code == 1013, server.log()

        # The process carries on: sockets open, the offer expiry runs again...
        seeker_id = uid("seeker")
        async with open_client(server, "seeker", seeker_id) as seeker:
            order = await server.create_order(seeker_id=seeker_id, provider_ids=[uid("provider")])
            await seeker.expect("work_expired", work_id=order["work_id"], timeout=15)

        # ... and so does the sweep: an ended session's chat is deleted once it expired.
        async with live_session(server) as pair:
            await pair.seeker.request(
                {"type": "chat_message", "session_id": pair.session_id, "message": "hi"},
                "chat_message_ack",
            )
            await pair.provider.send({"type": "complete_session", "session_id": pair.session_id})
            await pair.provider.expect("session_completed")
            session_id = pair.session_id

        async def swept() -> bool:
            return not await stored_messages(run.database_url, session_id)

        await _wait_for(swept, 15, "the sweep did not run after the outage")

        # The leader still leads: its log says it took the lease and not that it lost it
        # since, and the lease key holds a token.
        log = server.log()
        assert log.rfind("now runs the periodic jobs") > log.rfind("no longer runs"), log
        client = aioredis.Redis.from_url(REDIS_URL or "")
        try:
            keys = await client.keys(f"{run.redis_prefix}:leader")
        finally:
            await client.aclose()
        assert keys, "no leader lease in Redis"
    # One warning for the refused socket, without the database's address or credentials.
    refusals = [line for line in log.splitlines() if "1013" in line or "try again" in line]
    assert refusals, log
    assert not any("postgresql://" in line or f":{run.pg.port}" in line for line in refusals)


@pytest.mark.timeout(240)  # a server start and a fixed outage, on a loaded machine
async def test_a_postgresql_restart_mid_chat_loses_no_acked_message(
    tmp_path: Path, proxy_to: ProxyTo
) -> None:
    """Chat flows while PostgreSQL goes down for ``OUTAGE_S`` and comes back. Every acked
    message is in the database with the seq and id its ack gave; a message that got an
    error instead is resent (same ``client_msg_id``) and stored once, even if its first
    COMMIT made it before the connection was cut."""
    async with proxied_servers(tmp_path, proxy_to) as run:
        [server] = run.servers
        async with live_session(server) as pair:
            flow = ChatFlow(pair.session_id)
            stop = asyncio.Event()
            reader = asyncio.create_task(flow.read(pair.provider))
            sender = asyncio.create_task(flow.send_until(pair.provider, stop, "m"))
            await asyncio.sleep(1.5)
            acked_before = len(flow.acks)
            run.pg.down()
            await asyncio.sleep(OUTAGE_S)
            run.pg.up()
            await asyncio.sleep(2.5)
            stop.set()
            await sender
            await asyncio.sleep(1.0)  # the last answers
            reader.cancel()
            in_flight = {k for k in flow.sent if k not in flow.acks and k not in flow.errors}

            stored = await stored_messages(run.database_url, pair.session_id)
            check_against_database([flow], stored)
            first_pass = (len(flow.sent), len(flow.acks), len(flow.errors), len(stored))

            await flow.resend_unacked(pair.provider)
            stored = await stored_messages(run.database_url, pair.session_id)
            check_against_database([flow], stored)

            # The seeker's socket stayed open through it all; a new one resumes everything.
            async with open_client(server, "seeker", pair.seeker_id) as again:
                await again.send({"type": "resume", "session_id": pair.session_id, "last_seq": 0})
                resumed = await again.expect("resumed", timeout=15)
            replayed = [f["seq"] for f in again.received if "seq" in f]
        seqs = await stored_seqs(run.database_url, pair.session_id)
    print(f"sent/acked/errors/stored before resending: {first_pass}; in flight: {in_flight}")
    assert acked_before > 0, "the outage came before the chat"
    assert flow.errors, "the outage did not fall mid-chat"
    assert not in_flight, "a message was neither acked nor refused"
    assert all(codes == ["internal_error"] for codes in flow.errors.values()), flow.errors
    assert len(stored) == len(flow.sent) == len(flow.acks)
    assert seqs == list(range(1, len(seqs) + 1))
    assert replayed == seqs
    assert resumed["last_seq"] == seqs[-1]
