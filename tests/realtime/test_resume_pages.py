"""Section 6 (*1.1*): a long session is replayed in pages, never loaded whole, and still
reaches the socket strictly in order with live events following the replay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.realtime.conftest import Server, dedicated_server, live_session, open_client
from worksession.eventlog import repository as event_log
from worksession.kit.db import Database

PAGE = 3
MESSAGES = 12
LIVE = 5


@pytest.fixture(scope="module")
def paged_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with dedicated_server(
        db_url, tmp_path_factory.mktemp("pages"), replay_page_size=str(PAGE)
    ) as running:
        yield running


async def test_a_replay_of_many_pages_rises_by_one_with_live_events_after_it(
    paged_server: Server,
) -> None:
    async with live_session(paged_server) as pair:
        sid = pair.session_id
        for i in range(MESSAGES):
            await pair.seeker.request(
                {"type": "chat_message", "session_id": sid, "message": f"m{i}"},
                "chat_message_ack",
            )
        async with open_client(paged_server, "seeker", pair.seeker_id) as device:
            await device.send({"type": "resume", "session_id": sid, "last_seq": 0})
            await device.expect("work_accepted", seq=1)
            # While the replay is being read, page by page, the session goes on.
            for i in range(LIVE):
                await pair.provider.send(
                    {"type": "chat_message", "session_id": sid, "message": f"live{i}"}
                )
            last = 1 + 1 + MESSAGES + LIVE  # work_accepted, chat_ready, the messages
            frames = [{"type": "work_accepted", "seq": 1}]
            while not (
                any(f.get("seq") == last for f in frames)
                and any(f["type"] == "resumed" for f in frames)
            ):
                frames.append(await device.recv())
        seqs = [f["seq"] for f in frames if "seq" in f]
        assert seqs == list(range(1, last + 1))
        resumed = next(f for f in frames if f["type"] == "resumed")
        # Whatever the replay read is before ``resumed``; anything after it came live.
        assert resumed["last_seq"] == max(f["seq"] for f in frames[: frames.index(resumed)])


async def test_one_read_of_the_log_returns_at_most_a_page(paged_server: Server) -> None:
    async with live_session(paged_server) as pair:
        for i in range(MESSAGES):
            await pair.seeker.request(
                {"type": "chat_message", "session_id": pair.session_id, "message": f"m{i}"},
                "chat_message_ack",
            )
        database = Database(paged_server.settings_database_url)
        try:
            async with database.transaction() as s:
                page = await event_log.read_after(
                    s, session_id=uuid.UUID(pair.session_id), after_seq=2, limit=PAGE
                )
                rest = await event_log.read_after(
                    s, session_id=uuid.UUID(pair.session_id), after_seq=2, limit=1000
                )
        finally:
            await database.dispose()
        assert [e.seq for e in page] == [3, 4, 5]
        assert [e.seq for e in rest] == list(range(3, 3 + MESSAGES))
