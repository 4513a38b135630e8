"""The webhook outbox's rows outside the write pipeline: the dispatcher's claims and
outcomes, and the internal API's listing and manual retry.

The pipeline writes the rows with their events; everything here only moves a row along
(pending -> delivered | skipped | dead, dead -> pending; pending waits for a presence
re-check) and never creates one.

Claiming is a short transaction of its own: ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL (workers never claim the same row and never wait for each other), a plain
select under SQLite's single writer. A claim counts the attempt and pushes
``next_attempt_at`` to the end of a lease; the send happens outside any transaction, and
its outcome is written only if nobody claimed the row again meanwhile (``attempts``
unchanged): a worker killed mid-delivery leaves the lease to run out, and another sends the
row again, same id.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import CursorResult, Table, and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from worksession.eventlog.outbox import dumps
from worksession.kit.clock import isoformat_z
from worksession.kit.sqltypes import UTCDateTime
from worksession.models import WebhookDelivery as W
from worksession.models.webhook_delivery import OPEN_CHAT_SQL, PENDING_SQL
from worksession.webhooks.outbox import RETRY_FOR
from worksession.webhooks.schemas import DeliveryStatus, DeliveryView

_BODY_COLUMNS: Final = (
    W.id,
    W.type,
    W.user_id,
    W.user_type,
    W.work_id,
    W.session_id,
    W.seq,
    W.occurred_at,
    W.attempts,
    W.give_up_at,
    W.coalesce_key,
    W.online_at,
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row claimed for one attempt (``attempts`` counts it)."""

    id: uuid.UUID
    type: str
    user_id: str
    user_type: str
    work_id: int | None
    session_id: uuid.UUID | None
    seq: int | None
    occurred_at: datetime
    attempts: int
    give_up_at: datetime
    coalesce_key: str | None = None
    online_at: datetime | None = None
    """Set if the recipient was online when it fell due before: this is the re-check."""

    def body(self) -> bytes:
        """The JSON body: the same bytes on every attempt."""
        return dumps(
            {
                "id": str(self.id),
                "type": self.type,
                "user_id": self.user_id,
                "user_type": self.user_type,
                "work_id": self.work_id,
                "session_id": None if self.session_id is None else str(self.session_id),
                "seq": self.seq,
                "occurred_at": isoformat_z(self.occurred_at),
            }
        ).encode()


async def claim(
    db: AsyncSession,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    untried_first: bool = False,
) -> list[Claimed]:
    """Up to ``limit`` due rows, oldest due first, each leased until ``lease_until``.
    ``untried_first`` (the breaker's probe): a row never attempted, if one is due."""
    if untried_first:
        untried = await _claim(db, now, lease_until, limit, W.attempts == 0)
        if untried:
            return untried
    return await _claim(db, now, lease_until, limit)


async def _claim(
    db: AsyncSession, now: datetime, lease_until: datetime, limit: int, *only: Any
) -> list[Claimed]:
    # Both forms walk the due index in order and stop at ``limit``: an ORDER BY attempts
    # would sort the whole backlog, which a long outage makes millions of rows.
    due = (
        select(W.id)
        # The partial index's own predicate, as SQL text: a bound 'pending' would not let
        # PostgreSQL use that index once it plans the prepared statement generically, and
        # the table holds a week of delivered rows.
        .where(PENDING_SQL, W.next_attempt_at <= now, *only)
        .order_by(W.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = await db.execute(
        update(W)
        .where(W.id.in_(due.scalar_subquery()))
        .values(
            attempts=W.attempts + 1,
            next_attempt_at=lease_until,
            first_sent_at=func.coalesce(W.first_sent_at, now),
            updated_at=now,
        )
        .returning(*_BODY_COLUMNS)
        .execution_options(synchronize_session=False)
    )
    claimed = [Claimed(**row._asdict()) for row in rows.all()]
    claimed.sort(key=lambda c: c.occurred_at)
    return claimed


GAVE_UP = "not sent before its give-up time"


async def give_up_overdue(db: AsyncSession, now: datetime, oldest: int = 5000) -> int:
    """Mark dead the rows past their give-up time among the ``oldest`` due, without
    sending them (while the breaker holds the queue, nothing else would: a
    ``work_request`` whose offer expired meanwhile is noise, and a row 24 hours old must be
    dead, not swept as abandoned). Leased rows are left to their attempt. Returns how many.

    Only the oldest due: the rows that expire first are mostly the oldest, a few thousand
    a pass clears a backlog in turn, and a scan of every due row would read the whole
    backlog every pass. A row that gives up behind them is still never sent: the
    dispatcher checks the give-up time of each row it claims."""
    oldest_due = (
        select(W.id, W.give_up_at)
        .where(PENDING_SQL, W.next_attempt_at <= now)
        .order_by(W.next_attempt_at)
        .limit(oldest)
        .subquery()
    )
    overdue = (
        select(W.id)
        .where(
            W.id.in_(select(oldest_due.c.id).where(oldest_due.c.give_up_at <= now)),
            PENDING_SQL,
            W.next_attempt_at <= now,
        )
        .with_for_update(skip_locked=True)
    )
    result = await db.execute(
        update(W)
        .where(W.id.in_(overdue.scalar_subquery()))
        .values(
            status="dead",
            last_error=func.coalesce(W.last_error, GAVE_UP),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], result).rowcount)


def _ours(row: Claimed) -> Any:
    # Only the attempt we claimed: a worker that took the row over after our lease ran out
    # has counted another attempt, and its outcome is the one that stands.
    return and_(W.id == row.id, W.status == "pending", W.attempts == row.attempts)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended: delivered (no ``error``), to be retried at ``retry_at``, or
    dead (an ``error`` and no ``retry_at``)."""

    row: Claimed
    at: datetime
    error: str | None = None
    retry_at: datetime | None = None

    @property
    def status(self) -> str:
        if self.error is None:
            return "delivered"
        return "pending" if self.retry_at is not None else "dead"


_TABLE: Final = cast(Table, W.__table__)
# Built once, run as one executemany for every outcome of a moment: a receiver that hangs
# times out 32 sends in the same millisecond, and 32 transactions of one UPDATE each (each
# with its pool checkout) came in a burst that live traffic on the worker queued behind.
# The WHERE is ``_ours``: an attempt taken over by another worker is not written.
_RECORD_OUTCOME: Final = (
    update(_TABLE)
    .where(
        _TABLE.c.id == bindparam("row_id"),
        _TABLE.c.status == "pending",
        _TABLE.c.attempts == bindparam("row_attempts"),
    )
    .values(
        status=bindparam("new_status"),
        delivered_at=bindparam("delivered_at_"),
        last_error=bindparam("error"),
        next_attempt_at=func.coalesce(
            bindparam("retry_at", type_=UTCDateTime()), _TABLE.c.next_attempt_at
        ),
        updated_at=bindparam("at"),
    )
)


async def record_outcomes(db: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    """Write how these attempts ended, in one statement whatever their number."""
    if not outcomes:
        return
    await db.execute(
        _RECORD_OUTCOME,
        [
            {
                "row_id": o.row.id,
                "row_attempts": o.row.attempts,
                "new_status": o.status,
                "delivered_at_": o.at if o.error is None else None,
                "error": None if o.error is None else o.error[:200],
                "retry_at": o.retry_at,
                "at": o.at,
            }
            for o in outcomes
        ],
    )


async def recheck_later(
    db: AsyncSession, rows: Sequence[Claimed], now: datetime, recheck_at: datetime
) -> None:
    """The users had a socket open when these fell due, for the first time: perhaps a dead
    one (a phone locked, a worker crashed), so wait until ``recheck_at`` and look again
    rather than skip them now. The claim is undone (nothing went out): a chat webhook that
    had never been sent is open again, and later messages merge into it, so a recipient
    who goes offline meanwhile gets one webhook with the latest seq at the re-check."""
    for row in rows:
        values: dict[str, Any] = {
            "attempts": row.attempts - 1,
            "next_attempt_at": recheck_at,
            "online_at": now,
            "updated_at": now,
        }
        if row.attempts > 1:
            await _update(db, _ours(row), values)  # it went out before: not open again
            continue
        values["first_sent_at"] = None
        if row.coalesce_key is None:
            await _update(db, _ours(row), values)
            continue
        # Open again, unless a later message made another open row for this recipient and
        # session since the claim (the unique index allows one): that one carries the later
        # seq and gets the same check, and this one is superseded.
        other = aliased(W)
        newer_open = (
            select(other.id)
            .where(
                other.coalesce_key == row.coalesce_key,
                other.status == "pending",
                other.first_sent_at.is_(None),
                other.id != row.id,
            )
            .exists()
        )
        if not await _update(db, and_(_ours(row), ~newer_open), values):
            await skipped(db, [row], now)
            # The newer row takes this one's place in the re-check. A window it may have
            # been given from this claim's first_sent_at is void: nothing went out.
            await _update(
                db,
                and_(W.coalesce_key == row.coalesce_key, OPEN_CHAT_SQL, W.id != row.id),
                {"next_attempt_at": recheck_at, "online_at": now, "updated_at": now},
            )


async def _update(db: AsyncSession, where: Any, values: dict[str, Any]) -> bool:
    result = await db.execute(
        update(W).where(where).values(values).execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], result).rowcount)


async def skipped(db: AsyncSession, rows: Sequence[Claimed], now: datetime) -> None:
    """The users had a socket open when these were due, and again at the re-check: the
    socket told them. A first attempt skipped does not open a chat coalescing window
    (nothing went out)."""
    for row in rows:
        values: dict[str, Any] = {"status": "skipped", "updated_at": now}
        if row.attempts == 1:
            values["first_sent_at"] = None
        await db.execute(
            update(W).where(_ours(row)).values(values).execution_options(synchronize_session=False)
        )


async def queue_stats(db: AsyncSession) -> tuple[int, datetime | None]:
    """How many rows are pending, and when the oldest of them was written."""
    count, oldest = (
        await db.execute(select(func.count(), func.min(W.created_at)).where(PENDING_SQL))
    ).one()
    return int(count), oldest


async def listing(db: AsyncSession, status: DeliveryStatus, limit: int) -> list[DeliveryView]:
    """Pending rows by when they are due, the others newest first."""
    if status == "pending":
        query = select(W).where(PENDING_SQL).order_by(W.next_attempt_at, W.id)
    else:
        query = select(W).where(W.status == status).order_by(W.updated_at.desc(), W.id)
    rows = await db.execute(query.limit(limit))
    return [_view(row) for row in rows.scalars()]


async def retry_dead(
    db: AsyncSession, delivery_id: uuid.UUID, now: datetime
) -> tuple[DeliveryView | None, bool]:
    """Send a dead row again now, with another 24 hours of retries, its backoff from 1 s
    again (``attempts`` back to 0). Returns the row (None if there is no such row) and
    whether it was dead and is now pending again."""
    revived = await db.execute(
        update(W)
        .where(W.id == delivery_id, W.status == "dead")
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=now,
            give_up_at=now + RETRY_FOR,
            # Never open again (later messages do not merge into it, and a newer open row
            # of the same chat cannot clash with it): one that died unsent has none yet.
            first_sent_at=func.coalesce(W.first_sent_at, now),
            updated_at=now,
        )
        .returning(W.id)
        .execution_options(synchronize_session=False)
    )
    retried = revived.first() is not None
    row = (await db.execute(select(W).where(W.id == delivery_id))).scalar_one_or_none()
    return (None if row is None else _view(row)), retried


def _view(row: W) -> DeliveryView:
    return DeliveryView.model_validate(row, from_attributes=True)
