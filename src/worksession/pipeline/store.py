"""How a batch reads and writes its rows: one transaction, set-based statements.

Two implementations, one per database: :mod:`~worksession.pipeline.postgres` speaks to
asyncpg directly (one statement per kind of row, whatever the batch size, with array
parameters) and :mod:`~worksession.pipeline.sqlite` goes through SQLAlchemy Core with
``executemany``. Deciding is the same code on both; only this layer differs, and the test
suite runs every command on both.

Every method takes the keys of the whole batch and returns nothing when given none,
without a round trip. The locking reads take their row locks in primary key order, so
that two workers' batches that share rows wait for each other instead of deadlocking.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from worksession.eventlog.events import LoggedEvent
from worksession.pipeline.decision import ExpireChat, Flag, Sweep
from worksession.pipeline.rows import MessageRow, OfferRow, OrderRow, SessionRow
from worksession.pipeline.world import ClientKey, UserKey
from worksession.webhooks.outbox import WebhookRow


class Conflict(Exception):
    """A write broke a uniqueness rule that the batch's locks could not foresee: a
    concurrent transaction got there first. ``constraint`` names the index or constraint
    (PostgreSQL's name for it on both databases) when it is known."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(constraint or "a uniqueness rule")
        self.constraint = constraint


class Contention(Exception):
    """The database gave up on the transaction because of a concurrent one (a deadlock or
    a serialization failure); running it again is expected to succeed."""


@dataclass(frozen=True, slots=True)
class Swept:
    messages: int
    events: int
    sessions: int = 0
    """Ended sessions whose mediums and positions were erased."""
    orders: int = 0
    """Ended orders whose details and location were erased."""
    webhooks: int = 0
    """Finished webhook deliveries past their retention (and pending ones nobody sends)."""


class Transaction(Protocol):
    # --- loading ------------------------------------------------------------------------

    async def lock_orders(
        self, work_ids: Sequence[int], *, due_at: datetime | None
    ) -> tuple[list[OrderRow], list[int]]:
        """The orders ``work_ids``, and with ``due_at`` every pending order whose deadline
        is at or before it, locked. Returns the rows and the ids of the due ones."""
        ...

    async def lock_sessions(
        self, session_ids: Sequence[uuid.UUID], message_ids: Sequence[uuid.UUID]
    ) -> list[SessionRow]:
        """The sessions ``session_ids`` and those of the messages ``message_ids``, locked."""
        ...

    async def messages(self, message_ids: Sequence[uuid.UUID]) -> list[MessageRow]: ...

    async def sent_messages(self, keys: Sequence[ClientKey]) -> list[MessageRow]:
        """The messages already stored under these (session, sender, client_msg_id)."""
        ...

    async def offers(self, work_ids: Sequence[int]) -> list[OfferRow]:
        """Every offer of these orders, in the order they were made."""
        ...

    async def live_sessions(self, users: Sequence[UserKey]) -> list[tuple[str, str, uuid.UUID]]:
        """(role, user id, session id) of the live session of each of ``users`` that has one."""
        ...

    async def flags(self, user_ids: Sequence[str]) -> dict[tuple[Flag, str], bool]:
        """Both availability flags of each user, where set."""
        ...

    async def reserve_work_ids(self, count: int) -> list[int]:
        """``count`` fresh work order ids."""
        ...

    # --- writing ------------------------------------------------------------------------

    async def insert_orders(self, rows: Sequence[OrderRow]) -> None: ...

    async def update_orders(self, rows: Sequence[OrderRow]) -> None: ...

    async def insert_offers(self, rows: Sequence[OfferRow]) -> None: ...

    async def update_offers(self, rows: Sequence[OfferRow]) -> None: ...

    async def finish_orders(self, statuses: dict[int, str], now: datetime) -> list[int]:
        """Move each ``accepted`` order to its status; returns the ids that were not
        ``accepted``."""
        ...

    async def insert_sessions(self, rows: Sequence[SessionRow]) -> dict[uuid.UUID, int]:
        """Insert the sessions; returns their primary keys. A unique index broken by a
        concurrent transaction raises :class:`Conflict`."""
        ...

    async def update_sessions(self, columns: Sequence[str], rows: Sequence[SessionRow]) -> None:
        """Store ``columns`` of each (locked) session."""
        ...

    async def insert_messages(self, rows: Sequence[MessageRow], pks: dict[uuid.UUID, int]) -> None:
        """Insert the messages (``pks``: session primary keys); a ``client_msg_id`` taken
        meanwhile raises :class:`Conflict`."""
        ...

    async def update_messages(self, rows: Sequence[MessageRow]) -> None:
        """Store each message's delivery status and its times."""
        ...

    async def expire_chats(
        self, chats: Sequence[ExpireChat], pks: dict[uuid.UUID, int]
    ) -> None: ...

    async def insert_events(
        self, events: Sequence[LoggedEvent], pks: dict[uuid.UUID, int]
    ) -> None: ...

    async def set_flags(self, flags: dict[tuple[Flag, str], bool], now: datetime) -> None: ...

    async def last_chat_webhooks(self, keys: Sequence[str]) -> dict[str, datetime]:
        """When the latest chat webhook of each of these coalescing keys went out, where
        one did."""
        ...

    async def insert_webhooks(self, rows: Sequence[WebhookRow], now: datetime) -> set[uuid.UUID]:
        """Add the rows to the outbox; a chat row whose recipient and session already have
        one nobody tried to send yet merges into it instead (its seq and time replace the
        waiting row's, its due time stays). At most one row per ``coalesce_key`` (the
        batch's ``coalesced``). Returns the ids of the rows added, not merged."""
        ...

    async def delay_webhooks(self, rows: Sequence[WebhookRow]) -> None:
        """Set the due time (``next_attempt_at``) of these rows, added by this batch."""
        ...

    async def sweep(self, sweep: Sweep) -> Swept:
        """Delete the messages expired at ``sweep.now``; for each session that ended at or
        before ``sweep.ended_before`` and is not erased yet, delete its events and messages
        and erase its personal data; erase that of each order ended by then; delete the
        finished webhook deliveries past their retention. Each set is one statement served
        by a partial index of what is still to erase."""
        ...


class Store(Protocol):
    dialect: str

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One transaction: committed on a clean exit, rolled back on any exception."""
        ...

    async def dispose(self) -> None: ...
