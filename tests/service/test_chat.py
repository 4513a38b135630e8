"""Anonymous chat (PROTOCOL 5): room, messages and dedupe, receipts, typing and its auto-stop."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.factories import make_chat_message, make_work_session
from worksession.chat import service as chat
from worksession.errors import Forbidden, InvalidState, MessageNotFound, SessionNotFound
from worksession.kit.clock import isoformat_z, utcnow
from worksession.kit.db import Database
from worksession.models import ChatMessage, SessionEvent, TypingIndicator, WorkSession
from worksession.outbox import Outbox, user_channel
from worksession.sessions.events import Answer, LoggedEvent
from worksession.sessions.render import render

SEEKER = "seeker-7f3a"
PROVIDER = "provider-91c2"
SEEKER_CH = user_channel("seeker", SEEKER)
PROVIDER_CH = user_channel("provider", PROVIDER)


def published(outbox: Outbox) -> list[tuple[str, dict[str, Any]]]:
    return [(channel, json.loads(payload)) for channel, payload in outbox.messages]


def published_events(outbox: Outbox) -> list[tuple[str, dict[str, Any]]]:
    """(channel, event on the wire) for each logged event in the outbox."""
    return [(ch, body["event"]) for ch, body in published(outbox)]


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


async def send(
    db: Database,
    session_id: uuid.UUID,
    *,
    role: str = "seeker",
    text: str = "Hello",
    client_msg_id: str | None = None,
    outbox: Outbox | None = None,
) -> Answer:
    user_id = SEEKER if role == "seeker" else PROVIDER
    async with db.transaction() as s:
        return await chat.send_message(
            s,
            outbox if outbox is not None else Outbox(),
            session_id=session_id,
            user_id=user_id,
            role=role,
            text=text,
            client_msg_id=client_msg_id,
        )


async def ack(
    db: Database, message_id: uuid.UUID, status: str, *, role: str = "provider", **kw: Any
) -> Outbox:
    outbox = Outbox()
    user_id = kw.pop("user_id", SEEKER if role == "seeker" else PROVIDER)
    async with db.transaction() as s:
        answer = await chat.acknowledge(
            s, outbox, message_id=message_id, user_id=user_id, role=role, status=status, **kw
        )
    assert answer == Answer(answers=False)
    return outbox


async def typing(
    db: Database, session_id: uuid.UUID, is_typing: bool, *, role: str = "seeker", **kw: Any
) -> Outbox:
    outbox = Outbox()
    user_id = SEEKER if role == "seeker" else PROVIDER
    async with db.transaction() as s:
        await chat.set_typing(
            s,
            outbox,
            session_id=session_id,
            user_id=user_id,
            role=role,
            is_typing=is_typing,
            **kw,
        )
    return outbox


async def typing_row(db: Database, user_id: str = SEEKER) -> TypingIndicator:
    async with db.transaction() as s:
        query = select(TypingIndicator).where(TypingIndicator.user_id == user_id)
        return (await s.execute(query)).scalar_one()


# --- start_chat ------------------------------------------------------------------------------


async def test_start_chat_opens_the_room_and_tells_both(db: Database) -> None:
    session_id = await new_session(db, last_seq=1)
    outbox = Outbox()
    now = utcnow()
    async with db.transaction() as s:
        answer = await chat.start_chat(
            s, outbox, session_id=session_id, user_id=PROVIDER, role="provider", now=now
        )

    stored = await load_session(db, session_id)
    assert stored.chat_room_id is not None
    assert stored.chat_started_at == now
    (event,) = answer.events
    assert (event.seq, event.kind, event.data) == (
        2,
        "chat_ready",
        {"chat_room_id": str(stored.chat_room_id)},
    )
    assert answer.frame is None
    assert published_events(outbox) == [
        (SEEKER_CH, event.to_wire()),
        (PROVIDER_CH, event.to_wire()),
    ]
    assert await event_count(db) == 1


async def test_start_chat_again_answers_the_caller_alone_without_seq(db: Database) -> None:
    session_id = await new_session(db)
    async with db.transaction() as s:
        await chat.start_chat(s, Outbox(), session_id=session_id, user_id=SEEKER, role="seeker")
    outbox = Outbox()
    async with db.transaction() as s:
        answer = await chat.start_chat(
            s, outbox, session_id=session_id, user_id=PROVIDER, role="provider"
        )

    stored = await load_session(db, session_id)
    assert answer.events == ()
    assert answer.frame == {
        "type": "chat_ready",
        "session_id": str(session_id),
        "chat_room_id": str(stored.chat_room_id),
    }
    assert not outbox
    assert stored.last_seq == 1
    assert await event_count(db) == 1


# --- chat_message ----------------------------------------------------------------------------


async def test_first_message_starts_the_chat(db: Database) -> None:
    session_id = await new_session(db, last_seq=3)
    outbox = Outbox()
    answer = await send(db, session_id, client_msg_id="c-1", outbox=outbox)

    ready, message_event = answer.events
    stored = await load_session(db, session_id)
    assert (ready.kind, ready.seq) == ("chat_ready", 4)
    assert ready.data == {"chat_room_id": str(stored.chat_room_id)}
    assert (message_event.kind, message_event.seq) == ("chat_message", 5)
    assert published_events(outbox) == [
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
    outbox = Outbox()
    answer = await send(db, session_id, role="provider", text="Hi", outbox=outbox)

    (event,) = answer.events
    assert (event.kind, event.seq, event.data["sender_type"]) == ("chat_message", 3, "provider")
    assert [ch for ch, _ in published(outbox)] == [SEEKER_CH, PROVIDER_CH]


async def test_recipient_sees_the_sender_type_and_never_a_user_id(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id)  # the room is open: only the message remains
    outbox = Outbox()
    answer = await send(db, session_id, text="Where are you?", outbox=outbox)

    (event,) = answer.events
    frame = render(event, "provider")
    assert frame == {
        "type": "chat_message",
        "session_id": str(session_id),
        "message_id": event.data["message_id"],
        "sender_type": "seeker",
        "message": "Where are you?",
        "created_at": isoformat_z(event.created_at),
        "seq": 3,
    }
    for _, payload in outbox.messages:
        assert SEEKER.encode() not in payload
        assert PROVIDER.encode() not in payload


async def test_sender_gets_the_rendered_ack(db: Database) -> None:
    session_id = await new_session(db)
    now = utcnow()
    async with db.transaction() as s:
        answer = await chat.send_message(
            s,
            Outbox(),
            session_id=session_id,
            user_id=PROVIDER,
            role="provider",
            text="On my way",
            client_msg_id="p-1",
            now=now,
        )

    event = answer.events[-1]
    (row,) = await messages(db)
    assert render(event, "provider") == {
        "type": "chat_message_ack",
        "session_id": str(session_id),
        "message_id": str(row.message_id),
        "client_msg_id": "p-1",
        "status": "sent",
        "created_at": isoformat_z(now),
        "seq": 2,
    }


async def test_retry_with_the_same_client_msg_id_answers_the_original_ack(db: Database) -> None:
    session_id = await new_session(db)
    first = await send(db, session_id, client_msg_id="c-1")
    outbox = Outbox()
    retry = await send(db, session_id, text="Hello again", client_msg_id="c-1", outbox=outbox)

    assert retry.events == ()
    assert retry.frame == render(first.events[-1], "seeker")
    assert not outbox
    assert len(await messages(db)) == 1
    assert (await load_session(db, session_id)).last_seq == 2


async def test_another_sender_may_reuse_a_client_msg_id(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id, client_msg_id="c-1")
    answer = await send(db, session_id, role="provider", client_msg_id="c-1")

    assert [e.kind for e in answer.events] == ["chat_message"]
    assert [m.sender_type for m in await messages(db)] == ["seeker", "provider"]


async def test_concurrent_duplicates_store_one_message(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id)  # open the room, so both answers have the same shape

    first, second = await asyncio.gather(
        send(db, session_id, text="Twice", client_msg_id="dup"),
        send(db, session_id, text="Twice", client_msg_id="dup"),
    )

    stored = [m for m in await messages(db) if m.client_msg_id == "dup"]
    assert len(stored) == 1
    acks = [
        a.frame if a.frame is not None else render(a.events[-1], "seeker") for a in (first, second)
    ]
    assert acks[0] == acks[1]
    assert acks[0] is not None
    assert acks[0]["message_id"] == str(stored[0].message_id)
    assert sorted(bool(a.events) for a in (first, second)) == [False, True]


async def test_messages_without_client_msg_id_are_never_deduplicated(db: Database) -> None:
    session_id = await new_session(db)
    await send(db, session_id)
    await send(db, session_id)

    assert len(await messages(db)) == 2


# --- refused frames --------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["start_chat", "send_message", "set_typing"])
async def test_chat_frames_into_an_ended_session_are_invalid_state(
    db: Database, operation: str
) -> None:
    session_id = await new_session(db, state="cancelled")
    outbox = Outbox()
    common = {"session_id": session_id, "user_id": SEEKER, "role": "seeker"}
    extra = {
        "start_chat": {},
        "send_message": {"text": "Hello", "client_msg_id": None},
        "set_typing": {"is_typing": True},
    }[operation]

    with pytest.raises(InvalidState):
        async with db.transaction() as s:
            await getattr(chat, operation)(s, outbox, **common, **extra)
    assert not outbox
    assert await messages(db) == []


@pytest.mark.parametrize("operation", ["start_chat", "send_message", "set_typing"])
@pytest.mark.parametrize(
    ("user_id", "role"),
    [("stranger", "seeker"), (SEEKER, "provider"), ("stranger", "provider")],
    ids=["outsider", "wrong-role", "outsider-provider"],
)
async def test_outsiders_get_session_not_found(
    db: Database, operation: str, user_id: str, role: str
) -> None:
    session_id = await new_session(db)
    outbox = Outbox()
    extra = {
        "start_chat": {},
        "send_message": {"text": "Hello", "client_msg_id": None},
        "set_typing": {"is_typing": True},
    }[operation]

    with pytest.raises(SessionNotFound):
        async with db.transaction() as s:
            await getattr(chat, operation)(
                s, outbox, session_id=session_id, user_id=user_id, role=role, **extra
            )
    assert not outbox


async def test_unknown_session_is_session_not_found(db: Database) -> None:
    with pytest.raises(SessionNotFound):
        await send(db, uuid.uuid4())


# --- receipts --------------------------------------------------------------------------------


async def sent_message(db: Database, session_id: uuid.UUID) -> uuid.UUID:
    answer = await send(db, session_id)
    return uuid.UUID(answer.events[-1].data["message_id"])


def status_updates(outbox: Outbox) -> list[tuple[int, str]]:
    """(seq, status) of each event, checking it reached both and only the sender renders it."""
    events = published_events(outbox)
    assert [ch for ch, _ in events] == [SEEKER_CH, PROVIDER_CH] * (len(events) // 2)
    result = []
    for _, wire in events[::2]:
        event = LoggedEvent.from_wire(wire)
        assert event.kind == "message_status"
        assert event.data["sender_type"] == "seeker"
        assert render(event, "provider") is None
        frame = render(event, "seeker")
        assert frame is not None
        assert frame["type"] == "message_status_update"
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

    outbox = await ack(db, message_id, "read", now=now)

    assert status_updates(outbox) == [(3, "delivered"), (4, "read")]
    (row,) = await messages(db)
    assert (row.delivery_status, row.delivered_at, row.read_at) == ("read", now, now)


async def test_a_repeated_delivered_changes_and_sends_nothing(db: Database) -> None:
    session_id = await new_session(db)
    message_id = await sent_message(db, session_id)
    first_at = utcnow()
    await ack(db, message_id, "delivered", now=first_at)

    outbox = await ack(db, message_id, "delivered", now=first_at + timedelta(seconds=1))

    assert not outbox
    (row,) = await messages(db)
    assert (row.delivery_status, row.delivered_at) == ("delivered", first_at)
    assert (await load_session(db, session_id)).last_seq == 3


async def test_delivered_after_read_changes_and_sends_nothing(db: Database) -> None:
    session_id = await new_session(db)
    message_id = await sent_message(db, session_id)
    await ack(db, message_id, "read")

    outbox = await ack(db, message_id, "delivered")

    assert not outbox
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
    db: Database, user_id: str, role: str
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


def typing_frames(outbox: Outbox) -> list[tuple[str, dict[str, Any]]]:
    return [(ch, body["frame"]) for ch, body in published(outbox)]


async def test_typing_tells_the_other_participant_only(db: Database) -> None:
    session_id = await new_session(db)
    now = utcnow()

    outbox = await typing(db, session_id, True, now=now)

    assert typing_frames(outbox) == [
        (
            PROVIDER_CH,
            {
                "type": "typing_indicator",
                "session_id": str(session_id),
                "sender_type": "seeker",
                "is_typing": True,
            },
        )
    ]
    row = await typing_row(db)
    assert (row.is_typing, row.last_typing_at, row.user_type) == (True, now, "seeker")


async def test_typing_true_again_only_refreshes_the_time(db: Database) -> None:
    session_id = await new_session(db)
    first = utcnow()
    await typing(db, session_id, True, role="provider", now=first)

    outbox = await typing(db, session_id, True, role="provider", now=first + timedelta(seconds=3))

    assert not outbox
    row = await typing_row(db, PROVIDER)
    assert (row.is_typing, row.last_typing_at) == (True, first + timedelta(seconds=3))


async def test_typing_false_after_true_tells_the_other_participant(db: Database) -> None:
    session_id = await new_session(db)
    await typing(db, session_id, True, role="provider")

    outbox = await typing(db, session_id, False, role="provider")

    assert typing_frames(outbox) == [
        (
            SEEKER_CH,
            {
                "type": "typing_indicator",
                "session_id": str(session_id),
                "sender_type": "provider",
                "is_typing": False,
            },
        )
    ]
    assert (await typing_row(db, PROVIDER)).is_typing is False


async def test_typing_false_when_not_typing_sends_nothing(db: Database) -> None:
    session_id = await new_session(db)

    outbox = await typing(db, session_id, False)

    assert not outbox
    assert (await typing_row(db)).is_typing is False


async def test_stale_typing_is_stopped_once(db: Database) -> None:
    session_id = await new_session(db)
    start = utcnow()
    await typing(db, session_id, True, now=start)  # seeker: goes stale
    await typing(db, session_id, True, role="provider", now=start + timedelta(seconds=4))

    async def sweep(at_s: float) -> tuple[int, Outbox]:
        outbox = Outbox()
        async with db.transaction() as s:
            count = await chat.stop_stale_typing(
                s, outbox, timeout_s=6, now=start + timedelta(seconds=at_s)
            )
        return count, outbox

    assert (await sweep(5.9))[0] == 0
    count, outbox = await sweep(6)
    assert count == 1
    assert typing_frames(outbox) == [
        (
            PROVIDER_CH,
            {
                "type": "typing_indicator",
                "session_id": str(session_id),
                "sender_type": "seeker",
                "is_typing": False,
            },
        )
    ]
    assert (await typing_row(db)).is_typing is False
    assert (await typing_row(db, PROVIDER)).is_typing is True

    again, outbox = await sweep(7)
    assert again == 0
    assert not outbox


async def test_stale_typing_in_an_ended_session_is_stopped_silently(db: Database) -> None:
    start = utcnow()
    async with db.transaction() as s:
        session = await make_work_session(
            s, seeker_id=SEEKER, provider_id=PROVIDER, state="cancelled", cancelled_at=start
        )
        s.add(
            TypingIndicator(
                session_id=session.id,
                user_id=SEEKER,
                user_type="seeker",
                is_typing=True,
                last_typing_at=start - timedelta(seconds=10),
            )
        )
    outbox = Outbox()
    async with db.transaction() as s:
        count = await chat.stop_stale_typing(s, outbox, timeout_s=6, now=start)

    assert count == 1
    assert not outbox
    assert (await typing_row(db)).is_typing is False
