"""Work orders on the real databases: creation, offers, first accept wins, declines, expiry.

Every change goes through the write pipeline as a command (``tests.pipeline_run``); the
reads are the lookups the REST routes and the gateway use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.factories import make_work_order, make_work_session
from tests.pipeline_run import Recorder, as_dict, pipeline_for, policy
from worksession.availability.lookup import get_availability
from worksession.errors import (
    NoProviderAvailable,
    ProviderBusy,
    SeekerBusy,
    ValidationFailed,
    WorkNotFound,
    WorksessionError,
    WorkUnavailable,
)
from worksession.kit.clock import isoformat_z, utcnow
from worksession.kit.db import Database
from worksession.models import SessionEvent, WorkOffer, WorkOrder, WorkSession
from worksession.ops import metrics
from worksession.orders import lookup
from worksession.orders.schemas import WorkOrderCreated, WorkOrderView
from worksession.pipeline.commands import (
    AcceptWork,
    Command,
    CreateWorkOrder,
    DeclineWork,
    ExpireOffers,
    SetAvailability,
)
from worksession.pipeline.decision import ANSWERED_BY_EVENT, AnswerFrame
from worksession.pipeline.runner import Outcome, Pipeline
from worksession.pipeline.store import Store, Transaction

TTL_S = 120.0
RULES = policy(offer_ttl_s=TTL_S)
Published = list[tuple[str, dict[str, Any]]]


async def submit(
    db: Database,
    command: Command,
    *,
    now: datetime | None = None,
    origin: str | None = None,
) -> tuple[Outcome, Published]:
    """``command`` alone through a pipeline of its own; its outcome and what it published.

    Like ``tests.pipeline_run.run``, but the clock is the real one unless ``now`` is given
    (the old services' default) and the command comes from no socket unless ``origin``
    names one, so a frame that answers the requester skips nobody."""
    broker = Recorder()
    pipeline = pipeline_for(db, broker, now=now, rules=RULES)
    try:
        outcome = await pipeline.submit(command, origin=origin)
    finally:
        await pipeline.store.dispose()
    return outcome, broker.take()


async def create_order(
    db: Database,
    *,
    seeker_id: str = "s1",
    provider_ids: Sequence[str] = ("p1", "p2"),
    now: datetime | None = None,
    location: tuple[float, float] | None = None,
    details: dict[str, Any] | None = None,
) -> WorkOrderView:
    command = CreateWorkOrder(
        seeker_id=seeker_id,
        provider_ids=tuple(provider_ids),
        details=details or {},
        seeker_location=location,
    )
    outcome, _ = await submit(db, command, now=now)
    return outcome.result(WorkOrderView)


async def accept(
    db: Database, work_id: int, provider_id: str, *, now: datetime | None = None
) -> tuple[Published, Outcome]:
    outcome, published = await submit(db, AcceptWork(work_id, provider_id), now=now)
    return published, outcome


async def decline(
    db: Database,
    work_id: int,
    provider_id: str,
    *,
    origin: str | None = None,
    now: datetime | None = None,
) -> tuple[Published, Outcome]:
    outcome, published = await submit(db, DeclineWork(work_id, provider_id), now=now, origin=origin)
    return published, outcome


def expired_orders_counted() -> float:
    """The orders the expiry has reported as expired so far (what it used to return)."""
    sample = metrics.REGISTRY.get_sample_value(
        "worksession_offer_outcomes_total", {"outcome": "expired"}
    )
    return sample or 0.0


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
    command = CreateWorkOrder(
        seeker_id="s1",
        provider_ids=("p1", "p2"),
        details={"service": "plumbing", "note": "kitchen sink"},
        seeker_location=(12.9716, 77.5946),
    )
    outcome, published = await submit(db, command, now=now)
    view = outcome.result(WorkOrderView)

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
    assert published == [
        ("ws:provider:p1", {"frame": frame}),
        ("ws:provider:p2", {"frame": frame}),
    ]


async def stored_orders(db: Database) -> list[int]:
    async with db.transaction() as s:
        return list((await s.execute(select(WorkOrder.id))).scalars())


async def test_create_skips_busy_and_inactive_providers_and_says_so(db: Database) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s9", provider_id="p-busy", state="active")
    await submit(db, SetAvailability("p-off", provider_active=False))
    await submit(db, SetAvailability("p-on", provider_active=True))
    command = CreateWorkOrder(
        seeker_id="s1", provider_ids=("p-busy", "p-off", "p-on", "p-never-set"), details={}
    )

    outcome, published = await submit(db, command)

    created = outcome.result(WorkOrderCreated)
    assert created.offered_to == ["p-on", "p-never-set"]
    assert [(s.provider_id, s.reason) for s in created.skipped] == [
        ("p-busy", "busy"),
        ("p-off", "inactive"),
    ]
    assert [o.provider_id for o in created.offers] == ["p-on", "p-never-set"]
    assert await offer_statuses(db, created.work_id) == {
        "p-on": "offered",
        "p-never-set": "offered",
    }
    assert [channel for channel, _ in published] == ["ws:provider:p-on", "ws:provider:p-never-set"]


async def test_a_provider_switched_back_on_is_offered_again(db: Database) -> None:
    await submit(db, SetAvailability("p1", provider_active=False))
    with pytest.raises(NoProviderAvailable):
        await create_order(db, provider_ids=["p1"])
    await submit(db, SetAvailability("p1", provider_active=True))
    view = await create_order(db, provider_ids=["p1"])
    assert await offer_statuses(db, view.work_id) == {"p1": "offered"}


async def test_nobody_left_to_offer_is_no_provider_available_and_nothing_stored(
    db: Database,
) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s9", provider_id="p1", state="waiting")
    await submit(db, SetAvailability("p2", provider_active=False))
    broker = Recorder()
    pipeline = pipeline_for(db, broker, now=None, rules=RULES)
    command = CreateWorkOrder(seeker_id="s1", provider_ids=("p1", "p2"), details={})
    try:
        with pytest.raises(NoProviderAvailable):
            await pipeline.submit(command)
    finally:
        await pipeline.store.dispose()
    assert broker.take() == []
    assert len(await stored_orders(db)) == 1  # the live session's own order
    async with db.transaction() as s:
        assert (await s.execute(select(WorkOffer))).first() is None


async def test_a_seeker_with_a_live_session_is_seeker_busy_and_nothing_stored(
    db: Database,
) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s1", provider_id="p9", state="active")
    before = await stored_orders(db)
    with pytest.raises(SeekerBusy):
        await create_order(db, seeker_id="s1", provider_ids=["p1"])
    assert await stored_orders(db) == before
    async with db.transaction() as s:
        assert (await s.execute(select(WorkOffer))).first() is None


async def test_an_ended_session_makes_nobody_busy(db: Database) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s1", provider_id="p1", state="completed")
    view = await create_order(db, seeker_id="s1", provider_ids=["p1"])
    assert await offer_statuses(db, view.work_id) == {"p1": "offered"}


async def test_get_work_order_reports_offers_and_session(db: Database) -> None:
    view = await create_order(db, provider_ids=["p1", "p2"])
    await accept(db, view.work_id, "p2")

    async with db.transaction() as s:
        got = await lookup.get_work_order(s, view.work_id)

    (session,) = await sessions_of(db, view.work_id)
    assert got.status == "accepted"
    assert got.session_id == session.session_id
    assert {o.provider_id: o.status for o in got.offers} == {"p1": "withdrawn", "p2": "accepted"}


async def test_get_unknown_work_order_is_not_found(db: Database) -> None:
    with pytest.raises(WorkNotFound):
        async with db.transaction() as s:
            await lookup.get_work_order(s, 424242)


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
        location=(1.5, -2.25),
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
    await submit(db, ExpireOffers(), now=now - timedelta(seconds=2))

    async with db.transaction() as s:
        # As the client receives them in ``connected.pending_work``.
        pending = [as_dict(item) for item in await lookup.pending_work_for(s, "p1", now=now)]

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
    now = utcnow()
    published, answer = await accept(db, view.work_id, "p1", now=now)

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
    # No frame of its own: the answer is the event (the old ``answer.frame is None``).
    assert answer.reply is ANSWERED_BY_EVENT
    wire = {"event": event.to_wire()}
    unavailable = {"frame": {"type": "work_unavailable", "work_id": view.work_id}}
    assert published == [
        ("ws:seeker:s1", wire),
        ("ws:provider:p1", wire),
        ("ws:provider:p2", unavailable),
        ("ws:provider:p3", unavailable),
    ]


async def test_an_order_offered_to_its_own_seeker_is_refused_and_nothing_stored(
    db: Database,
) -> None:
    broker = Recorder()
    pipeline = pipeline_for(db, broker, now=None, rules=RULES)
    command = CreateWorkOrder(seeker_id="u1", provider_ids=("p1", "u1"), details={})
    try:
        with pytest.raises(ValidationFailed, match="seeker_id"):
            await pipeline.submit(command)
    finally:
        await pipeline.store.dispose()
    assert broker.take() == []
    async with db.transaction() as s:
        assert (await s.execute(select(WorkOrder))).first() is None
        assert (await s.execute(select(WorkOffer))).first() is None


async def test_an_order_once_offered_to_its_own_seeker_cannot_be_accepted_by_them(
    db: Database,
) -> None:
    """An order stored before creation refused a seeker among the providers: the accept
    is refused by its decider, not left to the database's CHECK (a 500)."""
    async with db.transaction() as s:
        order = await make_work_order(s, seeker_id="u1")
        s.add(WorkOffer(work_order_id=order.id, provider_id="u1", status="offered"))
        work_id = order.id
    with pytest.raises(WorkNotFound):
        await accept(db, work_id, "u1")
    assert await order_status(db, work_id) == "pending"
    assert await sessions_of(db, work_id) == []


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
            await lookup.get_work_order(s, work_id)


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
    # 1.1 skips a busy provider at creation; the session begun after the offer (on another
    # worker, say) is what the accept must still refuse.
    view = await create_order(db, seeker_id="s1", provider_ids=["p1", "p2"])
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s9", provider_id="p1", state="active")

    with pytest.raises(ProviderBusy):
        await accept(db, view.work_id, "p1")

    assert await order_status(db, view.work_id) == "pending"
    assert await offer_statuses(db, view.work_id) == {"p1": "offered", "p2": "offered"}
    assert await sessions_of(db, view.work_id) == []
    async with db.transaction() as s:
        assert (await get_availability(s, "p1")).provider_active is None
        assert (await get_availability(s, "s1")).seeker_searching is None


async def test_seeker_in_a_live_session_is_busy(db: Database) -> None:
    # As above: the seeker's session began after the order was created.
    view = await create_order(db, seeker_id="s1", provider_ids=["p1"])
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s1", provider_id="p9", state="waiting")

    with pytest.raises(SeekerBusy):
        await accept(db, view.work_id, "p1")

    assert await order_status(db, view.work_id) == "pending"
    assert await sessions_of(db, view.work_id) == []


# --- accepts at once ----------------------------------------------------------------------
#
# "one_batch": the accepts reach one worker's pipeline together and its rules decide them
# in arrival order. "separate_workers": each accept runs on a pipeline of its own, as on
# separate workers, and the database settles the race. On PostgreSQL their transactions
# are made to overlap (see Rendezvous); SQLite's single pooled connection serialises them
# anyway (a rendezvous there would deadlock), which is the embedded mode's guarantee.

WORKERS = ["one_batch", "separate_workers"]


class _MeetAfter:
    """A transaction that meets the others once ``method`` has returned."""

    def __init__(self, tx: Transaction, method: str, meet: Callable[[], Awaitable[None]]) -> None:
        self._tx = tx
        self._method = method
        self._meet = meet

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._tx, name)
        if name != self._method:
            return attribute

        async def then_meet(*args: Any, **kwargs: Any) -> Any:
            result = await attribute(*args, **kwargs)
            await self._meet()
            return result

        return then_meet


class Rendezvous:
    """A worker's store whose first transaction waits for every other worker's at a barrier,
    right after ``BEGIN`` or, with ``after``, once it has loaded that much: all the
    transactions are then open at once and race for the same rows and unique keys."""

    def __init__(self, store: Store, barrier: asyncio.Barrier, *, after: str | None) -> None:
        self.dialect = store.dialect
        self._store = store
        self._barrier = barrier
        self._after = after
        self._met = False

    async def _meet(self) -> None:
        self._met = True
        async with asyncio.timeout(30):
            await self._barrier.wait()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self._store.transaction() as tx:
            if self._met:  # a rerun after losing the race goes alone
                yield tx
            elif self._after is None:
                await self._meet()
                yield tx
            else:
                yield _MeetAfter(tx, self._after, self._meet)

    async def dispose(self) -> None:
        await self._store.dispose()


async def accept_at_once(
    db: Database, workers: str, accepts: Sequence[AcceptWork], *, meet_after: str | None = None
) -> list[str]:
    """Each accept's outcome: ``accepted`` or its error code, in the order given."""
    broker = Recorder()
    if workers == "one_batch":
        pipelines = [pipeline_for(db, broker, now=None, rules=RULES)] * len(accepts)
    else:
        pipelines = [pipeline_for(db, broker, now=None, rules=RULES) for _ in accepts]
        if db.dialect == "postgresql":
            barrier = asyncio.Barrier(len(accepts))
            for pipeline in pipelines:
                pipeline.store = Rendezvous(pipeline.store, barrier, after=meet_after)

    async def outcome(pipeline: Pipeline, command: AcceptWork) -> str:
        try:
            await pipeline.submit(command)
        except WorksessionError as exc:
            return exc.code
        return "accepted"

    try:
        outcomes = await asyncio.gather(*map(outcome, pipelines, accepts))
    finally:
        for pipeline in dict.fromkeys(pipelines):
            await pipeline.store.dispose()
    if workers == "one_batch":
        assert pipelines[0].batches == 1
    return outcomes


@pytest.mark.parametrize("workers", WORKERS)
async def test_eight_providers_accepting_at_once_make_one_session(
    db: Database, workers: str
) -> None:
    providers = [f"p{i}" for i in range(8)]
    view = await create_order(db, provider_ids=providers)

    # Together from BEGIN: seven wait on the order's row lock for the winner to commit.
    outcomes = await accept_at_once(db, workers, [AcceptWork(view.work_id, p) for p in providers])

    assert sorted(outcomes) == ["accepted"] + ["work_unavailable"] * 7
    (session,) = await sessions_of(db, view.work_id)
    winner = providers[outcomes.index("accepted")]
    assert session.provider_id == winner
    statuses = await offer_statuses(db, view.work_id)
    assert statuses.pop(winner) == "accepted"
    assert set(statuses.values()) == {"withdrawn"}


@pytest.mark.parametrize("workers", WORKERS)
async def test_one_provider_accepting_two_orders_at_once_gets_one_session(
    db: Database, workers: str
) -> None:
    first = await create_order(db, seeker_id="s1", provider_ids=["p1"])
    second = await create_order(db, seeker_id="s2", provider_ids=["p1"])

    # Two orders, two row locks: both workers find p1 free, and the unique index of live
    # providers refuses the second session.
    outcomes = await accept_at_once(
        db,
        workers,
        [AcceptWork(first.work_id, "p1"), AcceptWork(second.work_id, "p1")],
        meet_after="live_sessions",
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

    published, answer = await decline(db, view.work_id, "p1", origin="socket-7")

    declined = {"type": "work_declined", "work_id": view.work_id}
    assert isinstance(answer.reply, AnswerFrame)
    assert as_dict(answer.reply.frame) == declined
    assert answer.events == ()
    assert published == [("ws:provider:p1", {"frame": declined, "skip": "socket-7"})]
    assert await offer_statuses(db, view.work_id) == {"p1": "declined", "p2": "offered"}
    assert await order_status(db, view.work_id) == "pending"


async def test_last_decline_rejects_the_order_and_tells_the_seeker(db: Database) -> None:
    view = await create_order(db, seeker_id="s1", provider_ids=["p1", "p2"])
    await decline(db, view.work_id, "p1")

    published, _ = await decline(db, view.work_id, "p2")

    assert await order_status(db, view.work_id) == "rejected"
    assert published == [
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

    # The expiry no longer returns how many orders it expired: it counts them in the
    # offer outcomes metric, after the COMMIT.
    before = expired_orders_counted()
    outcome, messages = await submit(db, ExpireOffers(), now=now)
    count = expired_orders_counted() - before

    assert outcome.reply is None
    assert count == 2
    assert await order_status(db, due.work_id) == "expired"
    assert await order_status(db, due_too.work_id) == "expired"
    assert await order_status(db, fresh.work_id) == "pending"
    assert await order_status(db, taken.work_id) == "accepted"
    assert await offer_statuses(db, due.work_id) == {"p1": "expired", "p2": "declined"}
    assert await offer_statuses(db, fresh.work_id) == {"p4": "offered"}
    assert sorted(messages, key=lambda m: m[0]) == [
        ("ws:provider:p1", {"frame": {"type": "work_unavailable", "work_id": due.work_id}}),
        ("ws:provider:p3", {"frame": {"type": "work_unavailable", "work_id": due_too.work_id}}),
        ("ws:seeker:s1", {"frame": {"type": "work_expired", "work_id": due.work_id}}),
        ("ws:seeker:s2", {"frame": {"type": "work_expired", "work_id": due_too.work_id}}),
    ]

    before = expired_orders_counted()
    _, again = await submit(db, ExpireOffers(), now=now)
    assert expired_orders_counted() - before == 0
    assert not again
