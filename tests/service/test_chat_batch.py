"""Chat commands batched by the write pipeline, on both databases: each command answered as
if alone, one refused command never sinks the others, a deadlock falls back to one command
at a time, order per session is arrival order, and nobody hears of anything before the
COMMIT."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL
from tests.factories import make_chat_message, make_work_session
from tests.pipeline_run import as_dict, decoded, pipeline_for
from worksession.errors import Forbidden, InvalidState, MessageNotFound, SessionNotFound
from worksession.eventlog.outbox import user_channel
from worksession.kit.broker import MemoryBroker
from worksession.kit.db import Database
from worksession.models import ChatMessage, SessionEvent, WorkSession
from worksession.pipeline.commands import (
    AcknowledgeMessage,
    Actor,
    Command,
    ReceiptStatus,
    SendMessage,
)
from worksession.pipeline.decision import AnswerFrame
from worksession.pipeline.runner import Outcome, Pipeline

SEEKER = "seeker-b1"
PROVIDER = "provider-b1"


def _dsn(db: Database) -> str:
    return make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)


class Recorder:
    """A requester that notes what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_commit(self, outcome: Outcome) -> None:
        self.calls.append("before_commit")

    def rolled_back(self, outcome: Outcome) -> None:
        self.calls.append("rolled_back")

    def committed(self, outcome: Outcome) -> None:
        self.calls.append("committed")


class Published:
    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def start(self, *users: tuple[str, str]) -> None:
        await self.broker.start(lambda ch, payload: self.events.append((ch, decoded(payload))))
        for role, user in users:
            await self.broker.subscribe(user_channel(role, user))

    def seqs(self, channel: str) -> list[int]:
        return [body["event"]["seq"] for ch, body in self.events if ch == channel]


async def new_session(db: Database, seeker: str = SEEKER, provider: str = PROVIDER) -> uuid.UUID:
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id=seeker, provider_id=provider, state="active")
        return session.session_id


Submitted = tuple[Command, Recorder]


def message(
    session_id: uuid.UUID,
    text: str,
    *,
    client_msg_id: str | None = None,
    user: str = SEEKER,
    requester: Recorder | None = None,
) -> Submitted:
    command = SendMessage(session_id, Actor(user, "seeker"), text, client_msg_id)
    return command, requester if requester is not None else Recorder()


def receipt(status: ReceiptStatus, message_id: uuid.UUID, *, user: str = PROVIDER) -> Submitted:
    role = "provider" if user.startswith("provider") else "seeker"
    return AcknowledgeMessage(message_id, Actor(user, role), status), Recorder()


async def settle(pipeline: Pipeline, *submitted: Submitted) -> list[Outcome | BaseException]:
    """Submit every command at once, as frames arriving together would be."""
    return await asyncio.gather(
        *(pipeline.submit(command, requester=requester) for command, requester in submitted),
        return_exceptions=True,
    )


@pytest.fixture
async def published() -> Published:
    return Published()


async def test_one_batch_answers_every_command_as_if_it_ran_alone(
    db: Database, published: Published
) -> None:
    sid = await new_session(db)
    await new_session(db, "seeker-b2", "provider-b2")
    async with db.transaction() as s:
        live = (await s.execute(select(WorkSession).where(WorkSession.session_id == sid))).one()[0]
        earlier = await make_chat_message(s, session=live, sender_type="provider", text="hi")
        ended = await make_work_session(s, seeker_id=SEEKER, provider_id="p-x", state="cancelled")
        own = await make_chat_message(s, session=live, sender_type="seeker", text="mine")
    await published.start(("seeker", SEEKER), ("provider", PROVIDER))
    pipeline = pipeline_for(db, published.broker, now=None)
    batches = pipeline.batches

    try:
        results = await settle(
            pipeline,
            message(sid, "one", client_msg_id="c1"),
            message(uuid.uuid4(), "nowhere"),  # no such session
            message(sid, "one again", client_msg_id="c1"),  # a retry inside the batch
            message(sid, "x", user="seeker-b2"),
            message(ended.session_id, "too late"),
            receipt("read", earlier.message_id, user=SEEKER),
            receipt("delivered", own.message_id, user=SEEKER),  # one's own message
            receipt("read", uuid.uuid4()),
            message(sid, "two"),
        )
    finally:
        await pipeline.store.dispose()
    assert pipeline.batches == batches + 1
    # Nothing was rerun alone: the retry was answered inside the batch, not by a split.
    assert (pipeline.splits, pipeline.retries) == (0, 0)
    first, nowhere, retry, stranger, late, read, mine, unknown, second = results
    assert isinstance(first, Outcome)
    assert [(e.seq, e.kind) for e in first.events] == [(1, "chat_ready"), (2, "chat_message")]
    assert isinstance(nowhere, SessionNotFound)
    assert isinstance(retry, Outcome)
    assert isinstance(retry.reply, AnswerFrame)
    retry_frame = as_dict(retry.reply.frame)
    assert (retry_frame["seq"], retry_frame["client_msg_id"]) == (2, "c1")
    assert retry_frame["message_id"] == first.events[-1].data["message_id"]
    assert isinstance(stranger, SessionNotFound)  # not a participant of that session
    assert isinstance(late, InvalidState)
    assert isinstance(read, Outcome)
    assert read.reply is None
    assert isinstance(mine, Forbidden)
    assert isinstance(unknown, MessageNotFound)
    assert isinstance(second, Outcome)
    assert [e.seq for e in second.events] == [5]

    channel = user_channel("provider", PROVIDER)
    assert published.seqs(channel) == [1, 2, 3, 4, 5]
    kinds = [body["event"]["data"].get("status") for ch, body in published.events if ch == channel]
    assert kinds[2:4] == ["delivered", "read"]  # read on a sent message takes both steps
    async with db.transaction() as s:
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


async def test_events_of_a_session_keep_the_order_commands_arrived_in(
    db: Database, published: Published
) -> None:
    sid = await new_session(db)
    await published.start(("provider", PROVIDER))
    pipeline = pipeline_for(db, published.broker, now=None, max_batch=7)

    try:
        texts = [f"m{i}" for i in range(40)]
        results = await settle(pipeline, *(message(sid, t) for t in texts))

        assert pipeline.batches == 6  # 40 commands, at most 7 per batch
        answers = [r for r in results if isinstance(r, Outcome)]
        assert [a.events[-1].data["message"] for a in answers] == texts
        assert [a.events[-1].seq for a in answers] == list(range(2, 42))
        sent = [body["event"]["data"].get("message") for _, body in published.events]
        assert sent[1:] == texts

        message_ids = [uuid.UUID(a.events[-1].data["message_id"]) for a in answers[:5]]
        acks = await settle(
            pipeline,
            *(receipt("delivered", message_id) for message_id in message_ids),
            *(receipt("read", message_id) for message_id in message_ids),
        )
    finally:
        await pipeline.store.dispose()
    assert all(isinstance(a, Outcome) for a in acks)
    assert pipeline.splits == 0
    statuses = [body["event"]["data"]["status"] for _, body in published.events[41:]]
    assert statuses == ["delivered"] * 5 + ["read"] * 5
    assert published.seqs(user_channel("provider", PROVIDER)) == list(range(1, 52))


@asynccontextmanager
async def session_locked(db: Database, session_id: uuid.UUID) -> AsyncIterator[None]:
    """Hold what a batch on ``session_id`` must wait for, from outside the pipeline: the
    session's row lock on PostgreSQL, the one connection (and the write lock) on SQLite."""
    query = select(WorkSession.id).where(WorkSession.session_id == session_id)
    async with db.transaction() as outside:
        # SQLite has no FOR UPDATE (SQLAlchemy leaves it out): it locks the whole database.
        await outside.execute(query.with_for_update())
        yield


async def test_nobody_is_answered_before_the_commit(db: Database, published: Published) -> None:
    sid = await new_session(db)
    await published.start(("provider", PROVIDER))
    seen: dict[str, int] = {}

    class Watcher(Recorder):
        def before_commit(self, outcome: Outcome) -> None:
            super().before_commit(outcome)
            seen["published before commit"] = len(published.events)

        def committed(self, outcome: Outcome) -> None:
            super().committed(outcome)
            seen["published when answered"] = len(published.events)

    watcher = Watcher()
    pipeline = pipeline_for(db, published.broker, now=None)
    try:
        # Hold the session from outside: the batch must wait, and answer nobody.
        async with session_locked(db, sid):
            command, _ = message(sid, "wait")
            pending = asyncio.ensure_future(pipeline.submit(command, requester=watcher))
            await asyncio.sleep(0.5)
            assert not pending.done()
            assert watcher.calls == []
        answer = await pending
    finally:
        await pipeline.store.dispose()
    async with db.transaction() as s:
        stored = (
            await s.execute(select(ChatMessage.id).where(ChatMessage.message_text == "wait"))
        ).all()
    assert isinstance(answer, Outcome)
    assert watcher.calls == ["before_commit", "committed"]
    assert len(stored) == 1
    # Queued as the direct answer before the broker's copy: published only afterwards.
    assert seen == {"published before commit": 0, "published when answered": 0}
    assert len(published.events) == 2
    assert pipeline.splits == 0


@pytest.mark.skipif(not PG_URL, reason="needs WORKSESSION_TEST_DATABASE_URL (CI sets it)")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_deadlocked_batch_runs_again_command_by_command(
    db: Database, published: Published
) -> None:
    # Only PostgreSQL has row locks for a second connection to deadlock the batch with.
    assert db.dialect == "postgresql"
    first = await new_session(db)
    second = await new_session(db, "seeker-b3", "provider-b3")
    await published.start(("provider", PROVIDER), ("provider", "provider-b3"))
    pipeline = pipeline_for(db, published.broker, now=None)
    outside = await asyncpg.connect(_dsn(db))
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
                pipeline,
                message(first, "a", requester=recorders[0]),
                message(second, "b", user="seeker-b3", requester=recorders[1]),
            )
        )
        await asyncio.sleep(0.3)  # the batch holds the first session and waits for the second
        await outside.execute("SELECT 1 FROM work_sessions WHERE session_id = $1 FOR UPDATE", first)
        await tx.commit()
        results = await pending
    finally:
        await outside.close()
        await pipeline.store.dispose()
    assert pipeline.splits == 1
    assert all(isinstance(r, Outcome) for r in results)
    assert [[e.seq for e in r.events] for r in results if isinstance(r, Outcome)] == [[1, 2]] * 2
    # The failed attempt died waiting for its locks, before deciding any answer.
    assert [r.calls for r in recorders] == [["before_commit", "committed"]] * 2
    async with db.transaction() as s:
        texts = (await s.execute(select(ChatMessage.message_text))).scalars().all()
    assert sorted(texts) == ["a", "b"]
    assert len(published.events) == 4
