"""SQLite and PostgreSQL give the same answers: one script of commands, on both stores.

The deciding code is the same on both databases; only how a batch is loaded and written
differs. This runs one session's whole life, alone and in batches, on a fresh database of
each kind, with the same clock and the same fresh ids, and compares everything a client or
a service could observe: each command's outcome or error, what was published, and the rows
left behind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import PG_URL, discard_database_url, fresh_database_url
from tests.pipeline_run import NOW, Recorder, as_dict, pipeline_for
from worksession import migrate
from worksession.errors import WorksessionError
from worksession.geo import Fix
from worksession.kit.db import Database
from worksession.models import ChatMessage, SessionEvent, WorkOffer, WorkOrder, WorkSession
from worksession.orders.schemas import WorkOrderView
from worksession.pipeline import commands as c
from worksession.pipeline.decision import AnswerFrame, Result
from worksession.pipeline.runner import Outcome

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="needs WORKSESSION_TEST_DATABASE_URL (CI sets it)"
)

SEEKER = c.Actor("seeker-par", "seeker")
PROVIDER = c.Actor("provider-par", "provider")
OTHER = c.Actor("provider-late", "provider")
SESSION = uuid.UUID("00000000-0000-4000-8000-00000000000a")
ROOM = uuid.UUID("00000000-0000-4000-8000-0000000000b0")
MESSAGES = [uuid.UUID(int=0xC0 + i) for i in range(8)]
NORTH_PER_100M = 100 / 111_195  # degrees of latitude in 100 m


def at(metres: float) -> float:
    return 12.97 + metres / 100 * NORTH_PER_100M


def script(work_id: int) -> list[list[c.Command]]:
    """Steps of commands; the commands of one step go in one batch."""
    return [
        [c.AcceptWork(work_id, PROVIDER.user_id, session_id=SESSION)],
        [c.AcceptWork(work_id, OTHER.user_id, session_id=uuid.uuid4())],
        [
            c.SelectMediums(SESSION, SEEKER.user_id, {"whatsapp": "9876543210"}),
            c.ShareMediums(SESSION, PROVIDER.user_id, {"call": "9876543211"}),
            c.ReportLocation(SESSION, SEEKER, Fix(at(0), 77.59, 10.0, None)),
            c.ReportLocation(SESSION, PROVIDER, Fix(at(2000), 77.59, 10.0, None)),
            c.ReportLocation(SESSION, PROVIDER, Fix(at(1990), 77.59, 500.0, None)),  # noise
        ],
        [
            c.ReportLocation(SESSION, PROVIDER, Fix(at(250), 77.59, 5.0, None)),
            c.ReportLocation(SESSION, PROVIDER, Fix(at(20), 77.59, 5.0, None)),
        ],
        [
            c.SendMessage(SESSION, SEEKER, "hello", "cm-1", MESSAGES[0], ROOM),
            c.SendMessage(SESSION, SEEKER, "hello again", "cm-1", MESSAGES[1], ROOM),
            c.SendMessage(SESSION, PROVIDER, "on my way", None, MESSAGES[2], ROOM),
            c.StartChat(SESSION, PROVIDER, ROOM),
        ],
        [
            c.AcknowledgeMessage(MESSAGES[0], PROVIDER, "read"),
            c.AcknowledgeMessage(MESSAGES[0], PROVIDER, "delivered"),
            c.AcknowledgeMessage(MESSAGES[2], PROVIDER, "read"),
            c.AcknowledgeMessage(MESSAGES[2], SEEKER, "delivered"),
        ],
        [c.SetAvailability(SEEKER.user_id, provider_active=True)],
        [
            c.CancelSession(SESSION, SEEKER),
            c.CompleteSession(SESSION, PROVIDER.user_id),
            c.SendMessage(SESSION, SEEKER, "too late", None, MESSAGES[3], ROOM),
        ],
        [c.SweepExpired()],
    ]


def observed(result: Outcome | BaseException) -> Any:
    if isinstance(result, WorksessionError):
        return ("error", result.code)
    assert isinstance(result, Outcome), result
    reply: Any = result.reply
    if isinstance(reply, AnswerFrame):
        reply = as_dict(reply.frame)
    elif isinstance(reply, Result):
        value = reply.value
        reply = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    return ([e.to_wire() for e in result.events], repr(reply) if reply is None else reply)


async def rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, tuple[Any, ...]] = {
        "orders": (WorkOrder.id, WorkOrder.status, WorkOrder.updated_at),
        "offers": (WorkOffer.provider_id, WorkOffer.status, WorkOffer.responded_at),
        "sessions": (
            WorkSession.session_id,
            WorkSession.connection_state,
            WorkSession.last_seq,
            WorkSession.provider_latitude,
            WorkSession.nearby_at,
            WorkSession.arrived_at,
            WorkSession.seeker_selected_mediums,
            WorkSession.cancelled_by,
        ),
        "messages": (
            ChatMessage.message_id,
            ChatMessage.delivery_status,
            ChatMessage.seq,
            ChatMessage.expires_at,
        ),
        "events": (SessionEvent.seq, SessionEvent.kind, SessionEvent.data),
    }
    found: dict[str, list[tuple[Any, ...]]] = {}
    async with db.transaction() as s:
        for name, columns in tables.items():
            result = await s.execute(select(*columns).order_by(*columns[:2]))
            found[name] = [tuple(row) for row in result.all()]
    return found


async def play(db: Database, *, batched: bool) -> Any:
    broker = Recorder()
    clock = iter(NOW + timedelta(seconds=i) for i in range(1000))
    pipeline = pipeline_for(db, broker, clock=lambda: next(clock))  # a second per batch
    trace: list[Any] = []
    try:
        created = await pipeline.submit(
            c.CreateWorkOrder(SEEKER.user_id, (PROVIDER.user_id, OTHER.user_id), {"job": "fix"})
        )
        trace.append(observed(created))
        work_id = created.result(WorkOrderView).work_id
        trace.append(broker.take())
        for step in script(work_id):
            if batched:
                results = await asyncio.gather(
                    *(pipeline.submit(command) for command in step), return_exceptions=True
                )
            else:
                results = []
                for command in step:
                    try:
                        results.append(await pipeline.submit(command))
                    except WorksessionError as error:
                        results.append(error)
            trace.append([observed(r) for r in results])
            trace.append(broker.take())
        assert pipeline.splits == 0
    finally:
        await pipeline.store.dispose()
    return trace, await rows(db)


@pytest.fixture
def fresh_urls(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh, migrated database of each kind for this test alone."""
    urls = {backend: fresh_database_url(backend, tmp_path) for backend in ("sqlite", "postgresql")}
    try:
        for url in urls.values():
            migrate.upgrade(url)
        yield urls
    finally:
        for url in urls.values():
            discard_database_url(url)


async def play_on(url: str, *, batched: bool) -> Any:
    database = Database(url)
    try:
        return await play(database, batched=batched)
    finally:
        await database.dispose()


async def play_withdrawals(db: Database, *, batched: bool) -> Any:
    """Orders withdrawn (by their seeker, by the internal API), refused (another seeker's,
    one already taken, one withdrawn twice), and a withdrawal and an accept in one step."""
    broker = Recorder()
    clock = iter(NOW + timedelta(seconds=i) for i in range(1000))
    pipeline = pipeline_for(db, broker, clock=lambda: next(clock))
    trace: list[Any] = []
    seekers = ("seeker-w1", "seeker-w2", "seeker-w3")
    try:
        work_ids = []
        for seeker in seekers:
            created = await pipeline.submit(
                c.CreateWorkOrder(seeker, (PROVIDER.user_id, OTHER.user_id), {"job": seeker})
            )
            work_ids.append(created.result(WorkOrderView).work_id)
        trace.append(broker.take())
        first, second, third = work_ids
        steps: list[list[c.Command]] = [
            [c.DeclineWork(first, OTHER.user_id)],
            [
                c.WithdrawWork(first, "seeker-w2"),  # not theirs
                c.WithdrawWork(first, "seeker-w1"),
                c.WithdrawWork(first, "seeker-w1"),  # again
                c.AcceptWork(first, PROVIDER.user_id, session_id=uuid.UUID(int=0xF1)),
            ],
            [
                c.AcceptWork(second, PROVIDER.user_id, session_id=SESSION),
                c.WithdrawWork(second, "seeker-w2"),
            ],
            [c.WithdrawWork(third, None), c.WithdrawWork(2**31 + 1, None)],
        ]
        for step in steps:
            if batched:
                results = await asyncio.gather(
                    *(pipeline.submit(command) for command in step), return_exceptions=True
                )
            else:
                results = []
                for command in step:
                    try:
                        results.append(await pipeline.submit(command))
                    except WorksessionError as error:
                        results.append(error)
            trace.append([observed(r) for r in results])
            trace.append(broker.take())
        assert pipeline.splits == 0
    finally:
        await pipeline.store.dispose()
    return trace, await rows(db)


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
async def test_both_databases_withdraw_alike(fresh_urls: dict[str, str], batched: bool) -> None:
    traces = []
    for backend in ("sqlite", "postgresql"):
        database = Database(fresh_urls[backend])
        try:
            traces.append(await play_withdrawals(database, batched=batched))
        finally:
            await database.dispose()
    on_sqlite, on_postgres = traces
    assert on_sqlite == on_postgres
    trace, found = on_sqlite
    flat = repr(trace)
    for expected in ("work_withdrawn", "work_unavailable", "work_not_found"):
        assert expected in flat, expected
    assert [status for _, status, _ in found["orders"]] == ["withdrawn", "accepted", "withdrawn"]


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
async def test_both_databases_answer_alike(fresh_urls: dict[str, str], batched: bool) -> None:
    on_sqlite = await play_on(fresh_urls["sqlite"], batched=batched)
    on_postgres = await play_on(fresh_urls["postgresql"], batched=batched)
    assert on_sqlite == on_postgres
    trace, _ = on_sqlite
    flat = repr(trace)
    # The script did reach every rule it means to compare.
    for expected in (
        "work_unavailable",
        "provider_nearby",
        "provider_arrived",
        "chat_ready",
        "message_status",
        "connection_cancelled",
        "invalid_state",
    ):
        assert expected in flat, expected
