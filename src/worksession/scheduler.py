"""Periodic jobs: the distance ticker, offer expiry, typing auto-stop and the expiry sweep.

APScheduler runs them in this process; ``max_instances=1`` and ``coalesce`` make sure a
slow run is never overlapped by the next one. Each job is one short transaction (or a few,
for the ticker) and publishes after commit, like a frame from a socket.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from worksession.chat import service as chat
from worksession.config import Settings
from worksession.kit.broker import Broker
from worksession.kit.clock import utcnow
from worksession.kit.db import Database, DbSession, is_database_unavailable
from worksession.orders import service as orders
from worksession.outbox import Outbox, publish
from worksession.sessions import service as sessions
from worksession.sessions.retention import sweep_expired

logger = logging.getLogger(__name__)

FAST_JOB_INTERVAL_S = 1.0
"""Offer expiry and typing auto-stop resolution: an offer expires, and a silent typist is
reported stopped, within a second of its deadline."""
SWEEP_INTERVAL = timedelta(hours=1)


class Jobs:
    def __init__(self, settings: Settings, db: Database, broker: Broker) -> None:
        self.settings = settings
        self.db = db
        self.broker = broker

    async def _in_transaction(self, work: Callable[[DbSession, Outbox], Awaitable[int]]) -> int:
        outbox = Outbox()
        try:
            async with self.db.transaction() as s:
                count = await work(s, outbox)
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            # The next run retries; one line a run instead of a traceback a second.
            logger.warning("job skipped, database unavailable: %s", type(exc).__name__)
            return 0
        await publish(self.broker, outbox)
        return count

    async def distance_tick(self) -> int:
        return await self._in_transaction(lambda s, o: sessions.distance_tick(s, o))

    async def expire_offers(self) -> int:
        return await self._in_transaction(lambda s, o: orders.expire_offers(s, o))

    async def stop_stale_typing(self) -> int:
        timeout = self.settings.typing_timeout_s
        return await self._in_transaction(
            lambda s, o: chat.stop_stale_typing(s, o, timeout_s=timeout)
        )

    async def sweep(self) -> int:
        async def work(s: DbSession, _outbox: Outbox) -> int:
            result = await sweep_expired(s, retention_hours=self.settings.message_retention_hours)
            logger.info(
                "swept %d messages, %d typing indicators, %d events",
                result.messages,
                result.typing_indicators,
                result.events,
            )
            return result.messages + result.typing_indicators + result.events

        return await self._in_transaction(work)


def build_scheduler(jobs: Jobs, settings: Settings) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
    )
    scheduler.add_job(
        jobs.distance_tick,
        "interval",
        seconds=settings.distance_interval_s,
        id="distance_tick",
        next_run_time=utcnow() + timedelta(seconds=settings.distance_interval_s),
    )
    scheduler.add_job(
        jobs.expire_offers, "interval", seconds=FAST_JOB_INTERVAL_S, id="expire_offers"
    )
    scheduler.add_job(
        jobs.stop_stale_typing, "interval", seconds=FAST_JOB_INTERVAL_S, id="stop_stale_typing"
    )
    scheduler.add_job(jobs.sweep, "interval", seconds=SWEEP_INTERVAL.total_seconds(), id="sweep")
    return scheduler
