"""Which webhooks a decision makes: one pure function over what the decision already holds.

The write pipeline calls :func:`webhooks_for` for every decision of a batch (when
``WORKSESSION_WEBHOOK_URL`` is set) and writes the rows in the batch's own transaction, with
its events: a webhook exists if and only if its event was committed. No deciding function
knows about webhooks; the events it logs and the notices it publishes are the source.

Whether the recipient has a socket open is not known here, and would be stale by the time
the row is sent anyway: the dispatcher checks it at send time.

A body names the recipient and the event, never its content: no chat text, no phone
number, no other participant's id. The app fetches the content when it wakes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from worksession.eventlog.events import LoggedEvent
from worksession.pipeline import commands as c
from worksession.pipeline.decision import Decision, Notice
from worksession.pipeline.rows import SessionRow

WEBHOOK_TYPES = (
    "work_request",
    "work_accepted",
    "work_rejected",
    "work_expired",
    "chat_message",
    "provider_nearby",
    "provider_arrived",
    "connection_cancelled",
    "session_completed",
)
NOTICE_TYPES = frozenset({"work_request", "work_rejected", "work_expired"})
"""Frames outside the session log that make a webhook (no session yet: no seq)."""
TO_SEEKER = frozenset({"work_accepted", "provider_nearby", "provider_arrived"})
RETRY_FOR = timedelta(hours=24)
"""How long a failing webhook is retried before it is kept as dead (a ``work_request``:
until its offer expires, if that is sooner)."""
DELIVERED_RETENTION = timedelta(days=7)
"""Delivered (and skipped: the user was online) rows are swept after this."""
DEAD_RETENTION = timedelta(days=30)
"""Dead rows stay for an operator to retry this long, then are swept too."""
ABANDONED_RETENTION = timedelta(days=7)
"""Pending rows this long past their ``give_up_at`` are swept: nobody is sending them (the
URL was unset, so no dispatcher runs). A running dispatcher finishes a row within its last
backoff (10 minutes) of ``give_up_at``."""


@dataclass(frozen=True, slots=True)
class WebhookRow:
    """A webhook to write to the outbox: the body's fields, and when it is first due."""

    id: uuid.UUID
    type: str
    user_id: str
    user_type: str
    work_id: int | None
    session_id: uuid.UUID | None
    seq: int | None
    occurred_at: datetime
    coalesce_key: str | None
    """Chat only: later messages for the same recipient and session merge into this row
    while nobody has tried to send it yet."""
    next_attempt_at: datetime
    give_up_at: datetime


def chat_key(user_type: str, user_id: str, session_id: uuid.UUID) -> str:
    return f"{user_type}:{session_id}:{user_id}"


def webhooks_for(
    command: c.Command,
    decision: Decision,
    sessions: Callable[[uuid.UUID], SessionRow],
    now: datetime,
    new_id: Callable[[], uuid.UUID],
) -> list[WebhookRow]:
    """The webhooks of one committed decision. ``sessions`` finds the session of a logged
    event (the batch's world holds it); ``new_id`` makes each webhook's id."""
    rows: list[WebhookRow] = []

    def add(
        kind: str,
        role: str,
        user_id: str,
        *,
        work_id: int | None,
        event: LoggedEvent | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        session_id = None if event is None else event.session_id
        rows.append(
            WebhookRow(
                id=new_id(),
                type=kind,
                user_id=user_id,
                user_type=role,
                work_id=work_id,
                session_id=session_id,
                seq=None if event is None else event.seq,
                occurred_at=now if event is None else event.created_at,
                coalesce_key=(
                    chat_key(role, user_id, session_id)
                    if kind == "chat_message" and session_id is not None
                    else None
                ),
                next_attempt_at=now,
                give_up_at=(
                    now + RETRY_FOR if expires_at is None else min(now + RETRY_FOR, expires_at)
                ),
            )
        )

    for item in decision.out:
        if isinstance(item, Notice):
            kind = getattr(item.frame, "type", None)
            if kind in NOTICE_TYPES:
                work_id = getattr(item.frame, "work_id", None)
                # An offer's push is noise once it expired: retried until then at most.
                expires_at = getattr(item.frame, "expires_at", None)
                if not isinstance(expires_at, datetime):
                    expires_at = None
                for role, user_id in item.recipients:
                    add(str(kind), role, user_id, work_id=work_id, expires_at=expires_at)
            continue
        session = sessions(item.session_id)
        for recipient in _recipients(command, item):
            add(
                item.kind,
                recipient,
                session.participant(recipient),
                work_id=session.work_order_id,
                event=item,
            )
    return rows


def _recipients(command: c.Command, event: LoggedEvent) -> Sequence[str]:
    """Who must hear of ``event``: never the participant who caused it (their app was
    open; and its socket closes right after an ending, which would make them "offline")."""
    kind = event.kind
    if kind in TO_SEEKER:
        return ("seeker",)
    if kind == "chat_message":
        return (_other(event.data["sender_type"]),)
    if kind == "connection_cancelled":
        by = event.data["cancelled_by"]
        return ("seeker", "provider") if by == "system" else (_other(by),)
    if kind == "session_completed":
        by_provider = isinstance(command, c.CompleteSession) and command.provider_id is not None
        return ("seeker",) if by_provider else ("seeker", "provider")
    return ()


def _other(role: str) -> str:
    return "provider" if role == "seeker" else "seeker"


def coalesced(rows: Iterable[WebhookRow]) -> list[WebhookRow]:
    """``rows`` with the chat webhooks of one recipient and session merged into the first
    one, carrying the latest seq (a batch may hold several messages of one chat)."""
    merged: dict[uuid.UUID | str, WebhookRow] = {}
    for row in rows:
        key = row.coalesce_key or row.id
        first = merged.get(key)
        merged[key] = (
            row if first is None else replace(first, seq=row.seq, occurred_at=row.occurred_at)
        )
    return list(merged.values())


def first_due(
    rows: Iterable[WebhookRow], last_sent: dict[str, datetime], window: timedelta
) -> list[WebhookRow]:
    """Each chat webhook due no sooner than ``window`` after the previous one of its
    recipient and session went out (``last_sent``): the leading edge goes at once, what
    follows within the window waits for its end, as one webhook with the latest seq."""
    out: list[WebhookRow] = []
    for row in rows:
        sent = last_sent.get(row.coalesce_key) if row.coalesce_key else None
        if sent is not None and sent + window > row.next_attempt_at:
            row = replace(row, next_attempt_at=sent + window)
        out.append(row)
    return out
