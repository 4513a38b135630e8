"""Work orders on the real databases: creation, offers, first accept wins, declines, expiry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.factories import make_work_session
from worksession.availability.service import get_availability
from worksession.errors import (
    ProviderBusy,
    SeekerBusy,
    WorkNotFound,
    WorksessionError,
    WorkUnavailable,
)
from worksession.kit.clock import isoformat_z, utcnow
from worksession.kit.db import Database
from worksession.models import SessionEvent, WorkOffer, WorkOrder, WorkSession
from worksession.orders import service
from worksession.orders.schemas import Location, WorkOrderCreate, WorkOrderView
from worksession.outbox import Outbox

TTL_S = 120.0


def decoded(outbox: Outbox) -> list[tuple[str, dict[str, Any]]]:
    return [(channel, json.loads(payload)) for channel, payload in outbox.messages]


async def create_order(
    db: Database,
    *,
    seeker_id: str = "s1",
    provider_ids: Sequence[str] = ("p1", "p2"),
    now: datetime | None = None,
    location: Location | None = None,
    details: dict[str, Any] | None = None,
) -> WorkOrderView:
    order = WorkOrderCreate(
        seeker_id=seeker_id,
        provider_ids=list(provider_ids),
        details=details or {},
        seeker_location=location,
    )
    async with db.transaction() as s:
        return await service.create_work_order(s, Outbox(), order=order, offer_ttl_s=TTL_S, now=now)


async def accept(db: Database, work_id: int, provider_id: str) -> tuple[Outbox, Any]:
    outbox = Outbox()
    async with db.transaction() as s:
        answer = await service.accept_work(s, outbox, work_id=work_id, provider_id=provider_id)
    return outbox, answer


async def decline(
    db: Database,
    work_id: int,
    provider_id: str,
    *,
    origin: str | None = None,
    now: datetime | None = None,
) -> tuple[Outbox, Any]:
    outbox = Outbox(origin=origin)
    async with db.transaction() as s:
        answer = await service.decline_work(
            s, outbox, work_id=work_id, provider_id=provider_id, now=now
        )
    return outbox, answer


async def offer_statuses(db: Database, work_id: int) -> dict[str, str]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(WorkOffer.provider_id, WorkOffer.status).where(
                WorkOffer.work_order_id == work_id
            )
        )
        return dict(rows.all())


async def order_status(db: Database, work_id: int) -> str:
    async with db.transaction() as s:
        return (
            await s.execute(select(WorkOrder.status).where(WorkOrder.id == work_id))
        ).scalar_one()


async def sessions_of(db: Database, work_id: int) -> list[WorkSession]:
    async with db.transaction() as s:
        query = select(WorkSession).where(WorkSession.work_order_id == work_id)
        return list((await s.execute(query)).scalars())


# --- create -------------------------------------------------------------------------------


async def test_create_stores_the_order_and_sends_one_work_request_per_provider(
    db: Database,
) -> None:
    now = utcnow()
    outbox = Outbox()
    order = WorkOrderCreate(
        seeker_id="s1",
        provider_ids=["p1", "p2"],
        details={"service": "plumbing", "note": "kitchen sink"},
        seeker_location=Location(lat=12.9716, lng=77.5946),
    )
    async with db.transaction() as s:
        view = await service.create_work_order(s, outbox, order=order, offer_ttl_s=TTL_S, now=now)

    async with db.transaction() as s:
        row = (await s.execute(select(WorkOrder))).scalar_one()
    assert (row.id, row.seeker_id, row.status) == (view.work_id, "s1", "pending")
    assert row.details == {"service": "plumbing", "note": "kitchen sink"}
    assert (row.seeker_latitude, row.seeker_longitude) == (12.9716, 77.5946)
    assert row.offer_expires_at == now + timedelta(seconds=TTL_S)
    assert await offer_statuses(db, view.work_id) == {"p1": "offered", "p2": "offered"}

    assert view.status == "pending"
    assert view.session_id is None
    assert [(o.provider_id, o.status, o.responded_at) for o in view.offers] == [
        ("p1", "offered", None),
        ("p2", "offered", None),
    ]
    frame = {
        "type": "work_request",
        "work_id": view.work_id,
        "details": {"service": "plumbing", "note": "kitchen sink"},
        "seeker_location": {"lat": 12.9716, "lng": 77.5946},
        "created_at": isoformat_z(now),
        "expires_at": isoformat_z(now + timedelta(seconds=TTL_S)),
    }
    assert decoded(outbox) == [
        ("ws:provider:p1", {"frame": frame}),
        ("ws:provider:p2", {"frame": frame}),
    ]


async def test_get_work_order_reports_offers_and_session(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1", "p2"])
    await accept(db, view.work_id, "p2")

    async with db.transaction() as s:
        got = await service.get_work_order(s, view.work_id)

    (session,) = await sessions_of(db, view.work_id)
    assert got.status == "accepted"
    assert got.session_id == session.session_id
    assert {o.provider_id: o.status for o in got.offers} == {"p1": "withdrawn", "p2": "accepted"}


async def test_get_unknown_work_order_is_not_found(db: Database) -> None:
    with pytest.raises(WorkNotFound):
        async with db.transaction() as s:
            await service.get_work_order(s, 424242)


# --- pending work -------------------------------------------------------------------------


async def test_pending_work_lists_only_offers_still_open_oldest_first(db: Database) -> None:
    now = utcnow()
    older = await create_order(
        db, seeker_id="s1", provider_ids=["p1"], now=now - timedelta(seconds=10)
    )
    newer = await create_order(
        db,
        seeker_id="s2",
        provider_ids=["p1"],
        now=now - timedelta(seconds=5),
        location=Location(lat=1.5, lng=-2.25),
        details={"job": "fan"},
    )
    declined = await create_order(db, seeker_id="s3", provider_ids=["p1", "p2"])
    await decline(db, declined.work_id, "p1")
    withdrawn = await create_order(db, seeker_id="s4", provider_ids=["p1", "p2"])
    await accept(db, withdrawn.work_id, "p2")
    past_deadline = await create_order(
        db, seeker_id="s5", provider_ids=["p1"], now=now - timedelta(seconds=TTL_S + 1)
    )
    await create_order(db, seeker_id="s6", provider_ids=["p3"])  # not offered to p1
    expired = await create_order(
        db, seeker_id="s7", provider_ids=["p1"], now=now - timedelta(seconds=TTL_S + 5)
    )
    async with db.transaction() as s:
        await service.expire_offers(s, Outbox(), now=now - timedelta(seconds=2))

    async with db.transaction() as s:
        pending = await service.pending_work_for(s, "p1", now=now)

    assert await order_status(db, expired.work_id) == "expired"
    assert await order_status(db, past_deadline.work_id) == "pending"
    assert [item["work_id"] for item in pending] == [older.work_id, newer.work_id]
    assert pending[1] == {
        "work_id": newer.work_id,
        "details": {"job": "fan"},
        "seeker_location": {"lat": 1.5, "lng": -2.25},
        "created_at": isoformat_z(now - timedelta(seconds=5)),
        "expires_at": isoformat_z(now - timedelta(seconds=5) + timedelta(seconds=TTL_S)),
    }


# --- accept -------------------------------------------------------------------------------


async def test_accept_creates_the_session_and_tells_everyone(db: Database) -> None:
    view = await create_order(db, seeker_id="s1", provider_ids=["p1", "p2", "p3", "p4"])
    await decline(db, view.work_id, "p4")
    outbox = Outbox()
    now = utcnow()
    async with db.transaction() as s:
        answer = await service.accept_work(
            s, outbox, work_id=view.work_id, provider_id="p1", now=now
        )

    (session,) = await sessions_of(db, view.work_id)
    assert (session.seeker_id, session.provider_id) == ("s1", "p1")
    assert (session.connection_state, session.last_seq) == ("waiting", 1)
    async with db.transaction() as s:
        logged = (await s.execute(select(SessionEvent))).scalar_one()
        accepted_offer = (
            await s.execute(select(WorkOffer).where(WorkOffer.provider_id == "p1"))
        ).scalar_one()
        provider = await get_availability(s, "p1")
        seeker = await get_availability(s, "s1")
    assert (logged.session_id, logged.seq, logged.kind) == (session.id, 1, "work_accepted")
    assert logged.data == {"work_id": view.work_id, "connection_state": "waiting"}
    assert await order_status(db, view.work_id) == "accepted"
    assert await offer_statuses(db, view.work_id) == {
        "p1": "accepted",
        "p2": "withdrawn",
        "p3": "withdrawn",
        "p4": "declined",
    }
    assert accepted_offer.responded_at == now
    assert provider.provider_active is False
    assert seeker.seeker_searching is False

    (event,) = answer.events
    assert (event.session_id, event.seq, event.kind) == (session.session_id, 1, "work_accepted")
    assert answer.frame is None
    wire = {"event": event.to_wire()}
    unavailable = {"frame": {"type": "work_unavailable", "work_id": view.work_id}}
    assert decoded(outbox) == [
        ("ws:seeker:s1", wire),
        ("ws:provider:p1", wire),
        ("ws:provider:p2", unavailable),
        ("ws:provider:p3", unavailable),
    ]


async def test_accept_by_a_provider_not_offered_is_not_found(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1"])
    with pytest.raises(WorkNotFound):
        await accept(db, view.work_id, "p9")
    with pytest.raises(WorkNotFound):
        await accept(db, view.work_id + 1000, "p1")
    assert await order_status(db, view.work_id) == "pending"


@pytest.mark.parametrize("work_id", [0, 2**31, 2**63 - 1])
async def test_ids_no_order_can_have_are_not_found(db: Database, work_id: int) -> None:
    with pytest.raises(WorkNotFound):
        await accept(db, work_id, "p1")
    with pytest.raises(WorkNotFound):
        await decline(db, work_id, "p1")
    with pytest.raises(WorkNotFound):
        async with db.transaction() as s:
            await service.get_work_order(s, work_id)


async def test_second_accept_is_unavailable(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1", "p2"])
    await accept(db, view.work_id, "p1")
    with pytest.raises(WorkUnavailable):
        await accept(db, view.work_id, "p2")
    assert len(await sessions_of(db, view.work_id)) == 1


async def test_accept_after_declining_is_unavailable(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1", "p2"])
    await decline(db, view.work_id, "p1")
    with pytest.raises(WorkUnavailable):
        await accept(db, view.work_id, "p1")
    assert await order_status(db, view.work_id) == "pending"
    assert await offer_statuses(db, view.work_id) == {"p1": "declined", "p2": "offered"}
    assert await sessions_of(db, view.work_id) == []


async def test_accept_past_the_deadline_is_unavailable(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1"], now=utcnow() - timedelta(seconds=TTL_S + 1))
    with pytest.raises(WorkUnavailable):
        await accept(db, view.work_id, "p1")
    assert await sessions_of(db, view.work_id) == []


async def test_provider_in_a_live_session_is_busy_and_the_order_stays_pending(
    db: Database,
) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s9", provider_id="p1", state="active")
    view = await create_order(db, seeker_id="s1", provider_ids=["p1", "p2"])

    with pytest.raises(ProviderBusy):
        await accept(db, view.work_id, "p1")

    assert await order_status(db, view.work_id) == "pending"
    assert await offer_statuses(db, view.work_id) == {"p1": "offered", "p2": "offered"}
    assert await sessions_of(db, view.work_id) == []
    async with db.transaction() as s:
        assert (await get_availability(s, "p1")).provider_active is None
        assert (await get_availability(s, "s1")).seeker_searching is None


async def test_seeker_in_a_live_session_is_busy(db: Database) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s1", provider_id="p9", state="waiting")
    view = await create_order(db, seeker_id="s1", provider_ids=["p1"])

    with pytest.raises(SeekerBusy):
        await accept(db, view.work_id, "p1")

    assert await order_status(db, view.work_id) == "pending"
    assert await sessions_of(db, view.work_id) == []


async def _accept_outcome(db: Database, work_id: int, provider_id: str) -> str:
    try:
        await accept(db, work_id, provider_id)
    except WorksessionError as exc:
        return exc.code
    return "accepted"


async def test_eight_providers_accepting_at_once_make_one_session(db: Database) -> None:
    providers = [f"p{i}" for i in range(8)]
    view = await create_order(db, provider_ids=providers)

    outcomes = await asyncio.gather(*(_accept_outcome(db, view.work_id, p) for p in providers))

    assert sorted(outcomes) == ["accepted"] + ["work_unavailable"] * 7
    (session,) = await sessions_of(db, view.work_id)
    winner = providers[outcomes.index("accepted")]
    assert session.provider_id == winner
    statuses = await offer_statuses(db, view.work_id)
    assert statuses.pop(winner) == "accepted"
    assert set(statuses.values()) == {"withdrawn"}


async def test_one_provider_accepting_two_orders_at_once_gets_one_session(db: Database) -> None:
    first = await create_order(db, seeker_id="s1", provider_ids=["p1"])
    second = await create_order(db, seeker_id="s2", provider_ids=["p1"])

    outcomes = await asyncio.gather(
        _accept_outcome(db, first.work_id, "p1"), _accept_outcome(db, second.work_id, "p1")
    )

    assert sorted(outcomes) == ["accepted", "provider_busy"]
    loser = (first, second)[outcomes.index("provider_busy")]
    assert await order_status(db, loser.work_id) == "pending"
    async with db.transaction() as s:
        assert len((await s.execute(select(WorkSession))).scalars().all()) == 1


# --- decline ------------------------------------------------------------------------------


async def test_decline_answers_the_socket_and_tells_the_providers_other_devices(
    db: Database,
) -> None:
    view = await create_order(db, provider_ids=["p1", "p2"])

    outbox, answer = await decline(db, view.work_id, "p1", origin="socket-7")

    declined = {"type": "work_declined", "work_id": view.work_id}
    assert answer.frame == declined
    assert answer.events == ()
    assert decoded(outbox) == [("ws:provider:p1", {"frame": declined, "skip": "socket-7"})]
    assert await offer_statuses(db, view.work_id) == {"p1": "declined", "p2": "offered"}
    assert await order_status(db, view.work_id) == "pending"


async def test_last_decline_rejects_the_order_and_tells_the_seeker(db: Database) -> None:
    view = await create_order(db, seeker_id="s1", provider_ids=["p1", "p2"])
    await decline(db, view.work_id, "p1")

    outbox, _ = await decline(db, view.work_id, "p2")

    assert await order_status(db, view.work_id) == "rejected"
    assert decoded(outbox) == [
        ("ws:provider:p2", {"frame": {"type": "work_declined", "work_id": view.work_id}}),
        ("ws:seeker:s1", {"frame": {"type": "work_rejected", "work_id": view.work_id}}),
    ]


async def test_decline_by_a_provider_not_offered_is_not_found(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1"])
    with pytest.raises(WorkNotFound):
        await decline(db, view.work_id, "p9")


async def test_declining_twice_is_unavailable(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1", "p2"])
    await decline(db, view.work_id, "p1")
    with pytest.raises(WorkUnavailable):
        await decline(db, view.work_id, "p1")


async def test_declining_a_taken_order_is_unavailable(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1", "p2"])
    await accept(db, view.work_id, "p2")
    with pytest.raises(WorkUnavailable):
        await decline(db, view.work_id, "p1")
    assert await offer_statuses(db, view.work_id) == {"p1": "withdrawn", "p2": "accepted"}


async def test_declining_past_the_deadline_is_unavailable(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1"], now=utcnow() - timedelta(seconds=TTL_S + 1))
    with pytest.raises(WorkUnavailable):
        await decline(db, view.work_id, "p1")
    assert await order_status(db, view.work_id) == "pending"


# --- expiry -------------------------------------------------------------------------------


async def test_expire_offers_expires_due_orders_and_tells_seekers_and_open_providers(
    db: Database,
) -> None:
    now = utcnow()
    long_ago = now - timedelta(seconds=TTL_S + 1)
    due = await create_order(db, seeker_id="s1", provider_ids=["p1", "p2"], now=long_ago)
    await decline(db, due.work_id, "p2", now=long_ago + timedelta(seconds=1))
    due_too = await create_order(db, seeker_id="s2", provider_ids=["p3"], now=long_ago)
    fresh = await create_order(db, seeker_id="s3", provider_ids=["p4"], now=now)
    taken = await create_order(db, seeker_id="s4", provider_ids=["p5", "p6"], now=now)
    await accept(db, taken.work_id, "p5")

    outbox = Outbox()
    async with db.transaction() as s:
        count = await service.expire_offers(s, outbox, now=now)

    assert count == 2
    assert await order_status(db, due.work_id) == "expired"
    assert await order_status(db, due_too.work_id) == "expired"
    assert await order_status(db, fresh.work_id) == "pending"
    assert await order_status(db, taken.work_id) == "accepted"
    assert await offer_statuses(db, due.work_id) == {"p1": "expired", "p2": "declined"}
    assert await offer_statuses(db, fresh.work_id) == {"p4": "offered"}
    messages = decoded(outbox)
    assert sorted(messages, key=lambda m: m[0]) == [
        ("ws:provider:p1", {"frame": {"type": "work_unavailable", "work_id": due.work_id}}),
        ("ws:provider:p3", {"frame": {"type": "work_unavailable", "work_id": due_too.work_id}}),
        ("ws:seeker:s1", {"frame": {"type": "work_expired", "work_id": due.work_id}}),
        ("ws:seeker:s2", {"frame": {"type": "work_expired", "work_id": due_too.work_id}}),
    ]

    again = Outbox()
    async with db.transaction() as s:
        assert await service.expire_offers(s, again, now=now) == 0
    assert not again
