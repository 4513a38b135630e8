"""Work orders: creation, offers, first-accept-wins, declines and expiry (PROTOCOL 4).

Every race here is settled by the database: the conditional ``pending -> accepted`` UPDATE
(one winner per order), the unique constraints on ``work_sessions`` (one session per order,
one live session per user), and the order's row lock, which every accept and decline of one
order takes first. A service error raised after a write relies on the edge rolling the
transaction back, which it always does on an exception.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.availability import service as availability
from worksession.errors import ProviderBusy, SeekerBusy, WorkNotFound, WorkUnavailable
from worksession.kit.clock import utcnow
from worksession.models import WorkOffer, WorkOrder
from worksession.ops import metrics
from worksession.orders import repository
from worksession.orders.schemas import (
    MAX_WORK_ID,
    Location,
    OfferView,
    WorkOrderCreate,
    WorkOrderView,
    pending_work_item,
    work_request_frame,
)
from worksession.outbox import Outbox
from worksession.sessions import events
from worksession.sessions.events import Answer
from worksession.sessions.states import OfferStatus, SessionState, WorkOrderStatus

_BUSY_ERRORS = {
    "ux_work_sessions_live_provider": ProviderBusy,
    "ux_work_sessions_live_seeker": SeekerBusy,
    "uq_work_sessions_work_order_id": WorkUnavailable,
}


def _location(order: WorkOrder) -> Location | None:
    if order.seeker_latitude is None or order.seeker_longitude is None:
        return None
    return Location(lat=order.seeker_latitude, lng=order.seeker_longitude)


def _pending_item(order: WorkOrder) -> dict[str, Any]:
    return pending_work_item(
        work_id=order.id,
        details=order.details,
        seeker_location=_location(order),
        created_at=order.created_at,
        expires_at=order.offer_expires_at,
    )


def _view(order: WorkOrder, offers: list[WorkOffer], session_id: uuid.UUID | None) -> WorkOrderView:
    return WorkOrderView(
        work_id=order.id,
        seeker_id=order.seeker_id,
        status=order.status,
        details=order.details,
        seeker_location=_location(order),
        created_at=order.created_at,
        expires_at=order.offer_expires_at,
        offers=[
            OfferView(provider_id=o.provider_id, status=o.status, responded_at=o.responded_at)
            for o in offers
        ],
        session_id=session_id,
    )


async def create_work_order(
    db: AsyncSession,
    outbox: Outbox,
    *,
    order: WorkOrderCreate,
    offer_ttl_s: float,
    now: datetime | None = None,
) -> WorkOrderView:
    """Store a pending order with one open offer per provider and send each a work_request."""
    now = now or utcnow()
    location = order.seeker_location
    row, offers = await repository.insert_order(
        db,
        seeker_id=order.seeker_id,
        details=order.details,
        latitude=location.lat if location else None,
        longitude=location.lng if location else None,
        offer_expires_at=now + timedelta(seconds=offer_ttl_s),
        provider_ids=order.provider_ids,
        now=now,
    )
    frame = work_request_frame(_pending_item(row))
    for provider_id in order.provider_ids:
        outbox.frame("provider", provider_id, frame)
    return _view(row, offers, None)


async def get_work_order(db: AsyncSession, work_id: int) -> WorkOrderView:
    """The order with its offers and session; ``WorkNotFound`` if there is none."""
    row = await repository.get_order(db, work_id) if _possible(work_id) else None
    if row is None:
        raise WorkNotFound
    offers = await repository.offers_of(db, work_id)
    return _view(row, offers, await repository.session_id_of_order(db, work_id))


async def pending_work_for(
    db: AsyncSession, provider_id: str, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """``connected.pending_work``: the offers this provider may still accept, oldest first."""
    orders = await repository.open_offers_for(db, provider_id, now=now or utcnow())
    return [_pending_item(order) for order in orders]


def _possible(work_id: int) -> bool:
    # The WebSocket accepts any positive 64-bit id; PostgreSQL would refuse to even compare
    # one beyond the int4 key with an error, where the answer is simply "no such order".
    return 1 <= work_id <= MAX_WORK_ID


async def _require_offer(db: AsyncSession, *, work_id: int, provider_id: str) -> None:
    # An order that exists but was not offered to this provider is not told apart from none.
    if not _possible(work_id) or not await repository.offer_exists(
        db, work_id=work_id, provider_id=provider_id
    ):
        raise WorkNotFound


async def accept_work(
    db: AsyncSession,
    outbox: Outbox,
    *,
    work_id: int,
    provider_id: str,
    now: datetime | None = None,
) -> Answer:
    """First accept wins: the order is accepted, a ``waiting`` session created (seq 1 is
    ``work_accepted``), the other offers withdrawn and both users made unavailable.

    Raises WorkNotFound, WorkUnavailable, ProviderBusy or SeekerBusy; the caller must then
    roll back, which leaves the order pending for the other providers.
    """
    now = now or utcnow()
    await _require_offer(db, work_id=work_id, provider_id=provider_id)
    seeker_id = await repository.claim_pending_order(db, work_id=work_id, now=now)
    if seeker_id is None:
        raise WorkUnavailable
    accepted = await repository.answer_offer(
        db, work_id=work_id, provider_id=provider_id, status=OfferStatus.ACCEPTED, now=now
    )
    if not accepted:  # this provider declined earlier, or the offer expired
        raise WorkUnavailable
    session_id = uuid.uuid4()
    try:
        session_pk = await repository.insert_session(
            db,
            session_id=session_id,
            work_id=work_id,
            seeker_id=seeker_id,
            provider_id=provider_id,
            now=now,
        )
    except IntegrityError as exc:
        error = _BUSY_ERRORS.get(repository.violated_unique(exc) or "")
        if error is None:
            raise
        raise error from None

    withdrawn = await repository.withdraw_open_offers(db, work_id=work_id, now=now)
    await availability.set_provider_active(db, provider_id, False, now=now)
    await availability.set_seeker_searching(db, seeker_id, False, now=now)
    (event,) = await events.append(
        db,
        session_pk=session_pk,
        session_id=session_id,
        events=[
            (
                "work_accepted",
                {"work_id": work_id, "connection_state": SessionState.WAITING.value},
            )
        ],
        now=now,
    )
    outbox.event(event, seeker_id=seeker_id, provider_id=provider_id)
    for other in withdrawn:
        outbox.frame("provider", other, {"type": "work_unavailable", "work_id": work_id})
    metrics.offer_outcome("accepted")
    return Answer(events=(event,))


async def decline_work(
    db: AsyncSession,
    outbox: Outbox,
    *,
    work_id: int,
    provider_id: str,
    now: datetime | None = None,
) -> Answer:
    """Decline this provider's offer; the last open offer declined rejects the order."""
    now = now or utcnow()
    await _require_offer(db, work_id=work_id, provider_id=provider_id)
    order = await repository.lock_order(db, work_id)
    # A lapsed deadline counts as expired even before the expiry job has marked it so.
    if order is None or order.status != WorkOrderStatus.PENDING or order.offer_expires_at <= now:
        raise WorkUnavailable
    declined = await repository.answer_offer(
        db, work_id=work_id, provider_id=provider_id, status=OfferStatus.DECLINED, now=now
    )
    if not declined:
        raise WorkUnavailable
    metrics.offer_outcome("declined")
    frame = {"type": "work_declined", "work_id": work_id}
    # The provider's other devices hear it from the broker; the asking socket gets the answer.
    outbox.frame("provider", provider_id, frame, skip_origin=True)
    await _reject_if_nobody_is_left(db, outbox, order=order, now=now)
    return Answer(frame=frame)


async def _reject_if_nobody_is_left(
    db: AsyncSession, outbox: Outbox, *, order: WorkOrder, now: datetime
) -> None:
    if await repository.has_open_offers(db, order.id):
        return
    # The order is locked, but SQLite ignores FOR UPDATE: keep the UPDATE conditional.
    if await repository.reject_pending_order(db, work_id=order.id, now=now):
        outbox.frame("seeker", order.seeker_id, {"type": "work_rejected", "work_id": order.id})
        metrics.offer_outcome("rejected")


async def expire_offers(db: AsyncSession, outbox: Outbox, *, now: datetime | None = None) -> int:
    """Expire every pending order past its deadline and its open offers; tell the seekers
    (``work_expired``) and the providers still offered (``work_unavailable``). Returns the
    number of orders expired."""
    now = now or utcnow()
    orders = await repository.expire_due_orders(db, now=now)
    if not orders:
        return 0
    offers = await repository.expire_open_offers(db, work_ids=[o.id for o in orders], now=now)
    providers_of: defaultdict[int, list[str]] = defaultdict(list)
    for offer in offers:
        providers_of[offer.work_order_id].append(offer.provider_id)
    for order in orders:
        outbox.frame("seeker", order.seeker_id, {"type": "work_expired", "work_id": order.id})
        for provider_id in providers_of[order.id]:
            outbox.frame("provider", provider_id, {"type": "work_unavailable", "work_id": order.id})
    metrics.offer_outcome("expired", len(orders))
    return len(orders)
