"""Benchmark: the periodic distance tick over many live sessions.

Measures, in one run and on one machine, the CPU cost per session of a whole tick as the
scheduler runs it (batched reads, haversine, frame encoding, publication to the in-process
broker), the longest time the event loop was held by the tick (other sockets wait that
long at most), and the cost of the bare batched read as a baseline, so that the ratio says
how much the tick adds on top of reading the rows. CPU time (process_time) is quoted
rather than wall time because the machines are shared.

    .venv/bin/python bench/tick.py [--sessions 10000] [--postgres postgresql://host/db]

With ``--postgres`` the run uses a fresh database created on that server (and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from worksession import migrate
from worksession.config import Settings
from worksession.kit.broker import MemoryBroker
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.kit.leader import SoleLeader
from worksession.models import WorkOrder, WorkSession
from worksession.scheduler import TICK_BATCH, Jobs
from worksession.sessions import repository


async def seed(db: Database, sessions: int) -> None:
    now = utcnow()
    async with db.transaction() as s:
        await s.execute(
            insert(WorkOrder),
            [
                {
                    "id": i,
                    "seeker_id": f"s{i}",
                    "status": "accepted",
                    "details": {},
                    "offer_expires_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(1, sessions + 1)
            ],
        )
        await s.execute(
            insert(WorkSession),
            [
                {
                    "session_id": uuid.uuid4(),
                    "work_order_id": i,
                    "seeker_id": f"s{i}",
                    "provider_id": f"p{i}",
                    "connection_state": "active",
                    "last_seq": 1,
                    "seeker_latitude": 12.97 + i * 1e-6,
                    "seeker_longitude": 77.59,
                    "provider_latitude": 12.99,
                    "provider_longitude": 77.61 + i * 1e-6,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(1, sessions + 1)
            ],
        )


async def loop_lag_monitor(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 1 ms timer fires: the time the event loop was held by someone else."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - before - 0.001)


async def measure(work: Callable[[], Awaitable[None]], rounds: int) -> tuple[float, float]:
    """Median CPU seconds and median longest event-loop hold over ``rounds`` runs."""
    cpu: list[float] = []
    lag: list[float] = []
    for _ in range(rounds):
        stop, lags = asyncio.Event(), list[float]()
        monitor = asyncio.create_task(loop_lag_monitor(stop, lags))
        started = time.process_time()
        await work()
        cpu.append(time.process_time() - started)
        stop.set()
        await monitor
        lag.append(max(lags, default=0.0))
    return statistics.median(cpu), statistics.median(lag)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL server URL to create a database on")
    args = parser.parse_args()

    scratch = await create_scratch_database(args.postgres) if args.postgres else None
    try:
        await run(args, scratch)
    finally:
        if scratch and args.postgres:
            await drop_scratch_database(args.postgres, scratch)


def _admin_url(server_url: str) -> str:
    return (
        make_url(server_url)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


async def create_scratch_database(server_url: str) -> str:
    name = f"worksession_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_admin_url(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return (
        make_url(server_url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


async def drop_scratch_database(server_url: str, url: str) -> None:
    admin = await asyncpg.connect(_admin_url(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


async def run(args: argparse.Namespace, scratch: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = scratch or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
        db = Database(url)
        await seed(db, args.sessions)
        broker = MemoryBroker()
        delivered = 0

        def deliver(_channel: str, _payload: bytes) -> None:
            nonlocal delivered
            delivered += 1

        await broker.start(deliver)
        for i in range(1, args.sessions + 1):  # every participant is "online" here
            await broker.subscribe(f"ws:seeker:s{i}")
            await broker.subscribe(f"ws:provider:p{i}")
        jobs = Jobs(Settings(database_url=url), db, broker, SoleLeader())

        async def read_only() -> None:
            after = 0
            while True:
                async with db.transaction() as s:
                    page = await repository.live_sessions_with_positions(
                        s, after_id=after, limit=TICK_BATCH
                    )
                if len(page) < TICK_BATCH:
                    return
                after = page[-1].id
                await asyncio.sleep(0)

        async def tick() -> None:
            assert await jobs.distance_tick() == args.sessions

        base_cpu, base_lag = await measure(read_only, args.rounds)
        tick_cpu, tick_lag = await measure(tick, args.rounds)
        await db.dispose()

    n = args.sessions
    print(f"database: {url.split(':')[0]}, sessions: {n}, rounds: {args.rounds} (medians)")
    print(
        f"baseline (batched read only): {base_cpu * 1e6 / n:8.1f} us CPU/session, "
        f"longest loop hold {base_lag * 1e3:6.1f} ms"
    )
    print(
        f"distance tick (read+compute+publish): {tick_cpu * 1e6 / n:8.1f} us CPU/session, "
        f"longest loop hold {tick_lag * 1e3:6.1f} ms, {tick_cpu:.3f} s CPU per tick"
    )
    print(f"ratio tick/baseline CPU: {tick_cpu / base_cpu:.2f}; frames delivered: {delivered}")


if __name__ == "__main__":
    asyncio.run(main())
