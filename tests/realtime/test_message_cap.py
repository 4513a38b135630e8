"""Issue 12, finding 5: a session holds at most ``WORKSESSION_MAX_MESSAGES_PER_SESSION``
chat messages (both sides together); past that ``chat_message`` is ``rate_limited``. The
count is kept by the write pipeline in the session's row, on both stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from tests.realtime.conftest import Server, dedicated_server, live_session
from worksession.kit.db import Database
from worksession.models import ChatMessage, WorkSession

CAP = 3


@pytest.fixture(scope="module")
def capped_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(
        db_url, tmp_path_factory.mktemp("capped"), max_messages_per_session=str(CAP)
    ) as running:
        yield running


async def test_a_full_session_refuses_more_messages(capped_server: Server) -> None:
    async with live_session(capped_server) as pair:
        sid = pair.session_id
        senders = [pair.seeker, pair.provider, pair.seeker]
        for i, sender in enumerate(senders):
            await sender.request(
                {
                    "type": "chat_message",
                    "session_id": sid,
                    "message": f"m{i}",
                    "client_msg_id": f"c{i}",
                },
                "chat_message_ack",
            )
        refused = await pair.provider.request(
            {"type": "chat_message", "session_id": sid, "message": "one more", "request_id": "r4"},
            "error",
        )
        assert refused["code"] == "rate_limited"
        assert refused["request_id"] == "r4"
        assert refused["retry_after_ms"] == 86_400_000
        # A retry of a stored message is still acknowledged, not refused.
        again = await pair.seeker.request(
            {"type": "chat_message", "session_id": sid, "message": "m0", "client_msg_id": "c0"},
            "chat_message_ack",
        )
        assert again["client_msg_id"] == "c0"
        # The rest of the session goes on.
        await pair.seeker.request({"type": "ping"}, "pong")

    database = Database(capped_server.settings_database_url)
    try:
        async with database.transaction() as s:
            count, stored = (
                await s.execute(
                    select(
                        WorkSession.message_count,
                        select(func.count())
                        .select_from(ChatMessage)
                        .where(ChatMessage.session_id == WorkSession.id)
                        .scalar_subquery(),
                    ).where(WorkSession.session_id == uuid.UUID(sid))
                )
            ).one()
    finally:
        await database.dispose()
    assert (count, stored) == (CAP, CAP)
