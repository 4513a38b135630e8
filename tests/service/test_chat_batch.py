"""The group commit of chat frames on PostgreSQL: each frame answered as if alone, one bad
frame never sinks the others, a deadlock falls back to one frame at a time, order per
session is arrival order, and nobody hears of anything before the COMMIT."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL
from tests.factories import make_chat_message, make_work_session
from worksession.chat.batch import Action, ChatBatcher, ChatFrame
from worksession.errors import Forbidden, InvalidState, MessageNotFound, SessionNotFound
from worksession.kit.broker import MemoryBroker
from worksession.kit.db import Database
from worksession.models import ChatMessage, SessionEvent, WorkSession
from worksession.outbox import user_channel
from worksession.sessions.events import Answer

SEEKER = "seeker-b1"
PROVIDER = "provider-b1"


# The group commit exists on PostgreSQL only (SQLite keeps one transaction per frame), so
# these tests take the PostgreSQL database alone rather than skipping the SQLite one.
pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="needs WORKSESSION_TEST_DATABASE_URL (CI sets it)"),
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


@pytest.fixture
def pg(db: Database) -> Database:
    assert db.dialect == "postgresql"
    return db


def _dsn(db: Database) -> str:
    return make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)


class Recorder:
    """A requester that notes what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_commit(self, answer: Answer) -> None:
        self.calls.append("before_commit")

    def rolled_back(self, answer: Answer) -> None:
        self.calls.append("rolled_back")

    def committed(self, answer: Answer) -> None:
        self.calls.append("committed")


class Published:
    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def start(self, *users: tuple[str, str]) -> None:
        await self.broker.start(lambda ch, payload: self.events.append((ch, json.loads(payload))))
        for role, user in users:
            await self.broker.subscribe(user_channel(role, user))

    def seqs(self, channel: str) -> list[int]:
        return [body["event"]["seq"] for ch, body in self.events if ch == channel]


async def new_session(db: Database, seeker: str = SEEKER, provider: str = PROVIDER) -> uuid.UUID:
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id=seeker, provider_id=provider, state="active")
        return session.session_id


def message(session_id: uuid.UUID, text: str, **fields: Any) -> ChatFrame:
    fields.setdefault("requester", Recorder())
    return ChatFrame("message", SEEKER, "seeker", session_id=session_id, text=text, **fields)


def receipt(action: Action, message_id: uuid.UUID, *, user: str = PROVIDER) -> ChatFrame:
    role = "provider" if user.startswith("provider") else "seeker"
    return ChatFrame(action, user, role, Recorder(), message_id=message_id)


async def settle(batcher: ChatBatcher, *frames: ChatFrame) -> list[Answer | BaseException]:
    return await asyncio.gather(*(batcher.submit(f) for f in frames), return_exceptions=True)


async def test_one_batch_answers_every_frame_as_if_it_ran_alone(pg: Database) -> None:
    sid = await new_session(pg)
    await new_session(pg, "seeker-b2", "provider-b2")
    async with pg.transaction() as s:
        live = (await s.execute(select(WorkSession).where(WorkSession.session_id == sid))).one()[0]
        earlier = await make_chat_message(s, session=live, sender_type="provider", text="hi")
        ended = await make_work_session(s, seeker_id=SEEKER, provider_id="p-x", state="cancelled")
        own = await make_chat_message(s, session=live, sender_type="seeker", text="mine")
    published = Published()
    await published.start(("seeker", SEEKER), ("provider", PROVIDER))
    batcher = ChatBatcher(pg, published.broker)

    results = await settle(
        batcher,
        message(sid, "one", client_msg_id="c1"),
        message(uuid.uuid4(), "nowhere"),  # no such session
        message(sid, "one again", client_msg_id="c1"),  # a retry inside the batch
        ChatFrame("message", "seeker-b2", "seeker", Recorder(), session_id=sid, text="x"),
        message(ended.session_id, "too late"),
        receipt("read", earlier.message_id, user=SEEKER),
        receipt("delivered", own.message_id, user=SEEKER),  # one's own message
        receipt("read", uuid.uuid4()),
        message(sid, "two"),
    )
    assert batcher.batches == 1
    first, nowhere, retry, stranger, late, read, mine, unknown, second = results
    assert isinstance(first, Answer)
    assert [(e.seq, e.kind) for e in first.events] == [(1, "chat_ready"), (2, "chat_message")]
    assert isinstance(nowhere, SessionNotFound)
    assert isinstance(retry, Answer)
    assert retry.frame is not None
    assert (retry.frame["seq"], retry.frame["client_msg_id"]) == (2, "c1")
    assert retry.frame["message_id"] == first.events[-1].data["message_id"]
    assert isinstance(stranger, SessionNotFound)  # not a participant of that session
    assert isinstance(late, InvalidState)
    assert isinstance(read, Answer)
    assert not read.answers
    assert isinstance(mine, Forbidden)
    assert isinstance(unknown, MessageNotFound)
    assert isinstance(second, Answer)
    assert [e.seq for e in second.events] == [5]

    channel = user_channel("provider", PROVIDER)
    assert published.seqs(channel) == [1, 2, 3, 4, 5]
    kinds = [body["event"]["data"].get("status") for ch, body in published.events if ch == channel]
    assert kinds[2:4] == ["delivered", "read"]  # read on a sent message takes both steps
    async with pg.transaction() as s:
        rows = (await s.execute(select(ChatMessage).order_by(ChatMessage.id))).scalars().all()
        log = (await s.execute(select(SessionEvent.seq).order_by(SessionEvent.seq))).all()
        session = (await s.execute(select(WorkSession).where(WorkSession.session_id == sid))).one()
    texts = {r.message_text: r for r in rows}
    assert set(texts) == {"hi", "mine", "one", "two"}
    assert (texts["one"].seq, texts["two"].seq, texts["one"].client_msg_id) == (2, 5, "c1")
    assert texts["hi"].delivery_status == "read"
    assert texts["hi"].delivered_at == texts["hi"].read_at is not None
    assert texts["mine"].delivery_status == "sent"
    assert [seq for (seq,) in log] == [1, 2, 3, 4, 5]
    assert session[0].last_seq == 5
    assert session[0].chat_room_id is not None
    assert str(session[0].chat_room_id) == first.events[0].data["chat_room_id"]


async def test_events_of_a_session_keep_the_order_frames_arrived_in(pg: Database) -> None:
    sid = await new_session(pg)
    published = Published()
    await published.start(("provider", PROVIDER))
    batcher = ChatBatcher(pg, published.broker, max_batch=7)

    texts = [f"m{i}" for i in range(40)]
    results = await settle(batcher, *(message(sid, t) for t in texts))

    assert batcher.batches == 6  # 40 frames, at most 7 per batch
    answers = [r for r in results if isinstance(r, Answer)]
    assert [a.events[-1].data["message"] for a in answers] == texts
    assert [a.events[-1].seq for a in answers] == list(range(2, 42))
    sent = [body["event"]["data"].get("message") for _, body in published.events]
    assert sent[1:] == texts

    acks = await settle(
        batcher,
        *(receipt("delivered", uuid.UUID(a.events[-1].data["message_id"])) for a in answers[:5]),
        *(receipt("read", uuid.UUID(a.events[-1].data["message_id"])) for a in answers[:5]),
    )
    assert all(isinstance(a, Answer) for a in acks)
    statuses = [body["event"]["data"]["status"] for _, body in published.events[41:]]
    assert statuses == ["delivered"] * 5 + ["read"] * 5
    assert published.seqs(user_channel("provider", PROVIDER)) == list(range(1, 52))


async def test_nobody_is_answered_before_the_commit(pg: Database) -> None:
    sid = await new_session(pg)
    published = Published()
    await published.start(("provider", PROVIDER))
    outside = await asyncpg.connect(_dsn(pg))
    seen: dict[str, int] = {}

    class Watcher(Recorder):
        def before_commit(self, answer: Answer) -> None:
            super().before_commit(answer)
            seen["published before commit"] = len(published.events)

        def committed(self, answer: Answer) -> None:
            super().committed(answer)
            seen["published when answered"] = len(published.events)

    try:
        # Hold the session's lock from outside: the batch must wait, and answer nobody.
        lock = outside.transaction()
        await lock.start()
        await outside.execute("SELECT 1 FROM work_sessions WHERE session_id = $1 FOR UPDATE", sid)
        watcher = Watcher()
        batcher = ChatBatcher(pg, published.broker)
        pending = asyncio.ensure_future(batcher.submit(message(sid, "wait", requester=watcher)))
        await asyncio.sleep(0.5)
        assert not pending.done()
        assert watcher.calls == []
        await lock.rollback()
        answer = await pending
        stored = await outside.fetchval(
            "SELECT count(*) FROM chat_messages WHERE message_text = 'wait'"
        )
    finally:
        await outside.close()
    assert isinstance(answer, Answer)
    assert watcher.calls == ["before_commit", "committed"]
    assert stored == 1
    # Queued as the direct answer before the broker's copy: published only afterwards.
    assert seen == {"published before commit": 0, "published when answered": 0}
    assert len(published.events) == 2


async def test_a_deadlocked_batch_runs_again_frame_by_frame(pg: Database) -> None:
    first = await new_session(pg)
    second = await new_session(pg, "seeker-b3", "provider-b3")
    published = Published()
    await published.start(("provider", PROVIDER), ("provider", "provider-b3"))
    batcher = ChatBatcher(pg, published.broker)
    outside = await asyncpg.connect(_dsn(pg))
    try:
        # This connection waits long before checking for deadlocks, so the batch's own
        # backend finds the cycle and is the one PostgreSQL aborts.
        await outside.execute("SET deadlock_timeout = '20s'")
        tx = outside.transaction()
        await tx.start()
        await outside.execute(
            "SELECT 1 FROM work_sessions WHERE session_id = $1 FOR UPDATE", second
        )
        recorders = [Recorder(), Recorder()]
        pending = asyncio.ensure_future(
            settle(
                batcher,
                message(first, "a", requester=recorders[0]),
                ChatFrame(
                    "message", "seeker-b3", "seeker", recorders[1], session_id=second, text="b"
                ),
            )
        )
        await asyncio.sleep(0.3)  # the batch holds the first session and waits for the second
        await outside.execute("SELECT 1 FROM work_sessions WHERE session_id = $1 FOR UPDATE", first)
        await tx.commit()
        results = await pending
    finally:
        await outside.close()
    assert batcher.fallbacks == 1
    assert all(isinstance(r, Answer) for r in results)
    assert [[e.seq for e in r.events] for r in results if isinstance(r, Answer)] == [[1, 2]] * 2
    # The failed attempt died waiting for its locks, before deciding any answer.
    assert [r.calls for r in recorders] == [["before_commit", "committed"]] * 2
    async with pg.transaction() as s:
        texts = (await s.execute(select(ChatMessage.message_text))).scalars().all()
    assert sorted(texts) == ["a", "b"]
    assert len(published.events) == 4
