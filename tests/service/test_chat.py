"""Anonymous chat (PROTOCOL 5): room, messages and dedupe, receipts, typing and its auto-stop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.factories import make_chat_message, make_work_session
from tests.pipeline_run import ORIGIN, Recorder, as_dict, decoded, pipeline_for, run
from worksession.chat.typing import TypingRelay
from worksession.errors import Forbidden, InvalidState, MessageNotFound, SessionNotFound
from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.outbox import Outbox, publish, user_channel
from worksession.eventlog.render import render
from worksession.kit.broker import Broker, MemoryBroker
from worksession.kit.clock import isoformat_z, utcnow
from worksession.kit.db import Database
from worksession.models import ChatMessage, SessionEvent, WorkSession
from worksession.pipeline.commands import (
    AcknowledgeMessage,
    Actor,
    CancelSession,
    Command,
    ReceiptStatus,
    Role,
    SendMessage,
    StartChat,
)
from worksession.pipeline.decision import ANSWERED_BY_EVENT, AnswerFrame
from worksession.pipeline.runner import Outcome
from worksession.realtime.connections import Hub
from worksession.sessions.access import live_session_of
from worksession.sessions.repository import session_row

SEEKER = "seeker-7f3a"
PROVIDER = "provider-91c2"
SEEKER_CH = user_channel("seeker", SEEKER)
PROVIDER_CH = user_channel("provider", PROVIDER)

Published = list[tuple[str, dict[str, Any]]]


def participant(role: Role) -> str:
    return SEEKER if role == "seeker" else PROVIDER


def published_events(published: Published) -> list[tuple[str, dict[str, Any]]]:
    """(channel, event on the wire) for each logged event published."""
    return [(ch, body["event"]) for ch, body in published]


async def new_session(db: Database, *, state: str = "active", **fields: Any) -> uuid.UUID:
    async with db.transaction() as s:
        session = await make_work_session(
            s, seeker_id=SEEKER, provider_id=PROVIDER, state=state, **fields
        )
        return session.session_id


async def load_session(db: Database, session_id: uuid.UUID) -> WorkSession:
    async with db.transaction() as s:
        query = select(WorkSession).where(WorkSession.session_id == session_id)
        return (await s.execute(query)).scalar_one()


async def messages(db: Database) -> list[ChatMessage]:
    async with db.transaction() as s:
        return list((await s.execute(select(ChatMessage).order_by(ChatMessage.id))).scalars())


async def event_count(db: Database) -> int:
    async with db.transaction() as s:
        return int((await s.execute(select(func.count()).select_from(SessionEvent))).scalar_one())


async def submit(
    db: Database, broker: Broker, command: Command, *, now: datetime | None = None
) -> Outcome:
    """``command`` through a pipeline publishing into ``broker``, so that what a refused
    command published can be looked at after its error."""
    pipeline = pipeline_for(db, broker, now=now)
    try:
        return await pipeline.submit(command, origin=ORIGIN)
    finally:
        await pipeline.store.dispose()


async def send(
    db: Database,
    session_id: uuid.UUID,
    *,
    role: Role = "seeker",
    text: str = "Hello",
    client_msg_id: str | None = None,
    now: datetime | None = None,
) -> tuple[Outcome, Published]:
    command = SendMessage(session_id, Actor(participant(role), role), text, client_msg_id)
    return await run(db, command, now=now)


async def ack(
    db: Database,
    message_id: uuid.UUID,
    status: ReceiptStatus,
    *,
    role: Role = "provider",
    user_id: str | None = None,
    now: datetime | None = None,
) -> Published:
    actor = Actor(user_id if user_id is not None else participant(role), role)
    outcome, published = await run(db, AcknowledgeMessage(message_id, actor, status), now=now)
    assert outcome.reply is None
    return published


# --- start_chat ------------------------------------------------------------------------------


async def test_start_chat_opens_the_room_and_tells_both(db: Database) -> None:
    session_id = await new_session(db, last_seq=1)
    now = utcnow()
    answer, published = await run(db, StartChat(session_id, Actor(PROVIDER, "provider")), now=now)

    stored = await load_session(db, session_id)
    assert stored.chat_room_id is not None
    assert stored.chat_started_at == now
    (event,) = answer.events
    assert (event.seq, event.kind, event.data) == (
        2,
        "chat_ready",
        {"chat_room_id": str(stored.chat_room_id)},
    )
    assert answer.reply is ANSWERED_BY_EVENT
    assert published_events(published) == [
        (SEEKER_CH, event.to_wire()),
        (PROVIDER_CH, event.to_wire()),
    ]
    assert await event_count(db) == 1


async def test_start_chat_again_answers_the_caller_alone_without_seq(db: Database) -> None:
    session_id = await new_session(db)
    await run(db, StartChat(session_id, Actor(SEEKER, "seeker")), now=None)
    answer, published = await run(db, StartChat(session_id, Actor(PROVIDER, "provider")), now=None)

    stored = await load_session(db, session_id)
    assert answer.events == ()
    assert isinstance(answer.reply, AnswerFrame)
    assert as_dict(answer.reply.frame) == {
        "type": "chat_ready",
        "session_id": str(session_id),
        "chat_room_id": str(stored.chat_room_id),
    }
    assert published == []
    assert stored.last_seq == 1
    assert await event_count(db) == 1


# --- chat_message ----------------------------------------------------------------------------


async def test_first_message_starts_the_chat(db: Database) -> None:
    session_id = await new_session(db, last_seq=3)
    answer, published = await send(db, session_id, client_msg_id="c-1")

    ready, message_event = answer.events
    stored = await load_session(db, session_id)
    assert (ready.kind, ready.seq) == ("chat_ready", 4)
    assert ready.data == {"chat_room_id": str(stored.chat_room_id)}
    assert (message_event.kind, message_event.seq) == ("chat_message", 5)
    assert published_events(published) == [
        (SEEKER_CH, ready.to_wire()),
        (PROVIDER_CH, ready.to_wire()),
        (SEEKER_CH, message_event.to_wire()),
        (PROVIDER_CH, message_event.to_wire()),
    ]
    (row,) = await messages(db)
    assert message_event.data == {
        "message_id": str(row.message_id),
        "sender_type": "seeker",
        "message": "Hello",
        "client_msg_id": "c-1",
    }
    assert (row.sender_id, row.sender_type, row.message_text) == (SEEKER, "seeker", "Hello")
    assert (row.seq, row.delivery_status, row.expires_at) == (5, "sent", None)
    assert row.created_at == message_event.created_at
    assert stored.last_seq == 5


async def test_message_in_a_started_chat_is_one_event(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id)
    answer, published = await send(db, session_id, role="provider", text="Hi")

    (event,) = answer.events
    assert (event.kind, event.seq, event.data["sender_type"]) == ("chat_message", 3, "provider")
    assert [ch for ch, _ in published] == [SEEKER_CH, PROVIDER_CH]


@dataclass
class RawRecorder(Recorder):
    """A recording broker that also keeps the payloads exactly as published."""

    raw: list[tuple[str, bytes]] = field(default_factory=list)

    async def publish(self, messages: Any) -> None:
        self.raw.extend(messages)
        await super().publish(messages)


async def test_recipient_sees_the_sender_type_and_never_a_user_id(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id)  # the room is open: only the message remains
    broker = RawRecorder()
    command = SendMessage(session_id, Actor(SEEKER, "seeker"), "Where are you?")
    answer = await submit(db, broker, command)

    (event,) = answer.events
    frame = render(event, "provider")
    assert frame is not None
    assert as_dict(frame) == {
        "type": "chat_message",
        "session_id": str(session_id),
        "message_id": event.data["message_id"],
        "sender_type": "seeker",
        "message": "Where are you?",
        "created_at": isoformat_z(event.created_at),
        "seq": 3,
    }
    assert broker.raw
    for _, payload in broker.raw:
        assert SEEKER.encode() not in payload
        assert PROVIDER.encode() not in payload


async def test_sender_gets_the_rendered_ack(db: Database) -> None:
    session_id = await new_session(db)
    now = utcnow()
    command = SendMessage(session_id, Actor(PROVIDER, "provider"), "On my way", "p-1")
    answer, _ = await run(db, command, now=now)

    event = answer.events[-1]
    (row,) = await messages(db)
    ack_frame = render(event, "provider")
    assert as_dict(ack_frame) == {
        "type": "chat_message_ack",
        "session_id": str(session_id),
        "message_id": str(row.message_id),
        "client_msg_id": "p-1",
        "status": "sent",
        "sender_type": "provider",
        "message": "On my way",
        "created_at": isoformat_z(now),
        "seq": 2,
    }


async def test_retry_with_the_same_client_msg_id_answers_the_original_ack(db: Database) -> None:
    session_id = await new_session(db)
    first, _ = await send(db, session_id, client_msg_id="c-1")
    retry, published = await send(db, session_id, text="Hello again", client_msg_id="c-1")

    assert retry.events == ()
    original = render(first.events[-1], "seeker")
    assert original is not None
    assert isinstance(retry.reply, AnswerFrame)
    assert as_dict(retry.reply.frame) == as_dict(original)
    assert published == []
    assert len(await messages(db)) == 1
    assert (await load_session(db, session_id)).last_seq == 2


async def test_another_sender_may_reuse_a_client_msg_id(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id, client_msg_id="c-1")
    answer, _ = await send(db, session_id, role="provider", client_msg_id="c-1")

    assert [e.kind for e in answer.events] == ["chat_message"]
    assert [m.sender_type for m in await messages(db)] == ["seeker", "provider"]


def ack_of(answer: Outcome) -> dict[str, Any]:
    """What the sender was answered: the retry's frame, or its own event rendered for it."""
    if isinstance(answer.reply, AnswerFrame):
        return as_dict(answer.reply.frame)
    frame = render(answer.events[-1], "seeker")
    assert frame is not None
    return as_dict(frame)


async def test_concurrent_duplicates_store_one_message(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id)  # open the room, so both answers have the same shape

    # Two pipelines (two workers), so two transactions race for the same client_msg_id.
    (first, _), (second, _) = await asyncio.gather(
        send(db, session_id, text="Twice", client_msg_id="dup"),
        send(db, session_id, text="Twice", client_msg_id="dup"),
    )

    stored = [m for m in await messages(db) if m.client_msg_id == "dup"]
    assert len(stored) == 1
    acks = [ack_of(a) for a in (first, second)]
    assert acks[0] == acks[1]
    assert acks[0] is not None
    assert acks[0]["message_id"] == str(stored[0].message_id)
    assert sorted(bool(a.events) for a in (first, second)) == [False, True]


async def test_messages_without_client_msg_id_are_never_deduplicated(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id)
    await send(db, session_id)

    assert len(await messages(db)) == 2


# --- typing: one worker's relay ----------------------------------------------------------------

TIMEOUT_S = 0.2
"""The auto-stop timeout of the tests' relay: short, so that its timing can be checked."""
LATE_S = 1.5 * TIMEOUT_S
"""A stop this late after its ``true`` is wrong: well before twice the timeout."""


class TypingWorker:
    """One worker's typing relay, and what its automatic stops published, and when."""

    def __init__(self) -> None:
        self.relay = TypingRelay(self._publish, timeout_s=TIMEOUT_S)
        self.stops: asyncio.Queue[tuple[float, str, dict[str, Any]]] = asyncio.Queue()

    async def _publish(self, outbox: Outbox) -> None:
        at = asyncio.get_running_loop().time()
        for channel, payload in outbox.messages:
            self.stops.put_nowait((at, channel, decoded(payload)))

    async def next_stop(self) -> tuple[float, str, dict[str, Any]]:
        return await asyncio.wait_for(self.stops.get(), timeout=2 * TIMEOUT_S)

    async def no_stop_within(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        published = []
        while not self.stops.empty():
            published.append(self.stops.get_nowait())
        assert published == []


@pytest.fixture
def worker() -> Iterator[TypingWorker]:
    typing_worker = TypingWorker()
    yield typing_worker
    typing_worker.relay.close()


async def typing(
    db: Database,
    worker: TypingWorker,
    session_id: uuid.UUID,
    is_typing: bool,
    *,
    role: Role = "seeker",
    user_id: str | None = None,
) -> tuple[Published, float]:
    """A typing_indicator frame as the gateway handles it: the sender checked on the
    session's row, then the relay. What it publishes at once, and when it was relayed."""
    actor = Actor(user_id if user_id is not None else participant(role), role)
    async with db.transaction() as s:
        row = await session_row(s, session_id)
    session = live_session_of(row, actor)
    at = asyncio.get_running_loop().time()
    outbox = worker.relay.typing(session, role, is_typing)
    return [(channel, decoded(payload)) for channel, payload in outbox.messages], at


def typing_frames(published: Published) -> list[tuple[str, dict[str, Any]]]:
    assert all(set(body) == {"frame"} for _, body in published)  # nobody is skipped
    return [(ch, body["frame"]) for ch, body in published]


def typing_frame(session_id: uuid.UUID, sender_type: str, is_typing: bool) -> dict[str, Any]:
    return {
        "type": "typing_indicator",
        "session_id": str(session_id),
        "sender_type": sender_type,
        "is_typing": is_typing,
    }


# --- refused frames --------------------------------------------------------------------------

OPERATIONS = ["start_chat", "send_message", "set_typing"]


async def attempt(
    db: Database,
    broker: Broker,
    worker: TypingWorker,
    operation: str,
    session_id: uuid.UUID,
    actor: Actor,
) -> None:
    """The chat frame ``operation`` from ``actor``, publishing into ``broker``."""
    if operation == "set_typing":
        async with db.transaction() as s:
            row = await session_row(s, session_id)
        session = live_session_of(row, actor)
        await publish(broker, worker.relay.typing(session, actor.role, True))
        return
    command: Command = (
        StartChat(session_id, actor)
        if operation == "start_chat"
        else SendMessage(session_id, actor, "Hello", None)
    )
    await submit(db, broker, command)


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_chat_frames_into_an_ended_session_are_invalid_state(
    db: Database, worker: TypingWorker, operation: str
) -> None:
    session_id = await new_session(db, state="cancelled")
    broker = Recorder()

    with pytest.raises(InvalidState):
        await attempt(db, broker, worker, operation, session_id, Actor(SEEKER, "seeker"))
    assert broker.messages == []
    assert worker.relay.typing_now == 0
    assert await messages(db) == []


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    ("user_id", "role"),
    [("stranger", "seeker"), (SEEKER, "provider"), ("stranger", "provider")],
    ids=["outsider", "wrong-role", "outsider-provider"],
)
async def test_outsiders_get_session_not_found(
    db: Database, worker: TypingWorker, operation: str, user_id: str, role: Role
) -> None:
    session_id = await new_session(db)
    broker = Recorder()

    with pytest.raises(SessionNotFound):
        await attempt(db, broker, worker, operation, session_id, Actor(user_id, role))
    assert broker.messages == []
    assert worker.relay.typing_now == 0


async def test_unknown_session_is_session_not_found(db: Database) -> None:
    with pytest.raises(SessionNotFound):
        await send(db, uuid.uuid4())


# --- receipts --------------------------------------------------------------------------------


async def sent_message(db: Database, session_id: uuid.UUID) -> uuid.UUID:
    answer, _ = await send(db, session_id)
    return uuid.UUID(answer.events[-1].data["message_id"])


def status_updates(published: Published) -> list[tuple[int, str]]:
    """(seq, status) of each event, checking it reached both and (1.1) both render it as
    the same ``message_status_update``."""
    events = published_events(published)
    assert [ch for ch, _ in events] == [SEEKER_CH, PROVIDER_CH] * (len(events) // 2)
    result = []
    for _, wire in events[::2]:
        event = LoggedEvent.from_wire(wire)
        assert event.kind == "message_status"
        assert event.data["sender_type"] == "seeker"
        frame = render(event, "seeker")
        assert as_dict(frame)["type"] == "message_status_update"
        assert render(event, "provider") == frame
        result.append((event.seq, event.data["status"]))
    return result


async def test_delivered_then_read_are_one_event_each(db: Database) -> None:
    session_id = await new_session(db)
    message_id = await sent_message(db, session_id)
    delivered_at = utcnow()
    read_at = delivered_at + timedelta(seconds=5)

    delivered = await ack(db, message_id, "delivered", now=delivered_at)
    read = await ack(db, message_id, "read", now=read_at)

    assert status_updates(delivered) == [(3, "delivered")]
    assert status_updates(read) == [(4, "read")]
    (row,) = await messages(db)
    assert (row.delivery_status, row.delivered_at, row.read_at) == ("read", delivered_at, read_at)


async def test_read_on_a_sent_message_takes_both_steps(db: Database) -> None:
    session_id = await new_session(db)
    message_id = await sent_message(db, session_id)
    now = utcnow()

    published = await ack(db, message_id, "read", now=now)

    assert status_updates(published) == [(3, "delivered"), (4, "read")]
    (row,) = await messages(db)
    assert (row.delivery_status, row.delivered_at, row.read_at) == ("read", now, now)


async def test_a_repeated_delivered_changes_and_sends_nothing(db: Database) -> None:
    session_id = await new_session(db)
    message_id = await sent_message(db, session_id)
    first_at = utcnow()
    await ack(db, message_id, "delivered", now=first_at)

    published = await ack(db, message_id, "delivered", now=first_at + timedelta(seconds=1))

    assert published == []
    (row,) = await messages(db)
    assert (row.delivery_status, row.delivered_at) == ("delivered", first_at)
    assert (await load_session(db, session_id)).last_seq == 3


async def test_delivered_after_read_changes_and_sends_nothing(db: Database) -> None:
    session_id = await new_session(db)
    message_id = await sent_message(db, session_id)
    await ack(db, message_id, "read")

    published = await ack(db, message_id, "delivered")

    assert published == []
    (row,) = await messages(db)
    assert row.delivery_status == "read"
    assert (await load_session(db, session_id)).last_seq == 4


async def test_acking_your_own_message_is_forbidden(db: Database) -> None:
    session_id = await new_session(db)
    message_id = await sent_message(db, session_id)

    with pytest.raises(Forbidden):
        await ack(db, message_id, "read", role="seeker")
    assert (await messages(db))[0].delivery_status == "sent"


@pytest.mark.parametrize(
    ("user_id", "role"),
    [("stranger", "provider"), (SEEKER, "provider"), (PROVIDER, "seeker")],
    ids=["outsider", "seeker-as-provider", "provider-as-seeker"],
)
async def test_an_outsider_acking_gets_message_not_found(
    db: Database, user_id: str, role: Role
) -> None:
    session_id = await new_session(db)
    message_id = await sent_message(db, session_id)

    with pytest.raises(MessageNotFound):
        await ack(db, message_id, "delivered", role=role, user_id=user_id)
    assert (await messages(db))[0].delivery_status == "sent"


async def test_an_unknown_message_is_message_not_found(db: Database) -> None:
    await new_session(db)
    with pytest.raises(MessageNotFound):
        await ack(db, uuid.uuid4(), "delivered")


async def test_an_expired_message_is_message_not_found(db: Database) -> None:
    now = utcnow()
    async with db.transaction() as s:
        session = await make_work_session(
            s, seeker_id=SEEKER, provider_id=PROVIDER, state="cancelled", cancelled_at=now
        )
        message = await make_chat_message(s, session=session, expires_at=now - timedelta(seconds=1))
        message_id = message.message_id

    with pytest.raises(MessageNotFound):
        await ack(db, message_id, "read", now=now)


async def test_acking_in_an_ended_session_is_invalid_state(db: Database) -> None:
    now = utcnow()
    async with db.transaction() as s:
        session = await make_work_session(
            s, seeker_id=SEEKER, provider_id=PROVIDER, state="completed", completed_at=now
        )
        message = await make_chat_message(s, session=session, expires_at=now + timedelta(hours=24))
        message_id = message.message_id

    with pytest.raises(InvalidState):
        await ack(db, message_id, "read", now=now)
    assert (await messages(db))[0].delivery_status == "sent"


# --- typing ----------------------------------------------------------------------------------


async def test_typing_tells_the_other_participant_only(db: Database, worker: TypingWorker) -> None:
    session_id = await new_session(db)

    published, _ = await typing(db, worker, session_id, True)

    assert typing_frames(published) == [(PROVIDER_CH, typing_frame(session_id, "seeker", True))]
    assert worker.relay.typing_now == 1


async def test_typing_true_again_only_moves_the_auto_stop(
    db: Database, worker: TypingWorker
) -> None:
    session_id = await new_session(db)
    await typing(db, worker, session_id, True, role="provider")
    await asyncio.sleep(TIMEOUT_S / 2)

    published, again_at = await typing(db, worker, session_id, True, role="provider")

    assert published == []
    assert worker.relay.typing_now == 1
    # The stop counts from the repeated true, not from the first one.
    at, channel, body = await worker.next_stop()
    assert TIMEOUT_S <= at - again_at < LATE_S
    assert (channel, body) == (SEEKER_CH, {"frame": typing_frame(session_id, "provider", False)})


async def test_typing_false_after_true_tells_the_other_participant(
    db: Database, worker: TypingWorker
) -> None:
    session_id = await new_session(db)
    await typing(db, worker, session_id, True, role="provider")

    published, _ = await typing(db, worker, session_id, False, role="provider")

    assert typing_frames(published) == [(SEEKER_CH, typing_frame(session_id, "provider", False))]
    assert worker.relay.typing_now == 0
    await worker.no_stop_within(LATE_S)  # stopped: nothing left to stop automatically


async def test_typing_false_when_not_typing_sends_nothing(
    db: Database, worker: TypingWorker
) -> None:
    session_id = await new_session(db)

    published, _ = await typing(db, worker, session_id, False)

    assert published == []
    assert worker.relay.typing_now == 0


async def test_stale_typing_is_stopped_once(db: Database, worker: TypingWorker) -> None:
    session_id = await new_session(db)
    _, seeker_at = await typing(db, worker, session_id, True)  # seeker: goes stale first
    await asyncio.sleep(TIMEOUT_S * 4 / 6)
    _, provider_at = await typing(db, worker, session_id, True, role="provider")

    at, channel, body = await worker.next_stop()
    # No earlier than the timeout, and well before twice it.
    assert TIMEOUT_S <= at - seeker_at < LATE_S
    assert (channel, body) == (PROVIDER_CH, {"frame": typing_frame(session_id, "seeker", False)})
    assert worker.relay.typing_now == 1  # the provider typed later: still typing

    at, channel, body = await worker.next_stop()
    assert TIMEOUT_S <= at - provider_at < LATE_S
    assert (channel, body) == (SEEKER_CH, {"frame": typing_frame(session_id, "provider", False)})
    assert worker.relay.typing_now == 0

    await worker.no_stop_within(2 * TIMEOUT_S)  # each indicator is stopped once


async def test_stale_typing_in_an_ended_session_is_stopped_silently(
    db: Database, worker: TypingWorker
) -> None:
    session_id = await new_session(db)
    await typing(db, worker, session_id, True)
    # As in a worker: the typist's socket is subscribed here, and the hub tells the relay
    # of every session whose end it sees.
    broker = MemoryBroker()
    hub = Hub(broker.subscribe, broker.unsubscribe, session_ended=worker.relay.forget)
    await broker.start(hub.deliver)
    await broker.subscribe(SEEKER_CH)
    pipeline = pipeline_for(db, broker, now=None)
    try:
        await pipeline.submit(CancelSession(session_id, Actor(SEEKER, "seeker")))
    finally:
        await pipeline.store.dispose()

    await worker.no_stop_within(2 * TIMEOUT_S)
    assert worker.relay.typing_now == 0
