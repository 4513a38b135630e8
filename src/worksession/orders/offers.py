"""Work orders and their offers (PROTOCOL 4): creation, first accept wins, declines, expiry.

Every race here is settled by the database: each command locks the order it is about
first (so accepts and declines of one order are decided one after the other, and every
accept after the winner finds the order taken), and the unique indexes on
``work_sessions`` (one session per order, one live session per user) refuse what no lock
could foresee, a second worker creating a session for the same seeker at the same moment.
:data:`CONFLICTS` says which error each of those indexes means.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worksession.errors import (
    NoProviderAvailable,
    ProviderBusy,
    SeekerBusy,
    ValidationFailed,
    WorkNotFound,
    WorksessionError,
    WorkUnavailable,
)
from worksession.orders.schemas import (
    Location,
    OfferView,
    SkippedProvider,
    WorkOrderCreated,
    WorkOrderView,
)
from worksession.pipeline.commands import (
    AcceptWork,
    CreateWorkOrder,
    DeclineWork,
    ExpireOffers,
    WithdrawWork,
)
from worksession.pipeline.decision import (
    ANSWERED_BY_EVENT,
    AnswerFrame,
    Decision,
    Notice,
    OfferOutcome,
    PutOffer,
    PutOrder,
    PutSession,
    Result,
    SetFlag,
    Write,
)
from worksession.pipeline.rows import OfferRow, OrderRow, SessionRow, evolve
from worksession.pipeline.world import World
from worksession.protocol import outbound as out
from worksession.sessions.access import logged
from worksession.sessions.states import OfferStatus, SessionState, WorkOrderStatus

CONFLICTS: dict[str, type[WorksessionError]] = {
    "ux_work_sessions_live_provider": ProviderBusy,
    "ux_work_sessions_live_seeker": SeekerBusy,
    "uq_work_sessions_work_order_id": WorkUnavailable,
}
"""The unique index a concurrent accept broke, and the error the losing accept gets."""

PENDING = WorkOrderStatus.PENDING.value
OFFERED = OfferStatus.OFFERED.value


def decide_create(world: World, command: CreateWorkOrder, now: datetime) -> Decision:
    """A pending order with one open offer per available provider, each of whom gets a
    ``work_request``; the answer is the order as the internal API shows it, with whom it
    was offered to and whom it skipped (PROTOCOL 4, *1.1*).

    A seeker among the providers is refused (a 422): accepting would make a session with
    one participant, which the database refuses too, as a last resort. A seeker with a live
    session is ``seeker_busy``: no accept could succeed. A provider in a live session is
    skipped as ``busy``, one whose active status is off as ``inactive`` (busy first: an
    accept switches the flag off, and the session is the reason the caller can act on);
    a provider whose flag was never set counts as active. Nobody left is
    ``no_provider_available``. Each refusal stores nothing."""
    if command.seeker_id in command.provider_ids:
        message = "seeker_id must not be among provider_ids"
        raise ValidationFailed(message, details=[{"loc": ["body", "provider_ids"], "msg": message}])
    if world.live_session_of("seeker", command.seeker_id) is not None:
        raise SeekerBusy()
    offered_to: list[str] = []
    skipped: list[SkippedProvider] = []
    for provider_id in command.provider_ids:
        if world.live_session_of("provider", provider_id) is not None:
            skipped.append(SkippedProvider(provider_id=provider_id, reason="busy"))
        elif world.flag("provider_active", provider_id) is False:
            skipped.append(SkippedProvider(provider_id=provider_id, reason="inactive"))
        else:
            offered_to.append(provider_id)
    if not offered_to:
        raise NoProviderAvailable()
    lat, lng = command.seeker_location or (None, None)
    order = OrderRow(
        id=command.work_id,
        seeker_id=command.seeker_id,
        status=PENDING,
        details=command.details,
        seeker_latitude=lat,
        seeker_longitude=lng,
        offer_expires_at=now + world.policy.offer_ttl,
        created_at=now,
        updated_at=now,
    )
    offers = [
        OfferRow(
            work_order_id=order.id,
            provider_id=provider_id,
            status=OFFERED,
            created_at=now,
            updated_at=now,
        )
        for provider_id in offered_to
    ]
    request = out.WorkRequest.of(pending_work(order))
    view = order_view(order, offers, None)
    return Decision(
        out=(Notice(tuple(("provider", p) for p in offered_to), request),),
        writes=(PutOrder(order, new=True), *(PutOffer(offer, new=True) for offer in offers)),
        reply=Result(WorkOrderCreated(**dict(view), offered_to=offered_to, skipped=skipped)),
    )


def decide_accept(world: World, command: AcceptWork, now: datetime) -> Decision:
    """First accept wins: the order is accepted, a ``waiting`` session created (seq 1 is
    ``work_accepted``), the other offers withdrawn and both users made unavailable.

    ``work_not_found`` when the order was never offered to this provider;
    ``work_unavailable`` when it is no longer pending, its deadline passed, or this
    provider declined it; ``provider_busy`` / ``seeker_busy`` when either already has a
    live session. The order stays pending for the other providers.
    """
    order, offer = _open_offer(world, command.work_id, command.provider_id, now)
    if world.live_session_of("provider", command.provider_id) is not None:
        raise ProviderBusy()
    if world.live_session_of("seeker", order.seeker_id) is not None:
        raise SeekerBusy()
    session = SessionRow(
        pk=None,
        session_id=command.session_id,
        work_order_id=order.id,
        seeker_id=order.seeker_id,
        provider_id=command.provider_id,
        connection_state=SessionState.WAITING.value,
        last_seq=0,
        created_at=now,
        updated_at=now,
    )
    data = {"work_id": order.id, "connection_state": SessionState.WAITING.value}
    session, events = logged(session, now, [("work_accepted", data)])
    withdrawn = [
        evolve(other, status=OfferStatus.WITHDRAWN.value, updated_at=now)
        for other in world.offers_of(order.id)
        if other.status == OFFERED and other.provider_id != command.provider_id
    ]
    gone = out.WorkUnavailable(type="work_unavailable", work_id=order.id)
    return Decision(
        out=(
            *events,
            *(Notice((("provider", o.provider_id),), gone) for o in withdrawn),
        ),
        writes=(
            PutOrder(_moved(order, WorkOrderStatus.ACCEPTED, now)),
            PutOffer(_answered(offer, OfferStatus.ACCEPTED, now)),
            PutSession(session, new=True),
            *(PutOffer(o) for o in withdrawn),
            SetFlag("provider_active", command.provider_id, False),
            SetFlag("seeker_searching", order.seeker_id, False),
        ),
        reply=ANSWERED_BY_EVENT,
        observations=(OfferOutcome("accepted"),),
    )


def decide_decline(world: World, command: DeclineWork, now: datetime) -> Decision:
    """Decline this provider's offer; the last open offer declined rejects the order.

    The provider's every device hears ``work_declined`` (the asking one as its answer), the
    seeker ``work_rejected`` when nobody is left."""
    order, offer = _open_offer(world, command.work_id, command.provider_id, now)
    declined = out.WorkDeclined(type="work_declined", work_id=order.id)
    notices = [Notice((("provider", command.provider_id),), declined, answers_requester=True)]
    writes: list[Write] = [PutOffer(_answered(offer, OfferStatus.DECLINED, now))]
    outcomes = [OfferOutcome("declined")]
    still_open = [
        o
        for o in world.offers_of(order.id)
        if o.status == OFFERED and o.provider_id != offer.provider_id
    ]
    if not still_open:
        writes.append(PutOrder(_moved(order, WorkOrderStatus.REJECTED, now)))
        rejected = out.WorkRejected(type="work_rejected", work_id=order.id)
        notices.append(Notice((("seeker", order.seeker_id),), rejected))
        outcomes.append(OfferOutcome("rejected"))
    return Decision(
        out=tuple(notices),
        writes=tuple(writes),
        reply=AnswerFrame(declined),
        observations=tuple(outcomes),
    )


def decide_withdraw(world: World, command: WithdrawWork, now: datetime) -> Decision:
    """The seeker takes back a pending order (*1.1*): it becomes ``withdrawn`` and its open
    offers ``withdrawn`` too, as when another provider took it. Every socket of the seeker
    hears ``work_withdrawn`` (the asking one as its answer), every provider still offered
    ``work_unavailable``.

    ``work_not_found`` for no such order, or another seeker's (the two are not told
    apart); ``work_unavailable`` once it is not pending, its deadline passed included, as
    for an accept: the expiry job is about to tell the seeker ``work_expired``. The order
    is locked like every command about it, so a withdrawal and an accept racing are
    decided one after the other, and the second finds the order settled."""
    order = world.order(command.work_id)
    if order is None or command.seeker_id not in (None, order.seeker_id):
        raise WorkNotFound()
    if order.status != PENDING or order.offer_expires_at <= now:
        raise WorkUnavailable()
    still_open = [
        evolve(offer, status=OfferStatus.WITHDRAWN.value, updated_at=now)
        for offer in world.offers_of(order.id)
        if offer.status == OFFERED
    ]
    withdrawn = out.WorkWithdrawn(type="work_withdrawn", work_id=order.id)
    gone = out.WorkUnavailable(type="work_unavailable", work_id=order.id)
    return Decision(
        out=(
            Notice((("seeker", order.seeker_id),), withdrawn, answers_requester=True),
            *(Notice((("provider", o.provider_id),), gone) for o in still_open),
        ),
        writes=(
            PutOrder(_moved(order, WorkOrderStatus.WITHDRAWN, now)),
            *(PutOffer(o) for o in still_open),
        ),
        reply=AnswerFrame(withdrawn),
        observations=(OfferOutcome("withdrawn"),),
    )


def decide_expire(world: World, command: ExpireOffers, now: datetime) -> Decision:
    """Expire every pending order past its deadline and its open offers; tell the seekers
    (``work_expired``) and the providers still offered (``work_unavailable``)."""
    del command
    notices: list[Notice] = []
    writes: list[Write] = []
    for work_id in world.due_orders:
        order = world.order(work_id)
        if order is None or order.status != PENDING:  # settled earlier in this batch
            continue
        writes.append(PutOrder(_moved(order, WorkOrderStatus.EXPIRED, now)))
        expired = out.WorkExpired(type="work_expired", work_id=work_id)
        notices.append(Notice((("seeker", order.seeker_id),), expired))
        gone = out.WorkUnavailable(type="work_unavailable", work_id=work_id)
        for offer in world.offers_of(work_id):
            if offer.status == OFFERED:
                writes.append(
                    PutOffer(evolve(offer, status=OfferStatus.EXPIRED.value, updated_at=now))
                )
                notices.append(Notice((("provider", offer.provider_id),), gone))
    count = sum(isinstance(w, PutOrder) for w in writes)
    return Decision(
        out=tuple(notices),
        writes=tuple(writes),
        observations=(OfferOutcome("expired", count),) if count else (),
    )


def _open_offer(
    world: World, work_id: int, provider_id: str, now: datetime
) -> tuple[OrderRow, OfferRow]:
    """The pending order and this provider's open offer of it, or the error that says why
    not. An order that exists but was not offered to this provider is not told apart
    from none."""
    offer = world.offer(work_id, provider_id)
    order = world.order(work_id)
    # An order offered to its own seeker (stored before creation refused that) is as if
    # never offered: accepting it would be a session with one participant.
    if offer is None or order is None or order.seeker_id == provider_id:
        raise WorkNotFound()
    # A lapsed deadline counts as expired even before the expiry job has marked it so.
    if order.status != PENDING or order.offer_expires_at <= now or offer.status != OFFERED:
        raise WorkUnavailable()
    return order, offer


def _moved(order: OrderRow, status: WorkOrderStatus, now: datetime) -> OrderRow:
    return evolve(order, status=status.value, updated_at=now)


def _answered(offer: OfferRow, status: OfferStatus, now: datetime) -> OfferRow:
    return evolve(offer, status=status.value, responded_at=now, updated_at=now)


# --- what the offers look like from outside -------------------------------------------------


def location_of(order: Any) -> Location | None:
    """The seeker's location of an order (a row or a model: the same attributes)."""
    if order.seeker_latitude is None or order.seeker_longitude is None:
        return None
    return Location(lat=order.seeker_latitude, lng=order.seeker_longitude)


def pending_work(order: Any) -> out.PendingWork:
    """One entry of ``connected.pending_work``: a ``work_request`` without its type.
    ``expires_at`` is our addition to the contract's fields, for a provider's countdown."""
    location = location_of(order)
    return out.PendingWork(
        work_id=order.id,
        details=order.details,
        seeker_location=None if location is None else {"lat": location.lat, "lng": location.lng},
        created_at=order.created_at,
        expires_at=order.offer_expires_at,
    )


def open_order(order: Any) -> out.OpenOrder:
    """One entry of ``connected.open_orders`` (*1.1*), from a row or a model."""
    return out.OpenOrder(
        work_id=order.id,
        details=order.details,
        created_at=order.created_at,
        expires_at=order.offer_expires_at,
    )


def order_view(order: Any, offers: list[Any], session_id: Any) -> WorkOrderView:
    """The order as the internal API shows it (a row or a model, and its offers)."""
    return WorkOrderView(
        work_id=order.id,
        seeker_id=order.seeker_id,
        status=order.status,
        details=order.details,
        seeker_location=location_of(order),
        created_at=order.created_at,
        expires_at=order.offer_expires_at,
        offers=[
            OfferView(provider_id=o.provider_id, status=o.status, responded_at=o.responded_at)
            for o in offers
        ],
        session_id=session_id,
    )
