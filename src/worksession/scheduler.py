"""Periodic jobs: the distance ticker, offer expiry, typing auto-stop and the expiry sweep.

APScheduler runs them in every worker process, but only the worker holding the leader
lease (``kit.leader``) does the work, so two workers never both send the 30-second distance
update; ``max_instances=1`` and ``coalesce`` make sure a slow run is never overlapped by
the next one. Each job is one short transaction (or a few, for the ticker) and publishes
after commit, like a frame from a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from worksession.chat import service as chat
from worksession.config import Settings
from worksession.kit.broker import Broker
from worksession.kit.clock import utcnow
from worksession.kit.db import Database, DbSession, is_database_unavailable
from worksession.kit.leader import Leadership
from worksession.ops import metrics
from worksession.orders import service as orders
from worksession.outbox import Outbox, publish
from worksession.sessions import service as sessions
from worksession.sessions.retention import sweep_expired

logger = logging.getLogger(__name__)

FAST_JOB_INTERVAL_S = 1.0
"""Offer expiry and typing auto-stop resolution: an offer expires, and a silent typist is
reported stopped, within a second of its deadline."""
SWEEP_INTERVAL = timedelta(hours=1)
LEADERSHIP_REFRESH_S = 1.0
TICK_BATCH = 500


class Jobs:
    def __init__(
        self, settings: Settings, db: Database, broker: Broker, leadership: Leadership
    ) -> None:
        self.settings = settings
        self.db = db
        self.broker = broker
        self.leadership = leadership
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let the running job finish its current transaction, start nothing new. The
        scheduler cancels what is still running when it shuts down; waiting first means a
        clean shutdown never aborts a transaction half-way or logs a cancelled job."""
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    @contextlib.asynccontextmanager
    async def _tracked(self) -> AsyncIterator[None]:
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def refresh_leadership(self) -> bool:
        if self._stopping:
            return self.leadership.is_leader
        async with self._tracked():
            return await self.leadership.refresh()

    async def _in_transaction(self, work: Callable[[DbSession, Outbox], Awaitable[int]]) -> int:
        if self._stopping or not self.leadership.is_leader:
            return 0
        async with self._tracked():
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
        """Every live session with both positions gets a distance_update, one short
        transaction and one publication per batch, yielding to the event loop in between."""
        if not self.leadership.is_leader:  # a follower's run is a no-op, not a tick to time
            return 0
        with metrics.TICK_DURATION.time():
            return await self._distance_tick()

    async def _distance_tick(self) -> int:
        now = utcnow()
        sent, after_id = 0, 0
        while True:
            count, after_id = await self._batch(after_id, now)
            sent += count
            if count < TICK_BATCH or self._stopping:
                return sent
            await asyncio.sleep(0)

    async def _batch(self, after_id: int, now: datetime) -> tuple[int, int]:
        next_after = after_id

        async def work(s: DbSession, outbox: Outbox) -> int:
            nonlocal next_after
            count, next_after = await sessions.distance_tick_batch(
                s, outbox, after_id=after_id, batch_size=TICK_BATCH, now=now
            )
            return count

        count = await self._in_transaction(work)
        return count, next_after

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
    # Followers try to take the lease this often, so a dead leader's jobs resume within
    # about the lease's TTL; the leader renews at the same pace.
    scheduler.add_job(
        jobs.refresh_leadership,
        "interval",
        seconds=min(LEADERSHIP_REFRESH_S, settings.leader_ttl_s / 3),
        id="leadership",
        next_run_time=utcnow(),
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
