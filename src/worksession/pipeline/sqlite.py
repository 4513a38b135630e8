"""The pipeline's store on the embedded SQLite default: SQLAlchemy Core, ``executemany``.

SQLite has one writer at a time, and the embedded mode funnels every transaction through
one connection opened with ``BEGIN IMMEDIATE`` (see ``kit.db``): the locking reads are
plain reads here, the write lock having been taken up front. Core rather than raw SQL so
that values are stored exactly as the models store them (UUIDs, UTC times, JSON), which
the read side (REST, snapshots, tests) reads back through the same types.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Table,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.sqlite import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from worksession.eventlog.events import LoggedEvent
from worksession.kit.sqltypes import UTCDateTime
from worksession.models import Base, ProviderActiveStatus, SeekerSearchPreference
from worksession.models.webhook_delivery import OPEN_CHAT_SQL
from worksession.models.work_order import PERSONAL_COLUMNS as ORDER_PERSONAL_COLUMNS
from worksession.models.work_order import TO_ERASE_SQL as ORDERS_TO_ERASE
from worksession.models.work_session import PERSONAL_COLUMNS as SESSION_PERSONAL_COLUMNS
from worksession.models.work_session import TO_ERASE_ENDED_AT as SESSION_ENDED_AT
from worksession.models.work_session import TO_ERASE_SQL as SESSIONS_TO_ERASE
from worksession.pipeline.decision import ExpireChat, Flag, Sweep
from worksession.pipeline.rows import (
    SESSION_COLUMNS,
    MessageRow,
    OfferRow,
    OrderRow,
    SessionRow,
    column_value,
    from_record,
)
from worksession.pipeline.store import Conflict, Swept
from worksession.pipeline.world import ClientKey, UserKey
from worksession.sessions.states import LIVE_STATES
from worksession.webhooks.outbox import (
    ABANDONED_RETENTION,
    DEAD_RETENTION,
    DELIVERED_RETENTION,
    WebhookRow,
)

_TABLES: Final = Base.metadata.tables
_SESSIONS: Final = _TABLES["work_sessions"]
_MESSAGES: Final = _TABLES["chat_messages"]
_ORDERS: Final = _TABLES["work_orders"]
_OFFERS: Final = _TABLES["work_offers"]
_EVENTS: Final = _TABLES["session_events"]
_WEBHOOKS: Final = _TABLES["webhook_deliveries"]
_WEBHOOK_FIELDS: Final = tuple(WebhookRow.__dataclass_fields__)
_INSERT_WEBHOOKS: Final = (statement := upsert(_WEBHOOKS)).on_conflict_do_update(
    index_elements=["coalesce_key"],
    index_where=OPEN_CHAT_SQL,
    set_={
        "seq": statement.excluded.seq,
        "occurred_at": statement.excluded.occurred_at,
    },
)
_DELAY_WEBHOOKS: Final = (
    update(_WEBHOOKS)
    .where(_WEBHOOKS.c.id == bindparam("k_id"))
    .values(next_attempt_at=bindparam("next_attempt_at"))
)
_ORDER_COLUMNS: Final = tuple(OrderRow.__dataclass_fields__)
_OFFER_COLUMNS: Final = tuple(OfferRow.__dataclass_fields__)
_LIVE: Final = [s.value for s in LIVE_STATES]
_MESSAGE_COLUMNS: Final = (
    "message_id",
    "sender_id",
    "sender_type",
    "message_text",
    "client_msg_id",
    "seq",
    "delivery_status",
    "created_at",
    "updated_at",
)


def _unique_signatures() -> dict[str, str]:
    """SQLite names the columns of a broken unique rule ("work_sessions.provider_id"),
    PostgreSQL the rule itself: map the one to the other, from the models."""
    signatures: dict[str, str] = {}
    for table in Base.metadata.sorted_tables:
        rules: list[tuple[str | None, Sequence[Any]]] = [
            (str(index.name), list(index.columns)) for index in table.indexes if index.unique
        ]
        rules += [
            (str(rule.name), list(rule.columns))
            for rule in table.constraints
            if isinstance(rule, UniqueConstraint)
        ]
        for name, columns in rules:
            signatures[", ".join(f"{table.name}.{c.name}" for c in columns)] = str(name)
    return signatures


_UNIQUE_SIGNATURES: Final = _unique_signatures()


def _constraint(error: IntegrityError) -> str | None:
    text = str(error.orig)
    _, found, columns = text.partition("UNIQUE constraint failed: ")
    return _UNIQUE_SIGNATURES.get(columns.strip()) if found else None


def _message_select() -> Any:
    return select(
        _MESSAGES.c.id,
        _MESSAGES.c.message_id,
        _SESSIONS.c.session_id,
        _MESSAGES.c.sender_id,
        _MESSAGES.c.sender_type,
        _MESSAGES.c.message_text,
        _MESSAGES.c.client_msg_id,
        _MESSAGES.c.seq,
        _MESSAGES.c.delivery_status,
        _MESSAGES.c.created_at,
        _MESSAGES.c.updated_at,
        _MESSAGES.c.delivered_at,
        _MESSAGES.c.read_at,
        _MESSAGES.c.expires_at,
    ).join_from(_MESSAGES, _SESSIONS, _SESSIONS.c.id == _MESSAGES.c.session_id)


def _by_key(table: Table, keys: Sequence[str]) -> ColumnElement[bool]:
    return and_(*(table.c[k] == bindparam(f"k_{k}") for k in keys))


def _params(row: Any, columns: Sequence[str], keys: Sequence[str] = ()) -> dict[str, Any]:
    values = {c: getattr(row, c) for c in columns}
    values.update({f"k_{k}": column_value(row, k) for k in keys})
    return values


def _many(name: str) -> Any:
    return bindparam(name, expanding=True)


# Built once: constructing a Core statement of 35 columns cost more than running it.
_LOCK_SESSIONS: Final = (
    select(_SESSIONS.c.id, *(_SESSIONS.c[c] for c in SESSION_COLUMNS))
    .where(
        or_(
            _SESSIONS.c.session_id.in_(_many("session_ids")),
            _SESSIONS.c.id.in_(
                select(_MESSAGES.c.session_id).where(
                    _MESSAGES.c.message_id.in_(_many("message_ids"))
                )
            ),
        )
    )
    .order_by(_SESSIONS.c.id)
)
_MESSAGES_BY_ID: Final = _message_select().where(_MESSAGES.c.message_id.in_(_many("ids")))
_SENT: Final = _message_select().where(
    tuple_(_SESSIONS.c.session_id, _MESSAGES.c.sender_id, _MESSAGES.c.client_msg_id).in_(
        _many("keys")
    )
)


@functools.cache
def _update_statement(table: Table, columns: tuple[str, ...], keys: tuple[str, ...]) -> Any:
    return (
        update(table)
        .where(_by_key(table, keys))
        .values({c: bindparam(c) for c in columns})
        .execution_options(synchronize_session=False)
    )


class SqliteTransaction:
    def __init__(self, connection: AsyncConnection) -> None:
        self._c = connection

    async def _all(self, statement: Any) -> list[Any]:
        return list((await self._c.execute(statement)).all())

    async def lock_orders(
        self, work_ids: Sequence[int], *, due_at: datetime | None
    ) -> tuple[list[OrderRow], list[int]]:
        if not work_ids and due_at is None:
            return [], []
        due: ColumnElement[bool] = literal(False)
        if due_at is not None:
            due = and_(
                _ORDERS.c.status == "pending",
                _ORDERS.c.offer_expires_at <= due_at,
            )
        records = await self._all(
            select(*(_ORDERS.c[c] for c in _ORDER_COLUMNS), due)
            .where(or_(_ORDERS.c.id.in_(work_ids), due))
            .order_by(_ORDERS.c.id)
        )
        return [OrderRow(*r[:-1]) for r in records], [r[0] for r in records if r[-1]]

    async def lock_sessions(
        self, session_ids: Sequence[uuid.UUID], message_ids: Sequence[uuid.UUID]
    ) -> list[SessionRow]:
        if not session_ids and not message_ids:
            return []
        result = await self._c.execute(
            _LOCK_SESSIONS,
            {"session_ids": list(session_ids), "message_ids": list(message_ids)},
        )
        return [from_record(SessionRow, r) for r in result.all()]

    async def messages(self, message_ids: Sequence[uuid.UUID]) -> list[MessageRow]:
        if not message_ids:
            return []
        result = await self._c.execute(_MESSAGES_BY_ID, {"ids": list(message_ids)})
        return [from_record(MessageRow, r) for r in result.all()]

    async def sent_messages(self, keys: Sequence[ClientKey]) -> list[MessageRow]:
        if not keys:
            return []
        result = await self._c.execute(_SENT, {"keys": list(keys)})
        return [from_record(MessageRow, r) for r in result.all()]

    async def offers(self, work_ids: Sequence[int]) -> list[OfferRow]:
        if not work_ids:
            return []
        statement = (
            select(*(_OFFERS.c[c] for c in _OFFER_COLUMNS))
            .where(_OFFERS.c.work_order_id.in_(work_ids))
            .order_by(_OFFERS.c.work_order_id, _OFFERS.c.id)
        )
        return [OfferRow(*r) for r in await self._all(statement)]

    async def live_sessions(self, users: Sequence[UserKey]) -> list[tuple[str, str, uuid.UUID]]:
        if not users:
            return []
        live = _SESSIONS.c.connection_state.in_(_LIVE)
        parts = [
            select(literal(role), _SESSIONS.c[f"{role}_id"], _SESSIONS.c.session_id).where(
                _SESSIONS.c[f"{role}_id"].in_([u for r, u in users if r == role]), live
            )
            for role in ("seeker", "provider")
        ]
        return [(r[0], r[1], r[2]) for r in await self._all(union_all(*parts))]

    async def flags(self, user_ids: Sequence[str]) -> dict[tuple[Flag, str], bool]:
        if not user_ids:
            return {}
        found: dict[tuple[Flag, str], bool] = {}
        for user, value in await self._all(
            select(ProviderActiveStatus.provider_id, ProviderActiveStatus.is_active).where(
                ProviderActiveStatus.provider_id.in_(user_ids)
            )
        ):
            found[("provider_active", user)] = value
        for user, value in await self._all(
            select(SeekerSearchPreference.seeker_id, SeekerSearchPreference.is_searching).where(
                SeekerSearchPreference.seeker_id.in_(user_ids)
            )
        ):
            found[("seeker_searching", user)] = value
        return found

    async def reserve_work_ids(self, count: int) -> list[int]:
        if not count:
            return []
        # Safe under the write lock BEGIN IMMEDIATE took; the same ids SQLite would give.
        (highest,) = (await self._c.execute(select(func.max(_ORDERS.c.id)))).one()
        first = (highest or 0) + 1
        return list(range(first, first + count))

    async def insert_orders(self, rows: Sequence[OrderRow]) -> None:
        await self._insert(_ORDERS, _ORDER_COLUMNS, rows)

    async def update_orders(self, rows: Sequence[OrderRow]) -> None:
        await self._update(_ORDERS, ("status", "updated_at"), ("id",), rows)

    async def insert_offers(self, rows: Sequence[OfferRow]) -> None:
        await self._insert(_OFFERS, _OFFER_COLUMNS, rows)

    async def update_offers(self, rows: Sequence[OfferRow]) -> None:
        columns = ("status", "updated_at", "responded_at")
        await self._update(_OFFERS, columns, ("work_order_id", "provider_id"), rows)

    async def finish_orders(self, statuses: dict[int, str], now: datetime) -> list[int]:
        stuck = []
        for work_id, status in statuses.items():
            result = await self._c.execute(
                update(_ORDERS)
                .where(_ORDERS.c.id == work_id, _ORDERS.c.status == "accepted")
                .values(status=status, updated_at=now)
            )
            if not result.rowcount:
                stuck.append(work_id)
        return stuck

    async def insert_sessions(self, rows: Sequence[SessionRow]) -> dict[uuid.UUID, int]:
        pks: dict[uuid.UUID, int] = {}
        for row in rows:
            result = await self._c.execute(
                insert(_SESSIONS).values(_params(row, SESSION_COLUMNS)).returning(_SESSIONS.c.id)
            )
            pks[row.session_id] = result.scalar_one()
        return pks

    async def update_sessions(self, columns: Sequence[str], rows: Sequence[SessionRow]) -> None:
        await self._update(_SESSIONS, columns, ("id",), rows)

    async def insert_messages(self, rows: Sequence[MessageRow], pks: dict[uuid.UUID, int]) -> None:
        if rows:
            columns = _MESSAGE_COLUMNS
            values = [{**_params(r, columns), "session_id": pks[r.session_id]} for r in rows]
            await self._c.execute(insert(_MESSAGES), values)

    async def update_messages(self, rows: Sequence[MessageRow]) -> None:
        columns = ("delivery_status", "delivered_at", "read_at", "updated_at")
        await self._update(_MESSAGES, columns, ("id",), rows)

    async def expire_chats(self, chats: Sequence[ExpireChat], pks: dict[uuid.UUID, int]) -> None:
        for chat in chats:
            await self._c.execute(
                update(_MESSAGES)
                .where(_MESSAGES.c.session_id == pks[chat.session_id])
                .values(expires_at=chat.at)
            )

    async def insert_events(self, events: Sequence[LoggedEvent], pks: dict[uuid.UUID, int]) -> None:
        if events:
            await self._c.execute(
                insert(_EVENTS),
                [
                    {
                        "session_id": pks[e.session_id],
                        "seq": e.seq,
                        "kind": e.kind,
                        "data": e.data,
                        "created_at": e.created_at,
                    }
                    for e in events
                ],
            )

    async def set_flags(self, flags: dict[tuple[Flag, str], bool], now: datetime) -> None:
        tables = {
            "provider_active": (ProviderActiveStatus, "provider_id", "is_active"),
            "seeker_searching": (SeekerSearchPreference, "seeker_id", "is_searching"),
        }
        for (flag, user_id), value in flags.items():
            model, key, column = tables[flag]
            statement = upsert(model).values({key: user_id, column: value, "updated_at": now})
            await self._c.execute(
                statement.on_conflict_do_update(
                    index_elements=[key], set_={column: value, "updated_at": now}
                )
            )

    async def sweep(self, sweep: Sweep) -> Swept:
        expired = await self._c.execute(
            delete(_MESSAGES).where(_MESSAGES.c.expires_at <= sweep.now)
        )
        # The predicates are the partial indexes' own text, literally: SQLite uses a partial
        # index only for a query whose WHERE repeats its terms (bound values do not).
        ended_at = literal_column(SESSION_ENDED_AT, UTCDateTime())
        to_erase = (SESSIONS_TO_ERASE, ended_at <= sweep.ended_before)
        erasing = select(_SESSIONS.c.id).where(*to_erase)
        events = await self._c.execute(delete(_EVENTS).where(_EVENTS.c.session_id.in_(erasing)))
        left = await self._c.execute(delete(_MESSAGES).where(_MESSAGES.c.session_id.in_(erasing)))
        sessions = await self._c.execute(
            update(_SESSIONS)
            .where(*to_erase)
            .values(
                {
                    **{c: null() for c in SESSION_PERSONAL_COLUMNS},
                    "erased_at": sweep.now,
                    "updated_at": _SESSIONS.c.updated_at,
                }
            )
        )
        orders = await self._c.execute(
            update(_ORDERS)
            .where(ORDERS_TO_ERASE, _ORDERS.c.updated_at <= sweep.ended_before)
            .values(
                {
                    **{c: {} if c == "details" else null() for c in ORDER_PERSONAL_COLUMNS},
                    "erased_at": sweep.now,
                    # Kept: an ended order's updated_at is the time it ended.
                    "updated_at": _ORDERS.c.updated_at,
                }
            )
        )
        finished = await self._c.execute(
            delete(_WEBHOOKS).where(
                or_(
                    and_(
                        _WEBHOOKS.c.status.in_(["delivered", "skipped"]),
                        _WEBHOOKS.c.updated_at <= sweep.now - DELIVERED_RETENTION,
                    ),
                    and_(
                        _WEBHOOKS.c.status == "dead",
                        _WEBHOOKS.c.updated_at <= sweep.now - DEAD_RETENTION,
                    ),
                    and_(
                        _WEBHOOKS.c.status == "pending",
                        _WEBHOOKS.c.give_up_at <= sweep.now - ABANDONED_RETENTION,
                    ),
                )
            )
        )
        return Swept(
            messages=int(expired.rowcount) + int(left.rowcount),
            events=int(events.rowcount),
            sessions=int(sessions.rowcount),
            orders=int(orders.rowcount),
            webhooks=int(finished.rowcount),
        )

    async def last_chat_webhooks(self, keys: Sequence[str]) -> dict[str, datetime]:
        if not keys:
            return {}
        records = await self._all(
            select(_WEBHOOKS.c.coalesce_key, func.max(_WEBHOOKS.c.first_sent_at))
            .where(_WEBHOOKS.c.coalesce_key.in_(list(keys)))
            .group_by(_WEBHOOKS.c.coalesce_key)
        )
        # max() keeps the column's type: the values come back as aware datetimes.
        return {key: sent for key, sent in records if sent is not None}

    async def insert_webhooks(self, rows: Sequence[WebhookRow], now: datetime) -> set[uuid.UUID]:
        if not rows:
            return set()
        # The batch holds SQLite's one write lock: what is open now is what merges.
        keys = [r.coalesce_key for r in rows if r.coalesce_key is not None]
        open_keys: set[str] = set()
        if keys:
            found = await self._all(
                select(_WEBHOOKS.c.coalesce_key).where(
                    OPEN_CHAT_SQL, _WEBHOOKS.c.coalesce_key.in_(keys)
                )
            )
            open_keys = {key for (key,) in found}
        values = [
            {
                **{f: getattr(r, f) for f in _WEBHOOK_FIELDS},
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for r in rows
        ]
        await self._c.execute(_INSERT_WEBHOOKS, values)
        return {r.id for r in rows if r.coalesce_key not in open_keys}

    async def delay_webhooks(self, rows: Sequence[WebhookRow]) -> None:
        if rows:
            await self._c.execute(
                _DELAY_WEBHOOKS,
                [{"k_id": r.id, "next_attempt_at": r.next_attempt_at} for r in rows],
            )

    async def _insert(self, table: Table, columns: Sequence[str], rows: Sequence[Any]) -> None:
        if rows:
            await self._c.execute(insert(table), [_params(r, columns) for r in rows])

    async def _update(
        self, table: Table, columns: Sequence[str], keys: Sequence[str], rows: Sequence[Any]
    ) -> None:
        if rows:
            statement = _update_statement(table, tuple(columns), tuple(keys))
            await self._c.execute(statement, [_params(r, columns, keys) for r in rows])


class SqliteStore:
    dialect = "sqlite"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        try:
            async with self._engine.begin() as connection:
                yield SqliteTransaction(connection)
        except IntegrityError as exc:
            if isinstance(exc.orig, sqlite3.IntegrityError):
                raise Conflict(_constraint(exc)) from exc
            raise

    async def dispose(self) -> None:
        """The engine belongs to the ``Database``, which disposes of it."""
