"""Loading what a batch needs, set-based, and writing what it decided, set-based.

:func:`load` asks the store for the rows every command of the batch refers to, a handful
of statements whatever the batch size, in a fixed order: orders are locked before
sessions, each in primary key order, by every batch of every worker. :func:`flush` writes
the batch's :class:`~worksession.pipeline.world.Changes` in the order the foreign keys
want (an order before its offers, a session before its events).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from worksession.orders.schemas import MAX_WORK_ID
from worksession.pipeline import commands as c
from worksession.pipeline.rows import Policy
from worksession.pipeline.store import Swept, Transaction
from worksession.pipeline.world import Changes, ClientKey, UserKey, World
from worksession.webhooks.outbox import coalesced, first_due

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Needs:
    sessions: set[uuid.UUID] = field(default_factory=set)
    messages: set[uuid.UUID] = field(default_factory=set)
    sent: set[ClientKey] = field(default_factory=set)
    orders: set[int] = field(default_factory=set)
    due_orders: bool = False
    live_users: set[UserKey] = field(default_factory=set)
    live_seekers_of_orders: set[int] = field(default_factory=set)
    flags_of: set[str] = field(default_factory=set)
    new_work_ids: int = 0


def needs_of(commands: Sequence[c.Command]) -> Needs:
    needs = Needs()
    for command in commands:
        match command:
            case c.CreateWorkOrder(seeker_id=seeker_id, provider_ids=provider_ids):
                needs.new_work_ids += 1
                # Offers skip busy and inactive providers, and a busy seeker gets none.
                needs.live_users.add(("seeker", seeker_id))
                needs.live_users.update(("provider", p) for p in provider_ids)
                needs.flags_of.update(provider_ids)
            case c.AcceptWork(work_id=work_id, provider_id=provider_id) if _possible(work_id):
                needs.orders.add(work_id)
                needs.live_users.add(("provider", provider_id))
                needs.live_seekers_of_orders.add(work_id)
            case c.DeclineWork(work_id=work_id) if _possible(work_id):
                needs.orders.add(work_id)
            case c.WithdrawWork(work_id=work_id) if _possible(work_id):
                needs.orders.add(work_id)
            case c.ExpireOffers():
                needs.due_orders = True
            case c.SendMessage(session_id=sid, actor=actor, client_msg_id=client_msg_id):
                needs.sessions.add(sid)
                if client_msg_id is not None:
                    needs.sent.add((sid, actor.user_id, client_msg_id))
            case (
                c.SelectMediums(session_id=sid)
                | c.ShareMediums(session_id=sid)
                | c.ReportLocation(session_id=sid)
                | c.CancelSession(session_id=sid)
                | c.CompleteSession(session_id=sid)
                | c.StartChat(session_id=sid)
                | c.TouchSession(session_id=sid)
            ):
                needs.sessions.add(sid)
            case c.CancelAbandoned(session_ids=session_ids):
                needs.sessions.update(session_ids)
            case c.AcknowledgeMessage(message_id=message_id):
                needs.messages.add(message_id)
            case c.SetAvailability(user_id=user_id):
                needs.flags_of.add(user_id)
            case c.SweepExpired():
                pass
    return needs


def _possible(work_id: int) -> bool:
    # A frame may carry any positive 64-bit id, and PostgreSQL refuses to even compare one
    # beyond the int4 key: such an order is simply not there (and not loaded).
    return 1 <= work_id <= MAX_WORK_ID


@dataclass(slots=True)
class Loaded:
    world: World
    work_ids: list[int]
    """Fresh work order ids, one per ``CreateWorkOrder`` of the batch, in order."""


async def load(
    tx: Transaction, commands: Sequence[c.Command], policy: Policy, now: datetime
) -> Loaded:
    needs = needs_of(commands)
    orders, due = await tx.lock_orders(
        sorted(needs.orders), due_at=now if needs.due_orders else None
    )
    sessions = await tx.lock_sessions(sorted(needs.sessions), sorted(needs.messages))
    messages = await tx.messages(sorted(needs.messages))
    sent = await tx.sent_messages(sorted(needs.sent))
    offers = await tx.offers([order.id for order in orders])
    seekers = {order.seeker_id for order in orders if order.id in needs.live_seekers_of_orders}
    live = await tx.live_sessions(
        sorted(needs.live_users | {("seeker", seeker) for seeker in seekers})
    )
    world = World.of(
        policy,
        sessions=sessions,
        messages=[*messages, *sent],
        orders=orders,
        offers=offers,
        flags=dict(await tx.flags(sorted(needs.flags_of))),
        due_orders=due,
    )
    for role, user_id, session_id in live:
        world.live[(role, user_id)] = session_id
    return Loaded(world, await tx.reserve_work_ids(needs.new_work_ids))


def bind(command: c.Command, fresh_work_ids: list[int]) -> c.Command:
    """The command with the ids the pipeline assigns (a new order's id) filled in."""
    if isinstance(command, c.CreateWorkOrder) and not command.work_id:
        return dataclasses.replace(command, work_id=fresh_work_ids.pop(0))
    return command


async def flush(tx: Transaction, world: World, now: datetime) -> list[Swept]:
    """Write the batch's changes; returns what each sweep deleted."""
    changes: Changes = world.changes
    await tx.insert_orders(list(changes.new_orders.values()))
    await tx.insert_offers(list(changes.new_offers.values()))
    await tx.update_orders(list(changes.orders.values()))
    await tx.update_offers(list(changes.offers.values()))
    if stuck := await tx.finish_orders(changes.finished_orders, now):
        # The session is the record of truth for its own end; see FinishOrder.
        logger.warning("work orders %s were not 'accepted' when their sessions ended", stuck)
    pks = {row.session_id: row.pk for row in world.sessions.values() if row.pk is not None}
    pks.update(await tx.insert_sessions(list(changes.new_sessions.values())))
    for columns, rows in world.session_updates().items():
        await tx.update_sessions(columns, rows)
    await tx.insert_messages(list(changes.new_messages.values()), pks)
    await tx.update_messages(list(changes.messages.values()))
    await tx.expire_chats(list(changes.expired_chats.values()), pks)
    await tx.insert_events(changes.events, pks)
    await tx.set_flags(changes.flags, now)
    if changes.webhooks:
        webhooks = coalesced(changes.webhooks)
        added = await tx.insert_webhooks(webhooks, now)
        # The coalescing window only decides when a chat webhook that opened with this batch
        # is due: one that merged into an open row keeps that row's due time. Looked up
        # after the insert, so a chat message between people in a conversation (nearly
        # always a merge) costs one statement for its webhook, not two.
        opened = [w for w in webhooks if w.coalesce_key is not None and w.id in added]
        if opened:
            keys = sorted({w.coalesce_key for w in opened if w.coalesce_key is not None})
            last_sent = await tx.last_chat_webhooks(keys)
            window = world.policy.webhook_chat_window
            due = first_due(opened, last_sent, window)
            await tx.delay_webhooks(
                [
                    d
                    for d, w in zip(due, opened, strict=True)
                    if d.next_attempt_at != w.next_attempt_at
                ]
            )
    return [await tx.sweep(sweep) for sweep in changes.sweeps]
