from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Integer, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from worksession.kit.sqltypes import UTCDateTime
from worksession.models.base import Base, UserId

PENDING_SQL = text("status = 'pending'")
OPEN_CHAT_SQL = text("status = 'pending' AND first_sent_at IS NULL AND coalesce_key IS NOT NULL")
"""A chat webhook nobody has claimed yet: later messages of the same recipient and session
merge into it (their seq replaces its seq) instead of adding a webhook. Not ``attempts = 0``:
a dead row sent again by hand starts its attempts from 0 but is no longer open."""
CHAT_SQL = text("coalesce_key IS NOT NULL")


class WebhookDelivery(Base):
    """One webhook to POST, written in the same transaction as the event it reports
    (``webhooks.outbox``), sent and retried by ``webhooks.dispatcher``.

    ``id`` is the webhook's id, the receivers' key for deduplication: a retry sends the same
    body. No personal data beyond the recipient's own id: never chat text, a phone number
    or the other participant's id.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(UserId)
    user_type: Mapped[str] = mapped_column(String(16))
    work_id: Mapped[int | None] = mapped_column(Integer)
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    seq: Mapped[int | None] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    coalesce_key: Mapped[str | None] = mapped_column(String(160))
    """``user_type:user_id:session_id`` of a chat webhook, None for the others."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """When the next attempt is due; while an attempt is in flight, when its lease ends
    (a worker killed mid-delivery leaves this, and another sends it again after)."""
    first_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When the first attempt was claimed: the start of a chat webhook's coalescing window."""
    give_up_at: Mapped[datetime] = mapped_column(UTCDateTime())
    online_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When the dispatcher first found the recipient online as this row fell due: it then
    waited ``dispatcher.ONLINE_RECHECK_S`` instead of skipping it (the socket may have been
    a dead one), and skips it only if they are online again at that re-check."""
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """When the dispatcher (or an operator) last moved it: not when a later chat message
    merged into it, which changes only ``seq`` and ``occurred_at``, none of them indexed, so
    that the merge of every message into an open row is a HOT update, with no index entry
    to add."""
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'skipped', 'dead')", name="status"),
        # The dispatcher's claim: pending rows by when they are due.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=PENDING_SQL,
            sqlite_where=PENDING_SQL,
        ),
        Index(
            "ux_webhook_deliveries_open_chat",
            "coalesce_key",
            unique=True,
            postgresql_where=OPEN_CHAT_SQL,
            sqlite_where=OPEN_CHAT_SQL,
        ),
        # The coalescing window: when a recipient's chat webhook of a session last went out.
        Index(
            "ix_webhook_deliveries_chat",
            "coalesce_key",
            "first_sent_at",
            postgresql_where=CHAT_SQL,
            sqlite_where=CHAT_SQL,
        ),
        # The listing of dead rows and the retention sweep of finished ones.
        Index(None, "status", "updated_at"),
    )
