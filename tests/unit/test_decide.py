"""The rules of the service, driven through the pure deciding functions with no database.

Every command is decided against a :class:`World` built in memory; a batch is imitated by
``world.apply(decision)`` between commands, exactly as the pipeline does. Nothing here opens
a connection (a module fixture makes any socket connect fail) or reads the clock: every time
is a fixed aware UTC datetime.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import socket
import typing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worksession.availability.flags import Availability
from worksession.decide import DECIDERS, decide
from worksession.errors import (
    Forbidden,
    InvalidState,
    MessageNotFound,
    NoProviderAvailable,
    ProviderBusy,
    RateLimited,
    SeekerBusy,
    SessionNotFound,
    ValidationFailed,
    WorkNotFound,
    WorksessionError,
    WorkUnavailable,
)
from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.render import render
from worksession.geo import EARTH_RADIUS_M, Fix
from worksession.orders.offers import order_view
from worksession.orders.schemas import WorkOrderCreated
from worksession.pipeline import commands as c
from worksession.pipeline.commands import Actor
from worksession.pipeline.decision import (
    ANSWERED_BY_EVENT,
    AnswerFrame,
    Decision,
    DistanceSent,
    ExpireChat,
    FinishOrder,
    FixDropped,
    MessageDelivered,
    Notice,
    OfferOutcome,
    PutMessage,
    PutOffer,
    PutOrder,
    PutSession,
    Result,
    SessionEnded,
    SetFlag,
    Sweep,
)
from worksession.pipeline.rows import MessageRow, OfferRow, OrderRow, Policy, SessionRow
from worksession.pipeline.world import World
from worksession.protocol import outbound as out
from worksession.protocol.outbound import encode
from worksession.sessions.schemas import LocationRules
from worksession.sessions.states import SessionState

# --- fixed values --------------------------------------------------------------------------

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
RULES = LocationRules(
    move_threshold_m=50.0, nearby_m=300.0, arrived_m=50.0, max_accuracy_m=100.0, max_speed_kmh=200.0
)
RETENTION = timedelta(hours=24)
OFFER_TTL = timedelta(seconds=120)
POLICY = Policy(location=RULES, retention=RETENTION, offer_ttl=OFFER_TTL)

SEEKER = "seeker-1"
PROVIDER = "provider-1"
STRANGER = "stranger-1"
SID = uuid.UUID(int=0x5E55)
OTHER_SID = uuid.UUID(int=0x5E56)
ROOM = uuid.UUID(int=0x800)
WORK = 7
MID = uuid.UUID(int=0x111)
"""The message of the receipt tests."""

AS_SEEKER = Actor(SEEKER, "seeker")
AS_PROVIDER = Actor(PROVIDER, "provider")
AS_STRANGER_SEEKER = Actor(STRANGER, "seeker")
AS_STRANGER_PROVIDER = Actor(STRANGER, "provider")

BASE_LAT, BASE_LNG = 12.9716, 77.5946
MOBILE = {"call": "9876543210"}

S = SessionState
ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    S.WAITING: frozenset({S.ACTIVE, S.CANCELLED, S.COMPLETED}),
    S.ACTIVE: frozenset({S.CANCELLED, S.COMPLETED}),
    S.CANCELLED: frozenset(),
    S.COMPLETED: frozenset(),
}
"""The session transitions the contract allows (what the deleted transition table said)."""

STATUS_RANK = {"sent": 0, "delivered": 1, "read": 2}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


@pytest.fixture(autouse=True, scope="module")
def _no_sockets() -> Iterator[None]:
    """Deciding is pure: anything that tries to reach a server fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a deciding function tried to open a connection")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


# --- factories -----------------------------------------------------------------------------


def session_row(
    state: str = "active",
    *,
    session_id: uuid.UUID = SID,
    seeker: str = SEEKER,
    provider: str = PROVIDER,
    work_id: int = WORK,
    last_seq: int = 2,
    updated_at: datetime = T0,
    **columns: Any,
) -> SessionRow:
    return SessionRow(
        pk=1,
        session_id=session_id,
        work_order_id=work_id,
        seeker_id=seeker,
        provider_id=provider,
        connection_state=state,
        last_seq=last_seq,
        created_at=T0,
        updated_at=updated_at,
        **columns,
    )


def message_row(
    sender_type: str = "seeker",
    *,
    message_id: uuid.UUID = MID,
    session_id: uuid.UUID = SID,
    status: str = "sent",
    seq: int = 2,
    client_msg_id: str | None = None,
    expires_at: datetime | None = None,
) -> MessageRow:
    return MessageRow(
        pk=1,
        message_id=message_id,
        session_id=session_id,
        sender_id=SEEKER if sender_type == "seeker" else PROVIDER,
        sender_type=sender_type,
        message_text="hello",
        client_msg_id=client_msg_id,
        seq=seq,
        delivery_status=status,
        created_at=T0,
        updated_at=T0,
        expires_at=expires_at,
    )


def order_row(
    work_id: int = WORK,
    *,
    seeker: str = SEEKER,
    status: str = "pending",
    expires_at: datetime = T0 + OFFER_TTL,
) -> OrderRow:
    return OrderRow(
        id=work_id,
        seeker_id=seeker,
        status=status,
        details={"task": "fix the tap"},
        seeker_latitude=None,
        seeker_longitude=None,
        offer_expires_at=expires_at,
        created_at=T0,
        updated_at=T0,
    )


def offer_row(provider: str, work_id: int = WORK, *, status: str = "offered") -> OfferRow:
    return OfferRow(
        work_order_id=work_id, provider_id=provider, status=status, created_at=T0, updated_at=T0
    )


def world_of(**rows: Any) -> World:
    return World.of(POLICY, **rows)


def north(metres: float) -> float:
    """The latitude ``metres`` north of the base point (same longitude)."""
    return BASE_LAT + math.degrees(metres / EARTH_RADIUS_M)


def fix_at(
    metres: float, *, accuracy: float | None = 5.0, recorded_at: datetime | None = None
) -> Fix:
    return Fix(north(metres), BASE_LNG, accuracy, recorded_at)


def positioned(
    seeker_m: float | None = None,
    provider_m: float | None = None,
    *,
    baseline: tuple[float, float] | None = None,
    **columns: Any,
) -> SessionRow:
    """An active session with the two sides at these metres north of the base point, and the
    distance baseline at ``baseline`` (seeker, provider) when given."""
    if seeker_m is not None:
        columns |= {"seeker_latitude": north(seeker_m), "seeker_longitude": BASE_LNG}
    if provider_m is not None:
        columns |= {"provider_latitude": north(provider_m), "provider_longitude": BASE_LNG}
    if baseline is not None:
        columns |= {
            "distance_seeker_latitude": north(baseline[0]),
            "distance_seeker_longitude": BASE_LNG,
            "distance_provider_latitude": north(baseline[1]),
            "distance_provider_longitude": BASE_LNG,
            "current_distance_meters": baseline[1] - baseline[0],
            "last_distance_update": T0,
        }
    return session_row(**columns)


# --- helpers -------------------------------------------------------------------------------


def step(world: World, command: c.Command, now: datetime) -> Decision:
    """Decide ``command`` and apply it, as the pipeline does inside a batch."""
    before = copy.deepcopy(world)
    decision = decide(world, command, now)
    assert world == before, "deciding changed the world"
    world.apply(decision)
    return decision


def refused(
    world: World, command: c.Command, now: datetime, error: type[WorksessionError]
) -> WorksessionError:
    """``command`` is refused with ``error`` and leaves the world as it was."""
    before = copy.deepcopy(world)
    with pytest.raises(error) as caught:
        decide(world, command, now)
    assert type(caught.value) is error
    assert world == before
    return caught.value


def kinds(decision: Decision) -> list[tuple[int, str]]:
    return [(event.seq, event.kind) for event in decision.events]


def writes_of(decision: Decision, kind: type[Any]) -> list[Any]:
    return [write for write in decision.writes if isinstance(write, kind)]


def the_session(decision: Decision) -> SessionRow:
    (put,) = writes_of(decision, PutSession)
    row = put.row
    assert isinstance(row, SessionRow)
    return row


def the_message(decision: Decision) -> MessageRow:
    (put,) = writes_of(decision, PutMessage)
    row = put.row
    assert isinstance(row, MessageRow)
    return row


def notices(decision: Decision) -> list[Notice]:
    return [item for item in decision.out if isinstance(item, Notice)]


BOTH = (("seeker", SEEKER), ("provider", PROVIDER))


# =========================================================================================
# chat
# =========================================================================================


def test_start_chat_first_opens_the_room_with_a_logged_chat_ready() -> None:
    world = world_of(sessions=[session_row(last_seq=4)])
    decision = step(world, c.StartChat(SID, AS_PROVIDER, chat_room_id=ROOM), at(10))

    assert decision.events == (
        LoggedEvent(SID, 5, "chat_ready", {"chat_room_id": str(ROOM)}, at(10)),
    )
    assert decision.reply is ANSWERED_BY_EVENT
    session = the_session(decision)
    assert (session.chat_room_id, session.chat_started_at) == (ROOM, at(10))
    assert (session.last_seq, session.updated_at, session.connection_state) == (5, at(10), "active")
    assert world.sessions[SID] == session


def test_start_chat_repeated_answers_the_caller_alone_with_no_seq() -> None:
    world = world_of(sessions=[session_row(last_seq=4)])
    step(world, c.StartChat(SID, AS_SEEKER, chat_room_id=ROOM), at(10))

    again = step(world, c.StartChat(SID, AS_PROVIDER, chat_room_id=uid(0x999)), at(20))

    expected = out.ChatReady(type="chat_ready", session_id=str(SID), chat_room_id=str(ROOM))
    assert again == Decision(reply=AnswerFrame(expected))
    assert isinstance(again.reply, AnswerFrame)
    assert again.reply.frame.seq is None  # type: ignore[attr-defined]
    assert '"seq"' not in encode(again.reply.frame)
    assert world.sessions[SID].last_seq == 5
    assert world.sessions[SID].chat_room_id == ROOM


def test_send_opens_the_room_first_then_logs_the_message() -> None:
    world = world_of(sessions=[session_row(last_seq=3)])
    command = c.SendMessage(
        SID, AS_SEEKER, "Hi there", "c-1", message_id=uid(0xA1), chat_room_id=ROOM
    )
    decision = step(world, command, at(5))

    assert kinds(decision) == [(4, "chat_ready"), (5, "chat_message")]
    assert decision.events[0].data == {"chat_room_id": str(ROOM)}
    assert decision.events[1].data == {
        "message_id": str(uid(0xA1)),
        "sender_type": "seeker",
        "message": "Hi there",
        "client_msg_id": "c-1",
    }
    assert decision.reply is ANSWERED_BY_EVENT
    session = the_session(decision)
    assert (session.chat_room_id, session.chat_started_at, session.last_seq) == (ROOM, at(5), 5)
    (put,) = writes_of(decision, PutMessage)
    assert put.new is True
    assert put.row == MessageRow(
        pk=None,
        message_id=uid(0xA1),
        session_id=SID,
        sender_id=SEEKER,
        sender_type="seeker",
        message_text="Hi there",
        client_msg_id="c-1",
        seq=5,
        delivery_status="sent",
        created_at=at(5),
        updated_at=at(5),
    )


def test_send_in_an_open_room_logs_only_the_message() -> None:
    world = world_of(sessions=[session_row(last_seq=3, chat_room_id=ROOM, chat_started_at=T0)])
    command = c.SendMessage(SID, AS_PROVIDER, "On my way", None, message_id=uid(0xA2))
    decision = step(world, command, at(5))

    assert kinds(decision) == [(4, "chat_message")]
    session = the_session(decision)
    assert (session.chat_room_id, session.chat_started_at) == (ROOM, T0)
    message = the_message(decision)
    assert (message.sender_id, message.sender_type, message.seq) == (PROVIDER, "provider", 4)


def test_a_retried_client_msg_id_earlier_in_the_same_batch_gets_the_original_ack() -> None:
    world = world_of(sessions=[session_row(last_seq=1, chat_room_id=ROOM)])
    first = step(world, c.SendMessage(SID, AS_SEEKER, "one", "dup", message_id=uid(1)), at(1))
    (original,) = first.events

    retry = c.SendMessage(SID, AS_SEEKER, "one (retried)", "dup", message_id=uid(2))
    again = step(world, retry, at(9))

    assert again.out == ()
    assert again.writes == ()
    assert isinstance(again.reply, AnswerFrame)
    ack = render(original, "seeker")
    assert isinstance(ack, out.ChatMessageAck)
    assert encode(again.reply.frame) == encode(ack)
    assert ack.seq == 2
    assert ack.message_id == str(uid(1))
    assert set(world.messages) == {uid(1)}
    assert world.sessions[SID].last_seq == 2


def test_a_full_session_refuses_messages_counted_across_both_sides_and_a_batch() -> None:
    world = World.of(
        dataclasses.replace(POLICY, max_messages_per_session=3),
        sessions=[session_row(last_seq=1, chat_room_id=ROOM)],
    )
    step(world, c.SendMessage(SID, AS_SEEKER, "one", "k", message_id=uid(1)), at(1))
    step(world, c.SendMessage(SID, AS_PROVIDER, "two", None, message_id=uid(2)), at(2))
    third = step(world, c.SendMessage(SID, AS_SEEKER, "three", None, message_id=uid(3)), at(3))
    assert the_session(third).message_count == 3

    with pytest.raises(RateLimited) as refused:
        decide(world, c.SendMessage(SID, AS_PROVIDER, "four", None, message_id=uid(4)), at(4))
    assert refused.value.retry_after_ms == 86_400_000
    assert set(world.messages) == {uid(1), uid(2), uid(3)}
    # A retry of a message stored before the cap is still answered with its ack.
    retry = step(world, c.SendMessage(SID, AS_SEEKER, "one", "k", message_id=uid(5)), at(5))
    assert isinstance(retry.reply, AnswerFrame)


def test_a_client_msg_id_stored_before_the_batch_is_deduplicated_too() -> None:
    stored = message_row("provider", message_id=uid(0xB0), seq=6, client_msg_id="x")
    world = world_of(sessions=[session_row(last_seq=6, chat_room_id=ROOM)], messages=[stored])
    decision = step(world, c.SendMessage(SID, AS_PROVIDER, "again", "x", message_id=uid(3)), at(9))

    assert decision.writes == ()
    assert decision.out == ()
    assert isinstance(decision.reply, AnswerFrame)
    frame = decision.reply.frame
    assert isinstance(frame, out.ChatMessageAck)
    assert (frame.message_id, frame.seq, frame.client_msg_id) == (str(uid(0xB0)), 6, "x")
    assert frame.created_at == T0


def test_the_same_client_msg_id_from_the_other_side_or_session_is_a_new_message() -> None:
    world = world_of(
        sessions=[
            session_row(last_seq=1, chat_room_id=ROOM),
            session_row(
                session_id=OTHER_SID, seeker="s-2", provider="p-2", work_id=8, chat_room_id=ROOM
            ),
        ]
    )
    step(world, c.SendMessage(SID, AS_SEEKER, "a", "same", message_id=uid(1)), at(1))
    other_side = step(world, c.SendMessage(SID, AS_PROVIDER, "b", "same", message_id=uid(2)), at(2))
    other_session = step(
        world,
        c.SendMessage(OTHER_SID, Actor("s-2", "seeker"), "c", "same", message_id=uid(3)),
        at(3),
    )

    assert kinds(other_side) == [(3, "chat_message")]
    assert kinds(other_session) == [(3, "chat_message")]
    assert set(world.messages) == {uid(1), uid(2), uid(3)}


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(c.StartChat(SID, AS_SEEKER, chat_room_id=ROOM), id="start_chat"),
        pytest.param(c.SendMessage(SID, AS_SEEKER, "hi", "c", message_id=uid(1)), id="send"),
    ],
)
@pytest.mark.parametrize("state", ["cancelled", "completed"])
def test_chat_in_an_ended_session_is_invalid_state(command: c.Command, state: str) -> None:
    refused(world_of(sessions=[session_row(state)]), command, at(1), InvalidState)


@pytest.mark.parametrize(
    "actor",
    [
        AS_STRANGER_SEEKER,
        AS_STRANGER_PROVIDER,
        Actor(SEEKER, "provider"),
        Actor(PROVIDER, "seeker"),
    ],
    ids=["stranger-seeker", "stranger-provider", "seeker-as-provider", "provider-as-seeker"],
)
def test_chat_by_a_non_participant_is_session_not_found(actor: Actor) -> None:
    world = world_of(sessions=[session_row()])
    refused(world, c.StartChat(SID, actor, chat_room_id=ROOM), at(1), SessionNotFound)
    refused(world, c.SendMessage(SID, actor, "hi", "c", message_id=uid(1)), at(1), SessionNotFound)


def test_chat_in_an_unknown_session_is_session_not_found() -> None:
    world = world_of(sessions=[session_row()])
    refused(world, c.StartChat(OTHER_SID, AS_SEEKER), at(1), SessionNotFound)
    refused(world, c.SendMessage(OTHER_SID, AS_SEEKER, "hi"), at(1), SessionNotFound)


# =========================================================================================
# receipts
# =========================================================================================


def receipt_world(status: str = "sent", **session_columns: Any) -> World:
    columns: dict[str, Any] = {"last_seq": 5, "chat_room_id": ROOM, **session_columns}
    return world_of(
        sessions=[session_row(**columns)],
        messages=[message_row("seeker", status=status, seq=5)],
    )


def status_event(seq: int, status: str, now: datetime) -> LoggedEvent:
    return LoggedEvent(
        SID,
        seq,
        "message_status",
        {"message_id": str(MID), "status": status, "sender_type": "seeker"},
        now,
    )


def test_receipts_step_sent_delivered_read_one_event_each() -> None:
    world = receipt_world()

    delivered = step(world, c.AcknowledgeMessage(MID, AS_PROVIDER, "delivered"), at(3))
    assert delivered.events == (status_event(6, "delivered", at(3)),)
    assert delivered.observations == (MessageDelivered(created_at=T0, delivered_at=at(3)),)
    assert delivered.reply is None
    message = the_message(delivered)
    assert (message.delivery_status, message.delivered_at, message.read_at) == (
        "delivered",
        at(3),
        None,
    )
    assert writes_of(delivered, PutMessage)[0].new is False
    assert the_session(delivered).last_seq == 6

    read = step(world, c.AcknowledgeMessage(MID, AS_PROVIDER, "read"), at(8))
    assert read.events == (status_event(7, "read", at(8)),)
    assert read.observations == ()
    message = the_message(read)
    assert (message.delivery_status, message.delivered_at, message.read_at) == (
        "read",
        at(3),
        at(8),
    )
    assert world.messages[MID] == message
    assert world.sessions[SID].last_seq == 7


def test_read_on_a_sent_message_logs_both_steps_in_one_decision() -> None:
    world = receipt_world()
    decision = step(world, c.AcknowledgeMessage(MID, AS_PROVIDER, "read"), at(4))

    assert decision.events == (
        status_event(6, "delivered", at(4)),
        status_event(7, "read", at(4)),
    )
    assert decision.observations == (MessageDelivered(created_at=T0, delivered_at=at(4)),)
    message = the_message(decision)
    assert (message.delivery_status, message.delivered_at, message.read_at) == (
        "read",
        at(4),
        at(4),
    )
    assert the_session(decision).last_seq == 7
    for event in decision.events:
        # 1.1: the recipient (the provider here) gets the very same frame as the sender.
        frame = render(event, "seeker")
        assert isinstance(frame, out.MessageStatusUpdate)
        assert render(event, "provider") == frame


@pytest.mark.parametrize(
    ("status", "receipt"),
    [
        ("delivered", "delivered"),
        ("read", "read"),
        ("read", "delivered"),
    ],
    ids=["delivered-again", "read-again", "backward"],
)
def test_repeated_and_backward_receipts_do_nothing(status: str, receipt: str) -> None:
    world = receipt_world(status)
    before = copy.deepcopy(world)
    decision = step(world, c.AcknowledgeMessage(MID, AS_PROVIDER, receipt), at(4))  # type: ignore[arg-type]
    assert decision == Decision()
    assert world == before


def test_a_receipt_for_ones_own_message_is_forbidden() -> None:
    world = receipt_world()
    refused(world, c.AcknowledgeMessage(MID, AS_SEEKER, "delivered"), at(1), Forbidden)
    refused(world, c.AcknowledgeMessage(MID, AS_SEEKER, "read"), at(1), Forbidden)


@pytest.mark.parametrize(
    "actor",
    [AS_STRANGER_PROVIDER, AS_STRANGER_SEEKER, Actor(PROVIDER, "seeker")],
    ids=["stranger-provider", "stranger-seeker", "provider-in-the-wrong-role"],
)
def test_a_receipt_from_a_stranger_is_message_not_found(actor: Actor) -> None:
    refused(receipt_world(), c.AcknowledgeMessage(MID, actor, "read"), at(1), MessageNotFound)


def test_a_receipt_for_an_unknown_message_is_message_not_found() -> None:
    refused(
        receipt_world(),
        c.AcknowledgeMessage(uid(0xDEAD), AS_PROVIDER, "read"),
        at(1),
        MessageNotFound,
    )


def test_a_receipt_for_an_expired_message_is_message_not_found() -> None:
    world = world_of(
        sessions=[session_row("cancelled", last_seq=6, chat_room_id=ROOM, cancelled_at=T0)],
        messages=[message_row("seeker", status="sent", seq=5, expires_at=at(60))],
    )
    refused(world, c.AcknowledgeMessage(MID, AS_PROVIDER, "read"), at(60), MessageNotFound)
    refused(world, c.AcknowledgeMessage(MID, AS_PROVIDER, "delivered"), at(61), MessageNotFound)


@pytest.mark.parametrize("state", ["cancelled", "completed"])
def test_a_receipt_in_an_ended_session_is_invalid_state(state: str) -> None:
    world = world_of(
        sessions=[session_row(state, last_seq=6, chat_room_id=ROOM)],
        messages=[message_row("seeker", status="sent", seq=5, expires_at=at(3600))],
    )
    refused(world, c.AcknowledgeMessage(MID, AS_PROVIDER, "delivered"), at(60), InvalidState)


def test_a_receipt_after_the_session_ended_in_the_same_batch_is_invalid_state() -> None:
    world = receipt_world()
    step(world, c.CancelSession(SID, AS_SEEKER), at(1))
    refused(world, c.AcknowledgeMessage(MID, AS_PROVIDER, "read"), at(2), InvalidState)


# =========================================================================================
# mediums
# =========================================================================================


@pytest.mark.parametrize("mediums", [{}, MOBILE], ids=["empty", "one"])
def test_the_first_selection_even_empty_makes_the_session_active(mediums: dict[str, str]) -> None:
    world = world_of(sessions=[session_row("waiting", last_seq=1)])
    decision = step(world, c.SelectMediums(SID, SEEKER, mediums), at(30))

    assert decision.events == (
        LoggedEvent(
            SID, 2, "mediums_selected", {"mediums": mediums, "connection_state": "active"}, at(30)
        ),
    )
    assert decision.reply is ANSWERED_BY_EVENT
    session = the_session(decision)
    assert session.connection_state == "active"
    assert session.seeker_selected_mediums == mediums
    assert session.mediums_shared_at == at(30)
    assert session.last_seq == 2
    seeker_frame = render(decision.events[0], "seeker")
    provider_frame = render(decision.events[0], "provider")
    assert isinstance(seeker_frame, out.MediumsSelected)
    assert isinstance(provider_frame, out.SeekerMediumsSelected)


def test_a_later_selection_replaces_the_earlier() -> None:
    world = world_of(sessions=[session_row("waiting", last_seq=1)])
    step(
        world, c.SelectMediums(SID, SEEKER, {"call": "9876543210", "whatsapp": "9876543211"}), at(1)
    )
    decision = step(world, c.SelectMediums(SID, SEEKER, {"telegram": "9123456789"}), at(2))

    assert kinds(decision) == [(3, "mediums_selected")]
    assert decision.events[0].data == {
        "mediums": {"telegram": "9123456789"},
        "connection_state": "active",
    }
    assert world.sessions[SID].seeker_selected_mediums == {"telegram": "9123456789"}
    assert world.sessions[SID].connection_state == "active"


@pytest.mark.parametrize("state", ["waiting", "active"])
def test_a_share_keeps_the_state(state: str) -> None:
    world = world_of(sessions=[session_row(state, last_seq=3)])
    decision = step(world, c.ShareMediums(SID, PROVIDER, MOBILE), at(4))

    assert decision.events == (LoggedEvent(SID, 4, "mediums_shared", {"mediums": MOBILE}, at(4)),)
    assert decision.reply is ANSWERED_BY_EVENT
    session = the_session(decision)
    assert session.connection_state == state
    assert session.provider_selected_mediums == MOBILE
    assert session.seeker_selected_mediums is None

    later = step(world, c.ShareMediums(SID, PROVIDER, {"whatsapp": "9000000001"}), at(5))
    assert the_session(later).provider_selected_mediums == {"whatsapp": "9000000001"}
    assert the_session(later).connection_state == state


@pytest.mark.parametrize("user", [PROVIDER, STRANGER])
def test_only_the_seeker_selects(user: str) -> None:
    world = world_of(sessions=[session_row("waiting")])
    refused(world, c.SelectMediums(SID, user, MOBILE), at(1), SessionNotFound)


@pytest.mark.parametrize("user", [SEEKER, STRANGER])
def test_only_the_provider_shares(user: str) -> None:
    world = world_of(sessions=[session_row("waiting")])
    refused(world, c.ShareMediums(SID, user, MOBILE), at(1), SessionNotFound)


def test_mediums_of_an_unknown_session_are_session_not_found() -> None:
    world = world_of(sessions=[session_row()])
    refused(world, c.SelectMediums(OTHER_SID, SEEKER, MOBILE), at(1), SessionNotFound)
    refused(world, c.ShareMediums(OTHER_SID, PROVIDER, MOBILE), at(1), SessionNotFound)


# =========================================================================================
# location
# =========================================================================================


@pytest.mark.parametrize(
    ("session", "fix", "verdict"),
    [
        pytest.param(session_row(), fix_at(0, accuracy=100.5), "inaccurate", id="inaccurate"),
        pytest.param(session_row(), fix_at(0, accuracy=math.nan), "inaccurate", id="nan-accuracy"),
        pytest.param(
            positioned(provider_m=100, provider_fix_recorded_at=at(10)),
            fix_at(110, recorded_at=at(9)),
            "out_of_order",
            id="out-of-order",
        ),
        pytest.param(
            positioned(provider_m=100, provider_fix_recorded_at=at(0)),
            fix_at(1100, recorded_at=at(5)),
            "too_fast",
            id="too-fast",
        ),
        pytest.param(
            positioned(provider_m=100, provider_fix_recorded_at=at(0)),
            fix_at(110, recorded_at=at(0)),
            "too_fast",
            id="jump-at-the-same-instant",
        ),
    ],
)
def test_a_noisy_fix_is_an_observation_with_no_writes(
    session: SessionRow, fix: Fix, verdict: str
) -> None:
    world = world_of(sessions=[session])
    before = copy.deepcopy(world)
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix), at(10))
    assert decision == Decision(observations=(FixDropped(verdict),))
    assert world == before


def test_the_limits_themselves_are_not_noise() -> None:
    world = world_of(sessions=[positioned(provider_m=0, provider_fix_recorded_at=at(0))])
    # Exactly max_accuracy, and a hair under 200 km/h (500 m in 9 s is exactly 200 km/h).
    fix = fix_at(499.999, accuracy=100.0, recorded_at=at(9))
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix), at(10))
    assert decision.observations == ()
    assert world.sessions[SID].provider_fix_recorded_at == at(9)


def test_the_first_fix_of_one_side_is_stored_without_a_distance() -> None:
    world = world_of(sessions=[session_row(last_seq=2)])
    decision = step(world, c.ReportLocation(SID, AS_SEEKER, fix_at(0, recorded_at=at(9))), at(10))

    assert decision.out == ()
    assert decision.observations == ()
    assert decision.reply is None
    session = the_session(decision)
    assert (session.seeker_latitude, session.seeker_longitude) == (north(0), BASE_LNG)
    assert session.seeker_last_location_update == at(10)
    assert session.seeker_fix_recorded_at == at(9)
    assert session.provider_latitude is None
    assert session.current_distance_meters is None
    assert session.distance_seeker_latitude is None
    assert session.last_seq == 2


def test_both_sides_known_sends_the_distance_to_both() -> None:
    world = world_of(sessions=[positioned(seeker_m=0, last_seq=2)])
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix_at(1000)), at(20))

    (notice,) = decision.out
    assert isinstance(notice, Notice)
    assert notice.recipients == BOTH
    assert notice.answers_requester is False
    assert notice.frame == out.DistanceUpdate(
        type="distance_update",
        session_id=str(SID),
        distance_meters=1000.0,
        distance_formatted="1.0 km away",
        updated_at=at(20),
    )
    assert decision.observations == (DistanceSent("move"),)
    assert decision.events == ()
    session = the_session(decision)
    assert session.current_distance_meters == pytest.approx(1000.0)
    assert session.last_distance_update == at(20)
    assert (session.distance_seeker_latitude, session.distance_provider_latitude) == (
        north(0),
        north(1000),
    )
    assert session.last_seq == 2


def distance_of(decision: Decision) -> float | None:
    found = [n.frame for n in notices(decision) if isinstance(n.frame, out.DistanceUpdate)]
    assert len(found) <= 1
    return found[0].distance_meters if found else None


def test_the_50_m_rule_compares_with_the_last_sent_positions() -> None:
    world = world_of(sessions=[positioned(seeker_m=0, provider_m=1000, baseline=(0, 1000))])

    def report(actor: Actor, metres: float, second: int) -> Decision:
        return step(world, c.ReportLocation(SID, actor, fix_at(metres)), at(second))

    assert distance_of(small := report(AS_PROVIDER, 970, 1)) is None  # 30 m from the baseline
    assert the_session(small).provider_latitude == north(970)
    assert the_session(small).distance_provider_latitude == north(1000)
    assert the_session(small).current_distance_meters == 1000
    assert distance_of(report(AS_PROVIDER, 949, 2)) == pytest.approx(949.0)  # 51 m in all
    assert world.sessions[SID].current_distance_meters == pytest.approx(949.0)
    assert world.sessions[SID].distance_provider_latitude == north(949)
    assert distance_of(report(AS_SEEKER, 49, 3)) is None  # the seeker's own 49 m
    assert distance_of(report(AS_SEEKER, 51, 4)) == pytest.approx(898.0)
    assert world.sessions[SID].distance_seeker_latitude == north(51)


def test_nearby_and_arrived_fire_once_each_even_without_a_distance_update() -> None:
    world = world_of(
        sessions=[positioned(seeker_m=0, provider_m=320, baseline=(0, 320), last_seq=3)]
    )

    def report(metres: float, second: int) -> Decision:
        return step(world, c.ReportLocation(SID, AS_PROVIDER, fix_at(metres)), at(second))

    nearby = report(290, 1)  # 30 m: no distance update, but within 300 m
    assert distance_of(nearby) is None
    assert nearby.events == (
        LoggedEvent(SID, 4, "provider_nearby", {"distance_meters": 290.0}, at(1)),
    )
    assert the_session(nearby).nearby_at == at(1)
    assert the_session(nearby).arrived_at is None
    assert report(280, 2).events == ()

    moved = report(60, 3)  # a distance update, nearby not again, not yet arrived
    assert distance_of(moved) == pytest.approx(60.0)
    assert moved.events == ()

    arrived = report(45, 4)  # 15 m: no distance update, within 50 m
    assert distance_of(arrived) is None
    assert arrived.events == (
        LoggedEvent(SID, 5, "provider_arrived", {"distance_meters": 45.0}, at(4)),
    )
    assert the_session(arrived).arrived_at == at(4)
    assert the_session(arrived).nearby_at == at(1)

    assert report(40, 5).events == ()
    assert report(500, 6).events == ()  # going away and back does not announce again
    assert report(10, 7).events == ()
    assert world.sessions[SID].last_seq == 5
    assert (world.sessions[SID].nearby_at, world.sessions[SID].arrived_at) == (at(1), at(4))


def test_a_jump_to_20_m_fires_nearby_then_arrived_in_one_decision() -> None:
    world = world_of(
        sessions=[positioned(seeker_m=0, provider_m=1000, baseline=(0, 1000), last_seq=4)]
    )
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix_at(20)), at(30))

    assert distance_of(decision) == pytest.approx(20.0)
    assert isinstance(decision.out[0], Notice)  # the distance goes out first
    assert kinds(decision) == [(5, "provider_nearby"), (6, "provider_arrived")]
    assert [e.data for e in decision.events] == [{"distance_meters": 20.0}] * 2
    session = the_session(decision)
    assert (session.nearby_at, session.arrived_at, session.last_seq) == (at(30), at(30), 6)
    for event in decision.events:
        assert render(event, "seeker") is not None
        assert render(event, "provider") is not None


def test_a_fix_recorded_in_the_future_is_a_validation_error() -> None:
    world = world_of(sessions=[session_row()])
    fix = fix_at(0, recorded_at=at(10 + 61))
    error = refused(world, c.ReportLocation(SID, AS_SEEKER, fix), at(10), ValidationFailed)
    assert error.code == "validation_error"
    # 60 s ahead is clock drift, not a forged value.
    ok = step(world, c.ReportLocation(SID, AS_SEEKER, fix_at(0, recorded_at=at(70))), at(10))
    assert the_session(ok).seeker_fix_recorded_at == at(70)


@pytest.mark.parametrize(("lat", "lng"), [(90.5, 0.0), (0.0, -180.5), (math.inf, 0.0)])
def test_coordinates_out_of_range_are_a_validation_error(lat: float, lng: float) -> None:
    world = world_of(sessions=[session_row()])
    command = c.ReportLocation(SID, AS_SEEKER, Fix(lat, lng, 5.0, None))
    refused(world, command, at(1), ValidationFailed)


def test_a_kept_fix_without_recorded_at_clears_the_stored_fix_time() -> None:
    world = world_of(sessions=[positioned(provider_m=0, provider_fix_recorded_at=at(0))])
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix_at(30)), at(5))
    assert the_session(decision).provider_fix_recorded_at is None


def test_location_by_a_stranger_or_in_an_ended_session_is_refused() -> None:
    world = world_of(sessions=[session_row()])
    refused(world, c.ReportLocation(SID, AS_STRANGER_SEEKER, fix_at(0)), at(1), SessionNotFound)
    ended = world_of(sessions=[session_row("completed")])
    refused(ended, c.ReportLocation(SID, AS_PROVIDER, fix_at(0)), at(1), InvalidState)


# =========================================================================================
# ending
# =========================================================================================


@pytest.mark.parametrize(
    ("by", "label", "by_id"),
    [(AS_SEEKER, "seeker", SEEKER), (AS_PROVIDER, "provider", PROVIDER), (None, "system", None)],
    ids=["seeker", "provider", "system"],
)
@pytest.mark.parametrize("state", ["waiting", "active"])
def test_cancel(by: Actor | None, label: str, by_id: str | None, state: str) -> None:
    world = world_of(sessions=[session_row(state, last_seq=3)])
    decision = step(world, c.CancelSession(SID, by), at(100))

    assert decision.events == (
        LoggedEvent(SID, 4, "connection_cancelled", {"cancelled_by": label}, at(100)),
    )
    assert decision.reply is ANSWERED_BY_EVENT
    assert decision.observations == (SessionEnded("cancelled", T0, at(100)),)
    session = the_session(decision)
    assert session.connection_state == "cancelled"
    assert (session.cancelled_by, session.cancelled_by_id, session.cancelled_at) == (
        label,
        by_id,
        at(100),
    )
    assert session.completed_at is None
    assert decision.writes[1:] == (
        FinishOrder(WORK, "cancelled"),
        ExpireChat(SID, at(100) + RETENTION),
        SetFlag("provider_active", PROVIDER, True),
        SetFlag("seeker_searching", SEEKER, True),
    )
    assert world.live_session_of("seeker", SEEKER) is None
    assert world.live_session_of("provider", PROVIDER) is None


ABANDON = POLICY.abandon_after


@pytest.mark.parametrize("state", ["waiting", "active"])
def test_a_session_untouched_for_abandon_after_is_cancelled_by_the_system(state: str) -> None:
    touched = at(50)
    world = world_of(sessions=[session_row(state, last_seq=3, updated_at=touched)])
    now = touched + ABANDON
    decision = step(world, c.CancelAbandoned((SID,)), now)

    # Every effect of the internal cancel, and no reply: nobody asked.
    assert decision.events == (
        LoggedEvent(SID, 4, "connection_cancelled", {"cancelled_by": "system"}, now),
    )
    assert decision.reply is None
    assert decision.observations == (SessionEnded("cancelled", T0, now),)
    session = the_session(decision)
    assert (session.connection_state, session.cancelled_by, session.cancelled_by_id) == (
        "cancelled",
        "system",
        None,
    )
    assert decision.writes[1:] == (
        FinishOrder(WORK, "cancelled"),
        ExpireChat(SID, now + RETENTION),
        SetFlag("provider_active", PROVIDER, True),
        SetFlag("seeker_searching", SEEKER, True),
    )
    assert world.live_session_of("seeker", SEEKER) is None
    assert world.live_session_of("provider", PROVIDER) is None


def test_a_session_touched_within_abandon_after_is_left_alone() -> None:
    touched = at(50)
    world = world_of(sessions=[session_row(updated_at=touched)])
    decision = step(world, c.CancelAbandoned((SID,)), touched + ABANDON - timedelta(seconds=1))
    assert decision == Decision()


def test_a_frame_earlier_in_the_batch_saves_a_candidate() -> None:
    """The job read its candidates before the batch; the locked row has the last word."""
    world = world_of(sessions=[session_row(updated_at=T0)])
    now = T0 + ABANDON + timedelta(seconds=5)
    step(world, c.ReportLocation(SID, AS_SEEKER, fix_at(0)), now)
    assert step(world, c.CancelAbandoned((SID,)), now) == Decision()
    assert world.live_session_of("seeker", SEEKER) == SID


def test_abandonment_cancels_each_idle_candidate_and_skips_the_rest() -> None:
    idle = session_row(updated_at=T0)
    busy = session_row(
        session_id=OTHER_SID, seeker="seeker-2", provider="provider-2", work_id=8, updated_at=at(60)
    )
    ended = session_row(
        "completed", session_id=uid(3), seeker="seeker-3", provider="provider-3", work_id=9
    )
    world = world_of(sessions=[idle, busy, ended])
    now = T0 + ABANDON + timedelta(seconds=30)
    decision = step(world, c.CancelAbandoned((SID, OTHER_SID, uid(3), uid(4))), now)
    assert [(event.session_id, event.kind) for event in decision.events] == [
        (SID, "connection_cancelled")
    ]
    assert world.live_session_of("seeker", "seeker-2") == OTHER_SID


@pytest.mark.parametrize("actor", [AS_SEEKER, AS_PROVIDER])
def test_a_touch_moves_only_updated_at_and_keeps_the_session(actor: Actor) -> None:
    before = session_row(updated_at=T0)
    world = world_of(sessions=[before])
    now = T0 + ABANDON + timedelta(seconds=5)
    decision = step(world, c.TouchSession(SID, actor), now)
    assert decision == Decision(writes=(PutSession(dataclasses.replace(before, updated_at=now)),))
    assert step(world, c.CancelAbandoned((SID,)), now) == Decision()


@pytest.mark.parametrize(
    ("session", "actor"),
    [
        (session_row("cancelled"), AS_SEEKER),
        (session_row(), AS_STRANGER_SEEKER),
        (session_row(), Actor(SEEKER, "provider")),
        (None, AS_SEEKER),
    ],
    ids=["ended", "stranger", "wrong-role", "unknown"],
)
def test_a_touch_outside_ones_live_session_does_nothing(
    session: SessionRow | None, actor: Actor
) -> None:
    world = world_of(sessions=[] if session is None else [session])
    assert step(world, c.TouchSession(SID, actor), at(9)) == Decision()


@pytest.mark.parametrize("provider_id", [PROVIDER, None], ids=["provider", "system"])
@pytest.mark.parametrize("state", ["waiting", "active"])
def test_complete(provider_id: str | None, state: str) -> None:
    world = world_of(sessions=[session_row(state, last_seq=3)])
    decision = step(world, c.CompleteSession(SID, provider_id), at(100))

    assert decision.events == (LoggedEvent(SID, 4, "session_completed", {}, at(100)),)
    assert decision.reply is ANSWERED_BY_EVENT
    assert decision.observations == (SessionEnded("completed", T0, at(100)),)
    session = the_session(decision)
    assert (session.connection_state, session.completed_at) == ("completed", at(100))
    assert session.cancelled_by is None
    # After a completion the seeker got what they searched for: no seeker_searching.
    assert decision.writes[1:] == (
        FinishOrder(WORK, "completed"),
        ExpireChat(SID, at(100) + RETENTION),
        SetFlag("provider_active", PROVIDER, True),
    )


def test_the_seeker_cannot_complete() -> None:
    world = world_of(sessions=[session_row()])
    refused(world, c.CompleteSession(SID, SEEKER), at(1), SessionNotFound)
    refused(world, c.CompleteSession(SID, STRANGER), at(1), SessionNotFound)


def test_a_stranger_cannot_cancel() -> None:
    world = world_of(sessions=[session_row()])
    refused(world, c.CancelSession(SID, AS_STRANGER_SEEKER), at(1), SessionNotFound)
    refused(world, c.CancelSession(SID, Actor(SEEKER, "provider")), at(1), SessionNotFound)
    refused(world, c.CancelSession(OTHER_SID, None), at(1), SessionNotFound)


@pytest.mark.parametrize(
    "first",
    [c.CancelSession(SID, AS_SEEKER), c.CompleteSession(SID, PROVIDER), c.CancelSession(SID, None)],
    ids=["cancelled", "completed", "system-cancelled"],
)
@pytest.mark.parametrize(
    "second",
    [
        c.CancelSession(SID, AS_PROVIDER),
        c.CancelSession(SID, None),
        c.CompleteSession(SID, PROVIDER),
        c.CompleteSession(SID, None),
    ],
    ids=["cancel", "system-cancel", "complete", "system-complete"],
)
def test_a_second_ending_is_invalid_state(first: c.Command, second: c.Command) -> None:
    world = world_of(sessions=[session_row()])
    step(world, first, at(1))
    refused(world, second, at(2), InvalidState)


# =========================================================================================
# the session-state matrix
# =========================================================================================

SESSION_COMMANDS: dict[str, tuple[c.Command, SessionState | None]] = {
    "SelectMediums": (c.SelectMediums(SID, SEEKER, MOBILE), S.ACTIVE),
    "ShareMediums": (c.ShareMediums(SID, PROVIDER, MOBILE), None),
    "ReportLocation": (c.ReportLocation(SID, AS_PROVIDER, fix_at(500)), None),
    "StartChat": (c.StartChat(SID, AS_SEEKER, chat_room_id=ROOM), None),
    "SendMessage": (c.SendMessage(SID, AS_PROVIDER, "hi", "c", message_id=uid(9)), None),
    "CancelSession": (c.CancelSession(SID, AS_SEEKER), S.CANCELLED),
    "CompleteSession": (c.CompleteSession(SID, PROVIDER), S.COMPLETED),
}
"""Every session command, and the state it moves a live session to (None: unchanged)."""


def test_the_matrix_names_every_session_command() -> None:
    session_types = {type(command) for command, _ in SESSION_COMMANDS.values()}
    assert {t.__name__ for t in session_types} == set(SESSION_COMMANDS)
    assert session_types == {
        c.SelectMediums,
        c.ShareMediums,
        c.ReportLocation,
        c.StartChat,
        c.SendMessage,
        c.CancelSession,
        c.CompleteSession,
    }


def state_world(state: SessionState) -> World:
    ended: dict[SessionState, dict[str, Any]] = {
        S.CANCELLED: {"cancelled_at": T0, "cancelled_by": "seeker", "cancelled_by_id": SEEKER},
        S.COMPLETED: {"completed_at": T0},
    }
    columns = ended.get(state, {})
    return world_of(sessions=[positioned(seeker_m=0, state=state.value, last_seq=2, **columns)])


@pytest.mark.parametrize("name", list(SESSION_COMMANDS))
@pytest.mark.parametrize("state", list(S), ids=[s.value for s in S])
def test_session_state_matrix(state: SessionState, name: str) -> None:
    command, moves_to = SESSION_COMMANDS[name]
    world = state_world(state)
    if state not in {S.WAITING, S.ACTIVE}:
        refused(world, command, at(1), InvalidState)
        return
    decision = step(world, command, at(1))
    after = S(the_session(decision).connection_state)
    assert after == (moves_to or state)
    assert after == state or after in ALLOWED[state]
    assert world.sessions[SID].connection_state == after.value
    assert [e.seq for e in decision.events] == list(range(3, 3 + len(decision.events)))


def test_the_commands_reach_exactly_the_allowed_transitions() -> None:
    reached: set[tuple[SessionState, SessionState]] = set()
    for state in S:
        for command, _ in SESSION_COMMANDS.values():
            world = state_world(state)
            try:
                decision = decide(world, command, at(1))
            except InvalidState:
                continue
            after = S(the_session(decision).connection_state)
            if after != state:
                reached.add((state, after))
    assert reached == {(a, b) for a, targets in ALLOWED.items() for b in targets}


# =========================================================================================
# acceptance, decline, expiry
# =========================================================================================

P1, P2, P3 = "provider-a", "provider-b", "provider-c"
S1, S2 = uid(0xC1), uid(0xC2)


def offers_world(*, sessions: list[SessionRow] | None = None, **order: Any) -> World:
    return world_of(
        orders=[order_row(**order)],
        offers=[offer_row(P1), offer_row(P2), offer_row(P3)],
        sessions=sessions or [],
    )


def test_accept_creates_a_waiting_session_with_work_accepted_at_seq_1() -> None:
    world = offers_world()
    decision = step(world, c.AcceptWork(WORK, P1, session_id=S1), at(10))

    assert decision.events == (
        LoggedEvent(
            S1, 1, "work_accepted", {"work_id": WORK, "connection_state": "waiting"}, at(10)
        ),
    )
    assert decision.reply is ANSWERED_BY_EVENT
    assert decision.observations == (OfferOutcome("accepted"),)
    (put,) = writes_of(decision, PutSession)
    assert put.new is True
    assert put.row == SessionRow(
        pk=None,
        session_id=S1,
        work_order_id=WORK,
        seeker_id=SEEKER,
        provider_id=P1,
        connection_state="waiting",
        last_seq=1,
        created_at=at(10),
        updated_at=at(10),
    )
    (order,) = writes_of(decision, PutOrder)
    assert (order.row.status, order.row.updated_at, order.new) == ("accepted", at(10), False)
    offers = {w.row.provider_id: w.row for w in writes_of(decision, PutOffer)}
    assert (offers[P1].status, offers[P1].responded_at) == ("accepted", at(10))
    assert (offers[P2].status, offers[P2].responded_at) == ("withdrawn", None)
    assert (offers[P3].status, offers[P3].responded_at) == ("withdrawn", None)
    assert notices(decision) == [
        Notice((("provider", P2),), out.WorkUnavailable(type="work_unavailable", work_id=WORK)),
        Notice((("provider", P3),), out.WorkUnavailable(type="work_unavailable", work_id=WORK)),
    ]
    assert writes_of(decision, SetFlag) == [
        SetFlag("provider_active", P1, False),
        SetFlag("seeker_searching", SEEKER, False),
    ]
    assert world.live_session_of("provider", P1) == S1
    assert world.live_session_of("seeker", SEEKER) == S1
    frame = render(decision.events[0], "seeker")
    assert isinstance(frame, out.WorkAccepted)
    assert frame.seq == 1


def test_accept_leaves_declined_and_withdrawn_offers_alone() -> None:
    world = world_of(
        orders=[order_row()],
        offers=[offer_row(P1), offer_row(P2, status="declined"), offer_row(P3)],
    )
    decision = step(world, c.AcceptWork(WORK, P1, session_id=S1), at(1))
    assert {w.row.provider_id for w in writes_of(decision, PutOffer)} == {P1, P3}
    assert [n.recipients for n in notices(decision)] == [(("provider", P3),)]


def test_the_first_accept_wins_within_one_batch() -> None:
    world = offers_world()
    step(world, c.AcceptWork(WORK, P1, session_id=S1), at(10))
    refused(world, c.AcceptWork(WORK, P2, session_id=S2), at(10), WorkUnavailable)
    refused(world, c.AcceptWork(WORK, P1, session_id=S2), at(11), WorkUnavailable)
    assert set(world.sessions) == {S1}
    assert world.orders[WORK].status == "accepted"


def test_accept_of_an_order_never_offered_is_work_not_found() -> None:
    world = offers_world()
    refused(world, c.AcceptWork(WORK, STRANGER), at(1), WorkNotFound)
    refused(world, c.AcceptWork(999, P1), at(1), WorkNotFound)
    refused(world, c.DeclineWork(WORK, STRANGER), at(1), WorkNotFound)
    refused(world, c.DeclineWork(999, P1), at(1), WorkNotFound)


@pytest.mark.parametrize(
    ("order", "offer", "now"),
    [
        pytest.param({}, "declined", at(1), id="declined"),
        pytest.param({}, "withdrawn", at(1), id="withdrawn"),
        pytest.param({}, "expired", at(1), id="offer-expired"),
        pytest.param({"status": "expired"}, "offered", at(1), id="order-expired"),
        pytest.param({}, "offered", T0 + OFFER_TTL, id="deadline-passed"),
        pytest.param({"status": "accepted"}, "offered", at(1), id="taken"),
        pytest.param({"status": "rejected"}, "offered", at(1), id="rejected"),
    ],
)
def test_accept_or_decline_of_an_offer_no_longer_open_is_work_unavailable(
    order: dict[str, Any], offer: str, now: datetime
) -> None:
    world = world_of(orders=[order_row(**order)], offers=[offer_row(P1, status=offer)])
    refused(world, c.AcceptWork(WORK, P1), now, WorkUnavailable)
    refused(world, c.DeclineWork(WORK, P1), now, WorkUnavailable)


def test_accept_by_a_provider_with_a_live_session_is_provider_busy() -> None:
    busy = session_row("active", session_id=OTHER_SID, seeker="someone", provider=P1, work_id=1)
    world = offers_world(sessions=[busy])
    refused(world, c.AcceptWork(WORK, P1), at(1), ProviderBusy)
    # The order stays pending for the others.
    step(world, c.AcceptWork(WORK, P2, session_id=S2), at(2))


def test_accept_for_a_seeker_with_a_live_session_is_seeker_busy() -> None:
    busy = session_row("waiting", session_id=OTHER_SID, seeker=SEEKER, provider="other", work_id=1)
    world = offers_world(sessions=[busy])
    refused(world, c.AcceptWork(WORK, P1), at(1), SeekerBusy)


def test_an_ended_session_does_not_make_anybody_busy() -> None:
    ended = session_row("completed", session_id=OTHER_SID, provider=P1, work_id=1)
    world = offers_world(sessions=[ended])
    step(world, c.AcceptWork(WORK, P1, session_id=S1), at(1))


def test_a_session_ended_earlier_in_the_batch_frees_both_users() -> None:
    live = session_row("active", session_id=OTHER_SID, provider=P1, work_id=1)
    world = offers_world(sessions=[live])
    refused(world, c.AcceptWork(WORK, P1, session_id=S1), at(1), ProviderBusy)
    step(world, c.CompleteSession(OTHER_SID, P1), at(2))
    step(world, c.AcceptWork(WORK, P1, session_id=S1), at(3))
    assert world.live_session_of("seeker", SEEKER) == S1


def test_a_provider_busy_from_an_accept_in_the_same_batch() -> None:
    world = world_of(
        orders=[order_row(1, seeker="s-1"), order_row(2, seeker="s-2")],
        offers=[offer_row(P1, 1), offer_row(P1, 2)],
    )
    step(world, c.AcceptWork(1, P1, session_id=S1), at(1))
    refused(world, c.AcceptWork(2, P1, session_id=S2), at(1), ProviderBusy)


def test_a_decline_that_leaves_offers_open_tells_only_the_provider() -> None:
    world = offers_world()
    decision = step(world, c.DeclineWork(WORK, P2), at(5))

    declined = out.WorkDeclined(type="work_declined", work_id=WORK)
    assert decision.out == (Notice((("provider", P2),), declined, answers_requester=True),)
    assert decision.reply == AnswerFrame(declined)
    assert decision.writes == (
        PutOffer(
            OfferRow(WORK, P2, "declined", created_at=T0, updated_at=at(5), responded_at=at(5))
        ),
    )
    assert decision.observations == (OfferOutcome("declined"),)
    assert world.orders[WORK].status == "pending"


def test_the_last_open_offer_declined_rejects_the_order_and_tells_the_seeker() -> None:
    world = offers_world()
    step(world, c.DeclineWork(WORK, P1), at(1))
    step(world, c.DeclineWork(WORK, P3), at(2))
    decision = step(world, c.DeclineWork(WORK, P2), at(3))

    assert notices(decision)[1:] == [
        Notice((("seeker", SEEKER),), out.WorkRejected(type="work_rejected", work_id=WORK))
    ]
    (order,) = writes_of(decision, PutOrder)
    assert (order.row.status, order.row.updated_at) == ("rejected", at(3))
    assert decision.observations == (OfferOutcome("declined"), OfferOutcome("rejected"))
    assert world.orders[WORK].status == "rejected"
    refused(world, c.AcceptWork(WORK, P2), at(4), WorkUnavailable)


@pytest.mark.parametrize("seeker_id", [SEEKER, None], ids=["seeker", "internal-api"])
def test_withdraw_ends_the_order_and_its_open_offers_and_tells_everyone(
    seeker_id: str | None,
) -> None:
    world = world_of(
        orders=[order_row()],
        offers=[offer_row(P1), offer_row(P2, status="declined"), offer_row(P3)],
    )
    decision = step(world, c.WithdrawWork(WORK, seeker_id), at(5))

    withdrawn = out.WorkWithdrawn(type="work_withdrawn", work_id=WORK)
    gone = out.WorkUnavailable(type="work_unavailable", work_id=WORK)
    assert decision.out == (
        Notice((("seeker", SEEKER),), withdrawn, answers_requester=True),
        Notice((("provider", P1),), gone),
        Notice((("provider", P3),), gone),
    )
    assert decision.reply == AnswerFrame(withdrawn)
    assert decision.events == ()
    (order,) = writes_of(decision, PutOrder)
    assert (order.row.status, order.row.updated_at, order.new) == ("withdrawn", at(5), False)
    assert [
        (w.row.provider_id, w.row.status, w.row.responded_at) for w in writes_of(decision, PutOffer)
    ] == [
        (P1, "withdrawn", None),
        (P3, "withdrawn", None),
    ]
    assert decision.observations == (OfferOutcome("withdrawn"),)
    # Settled: neither an accept nor a second withdrawal finds it pending any more.
    refused(world, c.AcceptWork(WORK, P1, session_id=S1), at(6), WorkUnavailable)
    refused(world, c.WithdrawWork(WORK, SEEKER), at(6), WorkUnavailable)


def test_withdraw_after_an_accept_in_the_same_batch_is_work_unavailable() -> None:
    world = offers_world()
    step(world, c.AcceptWork(WORK, P1, session_id=S1), at(1))
    refused(world, c.WithdrawWork(WORK, SEEKER), at(1), WorkUnavailable)
    assert world.orders[WORK].status == "accepted"


@pytest.mark.parametrize(
    "status", ["accepted", "rejected", "expired", "withdrawn", "cancelled", "completed"]
)
def test_withdraw_of_an_order_no_longer_pending_is_work_unavailable(status: str) -> None:
    refused(offers_world(status=status), c.WithdrawWork(WORK, SEEKER), at(1), WorkUnavailable)


def test_withdraw_of_an_order_past_its_deadline_is_work_unavailable() -> None:
    world = offers_world(expires_at=at(5))
    refused(world, c.WithdrawWork(WORK, SEEKER), at(5), WorkUnavailable)
    assert step(world, c.WithdrawWork(WORK, SEEKER), at(4)).writes


def test_withdraw_of_another_seekers_or_no_order_is_work_not_found() -> None:
    world = offers_world()
    refused(world, c.WithdrawWork(WORK, STRANGER), at(1), WorkNotFound)
    refused(world, c.WithdrawWork(WORK, P1), at(1), WorkNotFound)
    refused(world, c.WithdrawWork(999, SEEKER), at(1), WorkNotFound)
    refused(world, c.WithdrawWork(999, None), at(1), WorkNotFound)


def test_expiry_expires_due_orders_and_their_open_offers_with_notices() -> None:
    world = world_of(
        orders=[
            order_row(1, seeker="s-1", expires_at=at(0)),
            order_row(2, seeker="s-2", expires_at=at(0)),
            order_row(3, seeker="s-3", expires_at=at(0), status="accepted"),
        ],
        offers=[
            offer_row(P1, 1),
            offer_row(P2, 1, status="declined"),
            offer_row(P3, 1),
            offer_row(P1, 2),
            offer_row(P2, 3, status="accepted"),
        ],
        due_orders=[1, 2, 3],
    )
    decision = step(world, c.ExpireOffers(), at(1))

    assert decision.out == (
        Notice((("seeker", "s-1"),), out.WorkExpired(type="work_expired", work_id=1)),
        Notice((("provider", P1),), out.WorkUnavailable(type="work_unavailable", work_id=1)),
        Notice((("provider", P3),), out.WorkUnavailable(type="work_unavailable", work_id=1)),
        Notice((("seeker", "s-2"),), out.WorkExpired(type="work_expired", work_id=2)),
        Notice((("provider", P1),), out.WorkUnavailable(type="work_unavailable", work_id=2)),
    )
    assert [(w.row.id, w.row.status) for w in writes_of(decision, PutOrder)] == [
        (1, "expired"),
        (2, "expired"),
    ]
    assert [
        (w.row.work_order_id, w.row.provider_id, w.row.status)
        for w in writes_of(decision, PutOffer)
    ] == [(1, P1, "expired"), (1, P3, "expired"), (2, P1, "expired")]
    assert decision.observations == (OfferOutcome("expired", 2),)
    assert decision.reply is None
    assert world.offer(1, P2) is not None
    assert world.offer(1, P2).status == "declined"  # type: ignore[union-attr]
    assert world.orders[3].status == "accepted"


def test_expiry_skips_an_order_settled_earlier_in_the_batch() -> None:
    world = offers_world(expires_at=at(5))
    world.due_orders = (WORK,)
    step(world, c.AcceptWork(WORK, P1, session_id=S1), at(1))
    assert step(world, c.ExpireOffers(), at(6)) == Decision()
    assert world.orders[WORK].status == "accepted"


def test_expiry_with_nothing_due_does_nothing() -> None:
    assert decide(offers_world(), c.ExpireOffers(), at(1)) == Decision()


def test_create_offers_the_order_to_every_provider() -> None:
    world = world_of()
    command = c.CreateWorkOrder(SEEKER, (P1, P2), {"task": "paint"}, (12.9, 77.6), work_id=42)
    decision = step(world, command, at(0))

    order = OrderRow(
        id=42,
        seeker_id=SEEKER,
        status="pending",
        details={"task": "paint"},
        seeker_latitude=12.9,
        seeker_longitude=77.6,
        offer_expires_at=at(0) + OFFER_TTL,
        created_at=at(0),
        updated_at=at(0),
    )
    offers = [OfferRow(42, p, "offered", created_at=at(0), updated_at=at(0)) for p in (P1, P2)]
    assert decision.writes == (
        PutOrder(order, new=True),
        *(PutOffer(o, new=True) for o in offers),
    )
    (notice,) = decision.out
    assert isinstance(notice, Notice)
    assert notice.recipients == (("provider", P1), ("provider", P2))
    assert isinstance(notice.frame, out.WorkRequest)
    assert (notice.frame.work_id, notice.frame.expires_at) == (42, at(0) + OFFER_TTL)
    view = order_view(order, offers, None)
    created = WorkOrderCreated(**dict(view), offered_to=[P1, P2], skipped=[])
    assert decision.reply == Result(created)
    assert world.offers_of(42) == offers


def test_create_refuses_a_seeker_among_the_providers() -> None:
    world = world_of()
    with pytest.raises(ValidationFailed, match="seeker_id"):
        decide(world, c.CreateWorkOrder(SEEKER, (P1, SEEKER), {}, None, work_id=43), at(0))
    assert world.orders == {}


def test_create_skips_busy_and_inactive_providers() -> None:
    busy = session_row("active", session_id=OTHER_SID, seeker="someone", provider=P1, work_id=1)
    world = world_of(
        sessions=[busy],
        flags={("provider_active", P2): False, ("provider_active", "provider-d"): True},
    )
    command = c.CreateWorkOrder(SEEKER, (P1, P2, P3, "provider-d"), {}, None, work_id=44)
    decision = step(world, command, at(0))

    assert [o.row.provider_id for o in writes_of(decision, PutOffer)] == [P3, "provider-d"]
    (notice,) = notices(decision)
    assert notice.recipients == (("provider", P3), ("provider", "provider-d"))
    assert isinstance(decision.reply, Result)
    created = decision.reply.value
    assert isinstance(created, WorkOrderCreated)
    assert created.offered_to == [P3, "provider-d"]
    assert [(s.provider_id, s.reason) for s in created.skipped] == [
        (P1, "busy"),
        (P2, "inactive"),
    ]
    assert [o.provider_id for o in created.offers] == [P3, "provider-d"]


def test_a_busy_provider_whose_flag_is_off_is_skipped_as_busy() -> None:
    busy = session_row("waiting", session_id=OTHER_SID, seeker="someone", provider=P1, work_id=1)
    world = world_of(sessions=[busy], flags={("provider_active", P1): False})
    decision = step(world, c.CreateWorkOrder(SEEKER, (P1, P2), {}, None, work_id=45), at(0))
    assert isinstance(decision.reply, Result)
    assert isinstance(decision.reply.value, WorkOrderCreated)
    assert [(s.provider_id, s.reason) for s in decision.reply.value.skipped] == [(P1, "busy")]


def test_create_with_nobody_left_is_no_provider_available_and_stores_nothing() -> None:
    busy = session_row("active", session_id=OTHER_SID, seeker="someone", provider=P1, work_id=1)
    world = world_of(sessions=[busy], flags={("provider_active", P2): False})
    refused(
        world, c.CreateWorkOrder(SEEKER, (P1, P2), {}, None, work_id=46), at(0), NoProviderAvailable
    )
    assert 46 not in world.orders


def test_create_for_a_seeker_with_a_live_session_is_seeker_busy() -> None:
    busy = session_row("waiting", session_id=OTHER_SID, seeker=SEEKER, provider="other", work_id=1)
    world = world_of(sessions=[busy])
    refused(world, c.CreateWorkOrder(SEEKER, (P1,), {}, None, work_id=47), at(0), SeekerBusy)
    assert 47 not in world.orders


def test_a_provider_busy_from_an_accept_earlier_in_the_batch_is_skipped() -> None:
    world = world_of(orders=[order_row(1, seeker="s-1")], offers=[offer_row(P1, 1)])
    step(world, c.AcceptWork(1, P1, session_id=S1), at(1))
    decision = step(world, c.CreateWorkOrder("s-2", (P1, P2), {}, None, work_id=48), at(2))
    assert [o.row.provider_id for o in writes_of(decision, PutOffer)] == [P2]


# =========================================================================================
# availability and retention
# =========================================================================================


@pytest.mark.parametrize(
    ("command", "writes", "after"),
    [
        (
            c.SetAvailability("u", provider_active=True),
            (SetFlag("provider_active", "u", True),),
            Availability(provider_active=True, seeker_searching=False),
        ),
        (
            c.SetAvailability("u", seeker_searching=True),
            (SetFlag("seeker_searching", "u", True),),
            Availability(provider_active=None, seeker_searching=True),
        ),
        (
            c.SetAvailability("u", provider_active=False, seeker_searching=True),
            (SetFlag("provider_active", "u", False), SetFlag("seeker_searching", "u", True)),
            Availability(provider_active=False, seeker_searching=True),
        ),
        (
            c.SetAvailability("u"),
            (),
            Availability(provider_active=None, seeker_searching=False),
        ),
    ],
    ids=["provider-only", "seeker-only", "both", "neither"],
)
def test_set_availability(
    command: c.SetAvailability, writes: tuple[SetFlag, ...], after: Availability
) -> None:
    world = world_of(flags={("seeker_searching", "u"): False, ("provider_active", "other"): True})
    decision = step(world, command, at(1))
    assert decision == Decision(writes=writes, reply=Result(after))
    assert world.flag("provider_active", "other") is True


def test_the_sweep_deletes_what_outlived_the_retention() -> None:
    assert decide(world_of(), c.SweepExpired(), at(0)) == Decision(
        writes=(Sweep(now=at(0), ended_before=at(0) - RETENTION),)
    )


# =========================================================================================
# purity
# =========================================================================================


def full_world() -> World:
    """One world in which every command below has something to decide."""
    return world_of(
        sessions=[
            positioned(seeker_m=0, provider_m=400, baseline=(0, 1000), last_seq=5, state="waiting")
        ],
        messages=[message_row("seeker", seq=5, client_msg_id="m-1")],
        orders=[order_row(seeker="s-7"), order_row(8, seeker="s-8", expires_at=at(0))],
        offers=[offer_row(P1), offer_row(P2), offer_row(P1, 8)],
        flags={("provider_active", "u"): True},
        due_orders=[8],
    )


PURITY_CASES: list[tuple[str, c.Command]] = [
    ("create", c.CreateWorkOrder(SEEKER, (P1,), {"k": "v"}, None, work_id=50)),
    ("accept", c.AcceptWork(WORK, P1, session_id=S1)),
    ("accept-refused", c.AcceptWork(WORK, STRANGER, session_id=S1)),
    ("decline", c.DeclineWork(WORK, P2)),
    ("withdraw", c.WithdrawWork(WORK, "s-7")),
    ("withdraw-refused", c.WithdrawWork(WORK, SEEKER)),
    ("expire", c.ExpireOffers()),
    ("select", c.SelectMediums(SID, SEEKER, MOBILE)),
    ("share", c.ShareMediums(SID, PROVIDER, MOBILE)),
    ("fix", c.ReportLocation(SID, AS_PROVIDER, fix_at(20))),
    ("fix-dropped", c.ReportLocation(SID, AS_PROVIDER, fix_at(20, accuracy=500.0))),
    ("cancel", c.CancelSession(SID, AS_SEEKER)),
    ("abandoned", c.CancelAbandoned((SID, OTHER_SID))),
    ("touch", c.TouchSession(SID, AS_SEEKER)),
    ("complete", c.CompleteSession(SID, None)),
    ("start-chat", c.StartChat(SID, AS_SEEKER, chat_room_id=ROOM)),
    ("send", c.SendMessage(SID, AS_PROVIDER, "hi", "m-2", message_id=uid(5), chat_room_id=ROOM)),
    ("send-retry", c.SendMessage(SID, AS_SEEKER, "hi", "m-1", message_id=uid(6))),
    ("ack", c.AcknowledgeMessage(MID, AS_PROVIDER, "read")),
    ("ack-refused", c.AcknowledgeMessage(MID, AS_SEEKER, "read")),
    ("availability", c.SetAvailability("u", seeker_searching=True)),
    ("sweep", c.SweepExpired()),
]


def test_the_purity_cases_cover_every_decider() -> None:
    assert set(typing.get_args(c.Command)) == set(DECIDERS)
    assert {type(command) for _, command in PURITY_CASES} == set(DECIDERS)


def _outcome(world: World, command: c.Command, now: datetime) -> Decision | str:
    try:
        return decide(world, command, now)
    except WorksessionError as exc:
        return f"{exc.code}: {exc.message}"


@pytest.mark.parametrize(
    "command", [cmd for _, cmd in PURITY_CASES], ids=[n for n, _ in PURITY_CASES]
)
def test_deciding_is_pure(command: c.Command) -> None:
    first, second = full_world(), full_world()
    assert first == second
    before = copy.deepcopy(first)

    one = _outcome(first, command, at(3))
    two = _outcome(second, command, at(3))
    again = _outcome(first, command, at(3))

    assert one == two == again
    assert first == before
    assert second == before
    if isinstance(one, Decision):
        # The decision does not share mutable state with the world either: applying it to a
        # third world and deciding again on the first gives the same answer.
        third = full_world()
        third.apply(one)
        assert _outcome(first, command, at(3)) == one
        assert first == before


# =========================================================================================
# the property: random sequences on one world
# =========================================================================================

ROLES = st.sampled_from(["seeker", "provider"])
RIGHT_USER = st.sampled_from([True, True, True, False])
MEDIUM_SETS = st.sampled_from([{}, MOBILE, {"whatsapp": "9000000001", "telegram": "9000000002"}])

STEPS = st.one_of(
    st.tuples(st.just("start_chat"), ROLES),
    st.tuples(st.just("send"), ROLES, st.sampled_from([None, "a", "b", "c"])),
    st.tuples(
        st.just("ack"),
        st.sampled_from(["recipient", "recipient", "recipient", "sender", "stranger"]),
        st.integers(0, 9),
        st.sampled_from(["delivered", "read"]),
    ),
    st.tuples(st.just("select"), RIGHT_USER, MEDIUM_SETS),
    st.tuples(st.just("share"), RIGHT_USER, MEDIUM_SETS),
    st.tuples(
        st.just("fix"),
        ROLES,
        st.sampled_from([0, 30, 45, 100, 290, 320, 1000]),
        st.integers(-20, 20),
        st.sampled_from([5.0, None, 250.0]),
        st.sampled_from([None, -40, 0, 20, 90]),
    ),
    st.tuples(st.just("wait"), st.integers(1, 300)),
    # Mostly nothing: a session that ended early leaves little to test after it.
    st.tuples(st.just("end"), st.sampled_from(["cancel", "complete", *[None] * 14])),
)


def _actor(role: str) -> Actor:
    return {"seeker": AS_SEEKER, "provider": AS_PROVIDER}.get(role, AS_STRANGER_PROVIDER)


def _command(spec: tuple[Any, ...], world: World, now: datetime, n: int) -> c.Command | None:
    match spec:
        case ("start_chat", role):
            return c.StartChat(SID, _actor(role), chat_room_id=uid(0x7000 + n))
        case ("send", role, client_msg_id):
            return c.SendMessage(
                SID,
                _actor(role),
                f"text {n}",
                client_msg_id,
                message_id=uid(0x9000 + n),
                chat_room_id=uid(0x7000 + n),
            )
        case ("ack", who, index, status):
            ids = sorted(world.messages, key=lambda m: world.messages[m].seq or 0)
            if not ids or index == 9:
                return c.AcknowledgeMessage(uid(0xBAD), AS_PROVIDER, status)
            message = world.messages[ids[index % len(ids)]]
            other = "provider" if message.sender_type == "seeker" else "seeker"
            role = {"recipient": other, "sender": message.sender_type}.get(who, "stranger")
            return c.AcknowledgeMessage(message.message_id, _actor(role), status)
        case ("select", right, mediums):
            return c.SelectMediums(SID, SEEKER if right else PROVIDER, mediums)
        case ("share", right, mediums):
            return c.ShareMediums(SID, PROVIDER if right else SEEKER, mediums)
        case ("fix", role, metres, jitter, accuracy, offset):
            # The seeker stays around the base point, the provider comes and goes.
            recorded = None if offset is None else now + timedelta(seconds=offset)
            where = jitter if role == "seeker" else metres + jitter
            fix = fix_at(where, accuracy=accuracy, recorded_at=recorded)
            return c.ReportLocation(SID, _actor(role), fix)
        case ("end", "cancel"):
            return c.CancelSession(SID, AS_SEEKER if n % 2 else None)
        case ("end", "complete"):
            return c.CompleteSession(SID, PROVIDER if n % 2 else None)
    return None


def accepted_world(*, chatting: bool) -> World:
    """A session made the way the service makes one (an accept: seq 1 ``work_accepted``),
    ``chatting``: with a message from each side, so that receipts have something to act on
    from the start."""
    world = world_of(orders=[order_row()], offers=[offer_row(PROVIDER), offer_row(P2)])
    world.apply(decide(world, c.AcceptWork(WORK, PROVIDER, session_id=SID), T0))
    if chatting:
        for command in (
            c.SendMessage(SID, AS_SEEKER, "hi", "a", message_id=uid(1)),
            c.SendMessage(SID, AS_PROVIDER, "hello", message_id=uid(2)),
        ):
            world.apply(decide(world, command, T0))
    return world


@settings(max_examples=200, deadline=None, database=None)
@given(st.booleans(), st.lists(STEPS, min_size=10, max_size=50))
def test_random_sequences_keep_the_invariants(chatting: bool, specs: list[tuple[Any, ...]]) -> None:
    world = accepted_world(chatting=chatting)
    now = T0
    statuses: dict[uuid.UUID, int] = {}
    state = S.WAITING
    for n, spec in enumerate(specs):
        now += timedelta(seconds=spec[1] if spec[0] == "wait" else 1)
        command = _command(spec, world, now, n)
        if command is None:
            continue
        before = copy.deepcopy(world)
        try:
            decision = decide(world, command, now)
        except WorksessionError:
            assert world == before, f"refused {command!r} changed the world"
            continue
        assert world == before, f"deciding {command!r} changed the world"
        world.apply(decision)

        session = world.sessions[SID]
        after = S(session.connection_state)
        assert after == state or after in ALLOWED[state], f"{state} -> {after}"
        state = after
        events = [e for e in world.changes.events if e.session_id == SID]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert session.last_seq == events[-1].seq
        assert events[0].kind == "work_accepted"
        for event in decision.events:
            render(event, "seeker")
            render(event, "provider")

        for message_id, message in world.messages.items():
            rank = STATUS_RANK[message.delivery_status]
            assert rank >= statuses.get(message_id, 0), "a message status moved backward"
            statuses[message_id] = rank
            logged = [
                e.data["status"]
                for e in events
                if e.kind == "message_status" and e.data["message_id"] == str(message_id)
            ]
            assert logged == ["delivered", "read"][:rank], "each step is logged exactly once"
            assert message.seq is not None
            assert events[message.seq - 1].kind == "chat_message"
            assert events[message.seq - 1].data["message_id"] == str(message_id)

        sent = [e for e in events if e.kind == "chat_message"]
        assert len(sent) == len(world.messages)
        keys = [
            (e.data["sender_type"], e.data["client_msg_id"])
            for e in sent
            if e.data["client_msg_id"] is not None
        ]
        assert len(keys) == len(set(keys)), "a client_msg_id was stored twice"
        assert sum(e.kind == "chat_ready" for e in events) == (session.chat_room_id is not None)
