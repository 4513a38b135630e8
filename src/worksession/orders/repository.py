"""SQL for work orders, their offers, and the session an accept creates."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from worksession.models import WorkOffer, WorkOrder, WorkSession
from worksession.sessions.states import OfferStatus, SessionState, WorkOrderStatus

# Far below both drivers' limit on bind parameters (32767 for asyncpg, 32766 for SQLite).
ID_BATCH: Final = 1000

# PostgreSQL names the violated index or constraint; SQLite names the columns instead.
_UNIQUE_SIGNATURES: Final = {
    "ux_work_sessions_live_provider": "work_sessions.provider_id",
    "ux_work_sessions_live_seeker": "work_sessions.seeker_id",
    "uq_work_sessions_work_order_id": "work_sessions.work_order_id",
}


class ExpiredOffer(NamedTuple):
    work_order_id: int
    provider_id: str


class ExpiredOrder(NamedTuple):
    id: int
    seeker_id: str


async def insert_order(
    db: AsyncSession,
    *,
    seeker_id: str,
    details: dict[str, Any],
    latitude: float | None,
    longitude: float | None,
    offer_expires_at: datetime,
    provider_ids: Sequence[str],
    now: datetime,
) -> tuple[WorkOrder, list[WorkOffer]]:
    order = WorkOrder(
        seeker_id=seeker_id,
        status=WorkOrderStatus.PENDING.value,
        details=details,
        seeker_latitude=latitude,
        seeker_longitude=longitude,
        offer_expires_at=offer_expires_at,
        created_at=now,
        updated_at=now,
    )
    db.add(order)
    await db.flush()
    offers = [
        WorkOffer(
            work_order_id=order.id,
            provider_id=provider_id,
            status=OfferStatus.OFFERED.value,
            created_at=now,
            updated_at=now,
        )
        for provider_id in provider_ids
    ]
    db.add_all(offers)
    await db.flush()
    return order, offers


async def get_order(db: AsyncSession, work_id: int) -> WorkOrder | None:
    return await db.get(WorkOrder, work_id)


async def offers_of(db: AsyncSession, work_id: int) -> list[WorkOffer]:
    query = select(WorkOffer).where(WorkOffer.work_order_id == work_id).order_by(WorkOffer.id)
    return list((await db.execute(query)).scalars())


async def session_id_of_order(db: AsyncSession, work_id: int) -> uuid.UUID | None:
    query = select(WorkSession.session_id).where(WorkSession.work_order_id == work_id)
    return (await db.execute(query)).scalar_one_or_none()


async def open_offers_for(db: AsyncSession, provider_id: str, *, now: datetime) -> list[WorkOrder]:
    """The pending, unexpired orders this provider still has an open offer for, oldest first."""
    query = (
        select(WorkOrder)
        .join(WorkOffer, WorkOffer.work_order_id == WorkOrder.id)
        .where(
            WorkOffer.provider_id == provider_id,
            WorkOffer.status == OfferStatus.OFFERED.value,
            WorkOrder.status == WorkOrderStatus.PENDING.value,
            WorkOrder.offer_expires_at > now,
        )
        .order_by(WorkOrder.created_at, WorkOrder.id)
    )
    return list((await db.execute(query)).scalars())


async def offer_exists(db: AsyncSession, *, work_id: int, provider_id: str) -> bool:
    query = select(
        exists().where(WorkOffer.work_order_id == work_id, WorkOffer.provider_id == provider_id)
    )
    return bool((await db.execute(query)).scalar_one())


async def claim_pending_order(db: AsyncSession, *, work_id: int, now: datetime) -> str | None:
    """``pending -> accepted`` if still open; the seeker's id, or None when someone was first.

    The UPDATE takes the order's row lock, so concurrent accepts of one order queue here and
    every one after the winner finds the status changed.
    """
    result = await db.execute(
        update(WorkOrder)
        .where(
            WorkOrder.id == work_id,
            WorkOrder.status == WorkOrderStatus.PENDING.value,
            WorkOrder.offer_expires_at > now,
        )
        .values(status=WorkOrderStatus.ACCEPTED.value, updated_at=now)
        .returning(WorkOrder.seeker_id)
    )
    return result.scalar_one_or_none()


async def lock_order(db: AsyncSession, work_id: int) -> WorkOrder | None:
    """The order, locked for this transaction (a no-op on SQLite, which serialises anyway)."""
    query = (
        select(WorkOrder)
        .where(WorkOrder.id == work_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await db.execute(query)).scalar_one_or_none()


async def answer_offer(
    db: AsyncSession, *, work_id: int, provider_id: str, status: OfferStatus, now: datetime
) -> bool:
    """Move this provider's offer from ``offered`` to ``status``; False if it had moved on."""
    result = await db.execute(
        update(WorkOffer)
        .where(
            WorkOffer.work_order_id == work_id,
            WorkOffer.provider_id == provider_id,
            WorkOffer.status == OfferStatus.OFFERED.value,
        )
        .values(status=status.value, responded_at=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def withdraw_open_offers(db: AsyncSession, *, work_id: int, now: datetime) -> list[str]:
    """Withdraw every offer of the order still open; returns those providers' ids."""
    result = await db.execute(
        update(WorkOffer)
        .where(
            WorkOffer.work_order_id == work_id,
            WorkOffer.status == OfferStatus.OFFERED.value,
        )
        .values(status=OfferStatus.WITHDRAWN.value, updated_at=now)
        .returning(WorkOffer.provider_id)
    )
    return list(result.scalars())


async def has_open_offers(db: AsyncSession, work_id: int) -> bool:
    query = select(
        exists().where(
            WorkOffer.work_order_id == work_id,
            WorkOffer.status == OfferStatus.OFFERED.value,
        )
    )
    return bool((await db.execute(query)).scalar_one())


async def reject_pending_order(db: AsyncSession, *, work_id: int, now: datetime) -> bool:
    result = await db.execute(
        update(WorkOrder)
        .where(WorkOrder.id == work_id, WorkOrder.status == WorkOrderStatus.PENDING.value)
        .values(status=WorkOrderStatus.REJECTED.value, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def insert_session(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    work_id: int,
    seeker_id: str,
    provider_id: str,
    now: datetime,
) -> int:
    """Insert the ``waiting`` session; returns its primary key.

    Runs in a SAVEPOINT so that a unique violation (see :func:`violated_unique`) leaves the
    transaction usable for the caller to decide; it still raises ``IntegrityError``.
    """
    async with db.begin_nested():
        result = await db.execute(
            insert(WorkSession)
            .values(
                session_id=session_id,
                work_order_id=work_id,
                seeker_id=seeker_id,
                provider_id=provider_id,
                connection_state=SessionState.WAITING.value,
                last_seq=0,
                created_at=now,
                updated_at=now,
            )
            .returning(WorkSession.id)
        )
        return int(result.scalar_one())


def violated_unique(error: IntegrityError) -> str | None:
    """Which work_sessions uniqueness rule ``error`` broke, by its PostgreSQL name."""
    text = str(error.orig)
    for name, sqlite_columns in _UNIQUE_SIGNATURES.items():
        if name in text or sqlite_columns in text:
            return name
    return None


async def expire_due_orders(db: AsyncSession, *, now: datetime) -> list[ExpiredOrder]:
    result = await db.execute(
        update(WorkOrder)
        .where(
            WorkOrder.status == WorkOrderStatus.PENDING.value,
            WorkOrder.offer_expires_at <= now,
        )
        .values(status=WorkOrderStatus.EXPIRED.value, updated_at=now)
        .returning(WorkOrder.id, WorkOrder.seeker_id)
    )
    return [ExpiredOrder(row.id, row.seeker_id) for row in result]


async def expire_open_offers(
    db: AsyncSession, *, work_ids: Sequence[int], now: datetime
) -> list[ExpiredOffer]:
    expired: list[ExpiredOffer] = []
    for start in range(0, len(work_ids), ID_BATCH):
        result = await db.execute(
            update(WorkOffer)
            .where(
                WorkOffer.work_order_id.in_(work_ids[start : start + ID_BATCH]),
                WorkOffer.status == OfferStatus.OFFERED.value,
            )
            .values(status=OfferStatus.EXPIRED.value, updated_at=now)
            .returning(WorkOffer.work_order_id, WorkOffer.provider_id)
        )
        expired.extend(ExpiredOffer(row.work_order_id, row.provider_id) for row in result)
    return expired
