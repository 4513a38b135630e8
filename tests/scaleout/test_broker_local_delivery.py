"""Events committed by a worker reach its own sockets ahead of Redis, exactly once."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.conftest import REDIS_URL
from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.outbox import Outbox, publish
from worksession.kit.clock import utcnow
from worksession.kit.redis_broker import RedisBroker


@pytest.mark.skipif(not REDIS_URL, reason="needs Redis")
async def test_an_event_is_delivered_here_at_once_and_its_redis_copy_skipped() -> None:
    assert REDIS_URL
    broker = RedisBroker(REDIS_URL, prefix=f"test-local-{uuid.uuid4().hex[:8]}")
    got: list[tuple[str, bytes]] = []
    await broker.start(lambda channel, payload: got.append((channel, payload)))
    try:
        await broker.subscribe("ws:seeker:s1")  # only one of the two participants is here
        outbox = Outbox()
        event = LoggedEvent(uuid.uuid4(), 1, "chat_ready", {"chat_room_id": "r"}, utcnow())
        outbox.event(event, seeker_id="s1", provider_id="p1")
        outbox.frame([("seeker", "s1")], '{"type":"typing_indicator"}')
        published = asyncio.ensure_future(publish(broker, outbox))
        await asyncio.sleep(0)
        # The logged event is here before Redis could have echoed it; the ephemeral
        # frame goes through Redis only (a repeat of it could not be told apart).
        assert got == [outbox.messages[0]]
        await published
        await asyncio.sleep(0.5)
        assert [channel for channel, _ in got] == ["ws:seeker:s1", "ws:seeker:s1"]
        assert got[0][1] == outbox.messages[0][1]
        assert got[1][1] == outbox.messages[2][1]
    finally:
        await broker.close()
