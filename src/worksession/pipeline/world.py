"""The state a batch decides on: the rows it loaded, as the batch's earlier commands left them.

A deciding function reads the world and never changes it. The pipeline applies each
decision's writes with :meth:`World.apply` before deciding the next command, so a retry
inside the batch finds the message its original stored, and a second receipt finds the
status the first one set. The same calls gather the changes the batch will write, which
:class:`Changes` hands to the store in one set-based statement per kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from worksession.eventlog.events import LoggedEvent
from worksession.pipeline.decision import (
    Decision,
    ExpireChat,
    FinishOrder,
    Flag,
    PutMessage,
    PutOffer,
    PutOrder,
    PutSession,
    SetFlag,
    Sweep,
    Write,
)
from worksession.pipeline.rows import (
    SESSION_MUTABLE,
    MessageRow,
    OfferRow,
    OrderRow,
    Policy,
    SessionRow,
)
from worksession.webhooks.outbox import WebhookRow

ClientKey = tuple[uuid.UUID, str, str]
"""(session id, sender id, client_msg_id): what makes a retried message the same message."""
UserKey = tuple[str, str]
"""(role, user id)."""
K = TypeVar("K")
R = TypeVar("R")


@dataclass(slots=True)
class Changes:
    """Everything a batch writes, each row in its final state, in the order rows appeared."""

    new_sessions: dict[uuid.UUID, SessionRow] = field(default_factory=dict)
    sessions: dict[uuid.UUID, SessionRow] = field(default_factory=dict)
    new_messages: dict[uuid.UUID, MessageRow] = field(default_factory=dict)
    messages: dict[uuid.UUID, MessageRow] = field(default_factory=dict)
    new_orders: dict[int, OrderRow] = field(default_factory=dict)
    orders: dict[int, OrderRow] = field(default_factory=dict)
    new_offers: dict[tuple[int, str], OfferRow] = field(default_factory=dict)
    offers: dict[tuple[int, str], OfferRow] = field(default_factory=dict)
    finished_orders: dict[int, str] = field(default_factory=dict)
    expired_chats: dict[uuid.UUID, ExpireChat] = field(default_factory=dict)
    flags: dict[tuple[Flag, str], bool] = field(default_factory=dict)
    events: list[LoggedEvent] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    webhooks: list[WebhookRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(
            (
                self.new_sessions,
                self.sessions,
                self.new_messages,
                self.messages,
                self.new_orders,
                self.orders,
                self.new_offers,
                self.offers,
                self.finished_orders,
                self.expired_chats,
                self.flags,
                self.events,
                self.sweeps,
                self.webhooks,
            )
        )


@dataclass(slots=True)
class World:
    policy: Policy
    sessions: dict[uuid.UUID, SessionRow] = field(default_factory=dict)
    messages: dict[uuid.UUID, MessageRow] = field(default_factory=dict)
    sent: dict[ClientKey, MessageRow] = field(default_factory=dict)
    orders: dict[int, OrderRow] = field(default_factory=dict)
    offers: dict[int, dict[str, OfferRow]] = field(default_factory=dict)
    """Per order, its offers by provider, in the order they were made."""
    live: dict[UserKey, uuid.UUID] = field(default_factory=dict)
    """The live session of each user the batch asked about (absent: none)."""
    flags: dict[tuple[Flag, str], bool | None] = field(default_factory=dict)
    due_orders: tuple[int, ...] = ()
    """Pending orders past their deadline, locked (asked for by ``ExpireOffers``)."""
    changes: Changes = field(default_factory=Changes)
    loaded_sessions: dict[uuid.UUID, SessionRow] = field(default_factory=dict)
    """The sessions as loaded: what each update of the batch is compared with."""

    @classmethod
    def of(
        cls,
        policy: Policy,
        *,
        sessions: Iterable[SessionRow] = (),
        messages: Iterable[MessageRow] = (),
        orders: Iterable[OrderRow] = (),
        offers: Iterable[OfferRow] = (),
        flags: dict[tuple[Flag, str], bool | None] | None = None,
        due_orders: Iterable[int] = (),
    ) -> World:
        """A world holding these rows; live sessions are indexed from ``sessions``."""
        world = cls(policy=policy, flags=dict(flags or {}), due_orders=tuple(due_orders))
        for session in sessions:
            world._put_session(session)
            world.loaded_sessions[session.session_id] = session
        for message in messages:
            world._put_message(message)
        for order in orders:
            world.orders[order.id] = order
        for offer in offers:
            world.offers.setdefault(offer.work_order_id, {})[offer.provider_id] = offer
        return world

    # --- reading (for the deciding functions) -----------------------------------------

    def session(self, session_id: uuid.UUID) -> SessionRow | None:
        return self.sessions.get(session_id)

    def message(self, message_id: uuid.UUID) -> MessageRow | None:
        return self.messages.get(message_id)

    def sent_message(self, key: ClientKey) -> MessageRow | None:
        return self.sent.get(key)

    def order(self, work_id: int) -> OrderRow | None:
        return self.orders.get(work_id)

    def offers_of(self, work_id: int) -> list[OfferRow]:
        return list(self.offers.get(work_id, {}).values())

    def offer(self, work_id: int, provider_id: str) -> OfferRow | None:
        return self.offers.get(work_id, {}).get(provider_id)

    def live_session_of(self, role: str, user_id: str) -> uuid.UUID | None:
        return self.live.get((role, user_id))

    def flag(self, flag: Flag, user_id: str) -> bool | None:
        return self.flags.get((flag, user_id))

    def session_updates(self) -> dict[tuple[str, ...], list[SessionRow]]:
        """The batch's updated sessions grouped by the columns that changed: a chat batch
        writes ``last_seq`` and ``updated_at``, not every column of every session."""
        groups: dict[tuple[str, ...], list[SessionRow]] = {}
        for session_id, row in self.changes.sessions.items():
            before = self.loaded_sessions[session_id].__dict__
            after = row.__dict__
            columns = tuple(c for c in SESSION_MUTABLE if after[c] != before[c])
            if columns:
                groups.setdefault(columns, []).append(row)
        return groups

    # --- evolving (for the pipeline) ----------------------------------------------------

    def apply(self, decision: Decision) -> None:
        for write in decision.writes:
            self._apply(write)
        self.changes.events.extend(decision.events)

    def _apply(self, write: Write) -> None:
        changes = self.changes
        match write:
            case PutSession(row, new):
                self._put_session(row)
                _record(row.session_id, row, new, changes.new_sessions, changes.sessions)
            case PutMessage(row, new):
                self._put_message(row)
                _record(row.message_id, row, new, changes.new_messages, changes.messages)
            case PutOrder(row, new):
                self.orders[row.id] = row
                _record(row.id, row, new, changes.new_orders, changes.orders)
            case PutOffer(row, new):
                self.offers.setdefault(row.work_order_id, {})[row.provider_id] = row
                key = (row.work_order_id, row.provider_id)
                _record(key, row, new, changes.new_offers, changes.offers)
            case FinishOrder(work_id, status):
                changes.finished_orders[work_id] = status
            case ExpireChat(session_id):
                changes.expired_chats[session_id] = write
            case SetFlag(flag, user_id, value):
                self.flags[(flag, user_id)] = value
                changes.flags[(flag, user_id)] = value
            case Sweep():
                changes.sweeps.append(write)

    def _put_session(self, row: SessionRow) -> None:
        previous = self.sessions.get(row.session_id)
        self.sessions[row.session_id] = row
        if previous is not None and previous.is_live and not row.is_live:
            for key in (("seeker", row.seeker_id), ("provider", row.provider_id)):
                if self.live.get(key) == row.session_id:
                    del self.live[key]
        elif row.is_live:
            self.live[("seeker", row.seeker_id)] = row.session_id
            self.live[("provider", row.provider_id)] = row.session_id

    def _put_message(self, row: MessageRow) -> None:
        self.messages[row.message_id] = row
        if row.client_msg_id is not None:
            self.sent[(row.session_id, row.sender_id, row.client_msg_id)] = row


def _record(key: K, row: R, new: bool, inserted: dict[K, R], updated: dict[K, R]) -> None:
    """Keep the row's final state: a row created in this batch stays an insert."""
    if new or key in inserted:
        inserted[key] = row
    else:
        updated[key] = row
