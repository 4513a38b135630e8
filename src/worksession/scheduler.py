"""Periodic jobs: the distance ticker, offer expiry, abandoned sessions and the expiry sweep.

APScheduler runs them in every worker process, but only the worker holding the leader
lease (``kit.leader``) does the work, so two workers never both send the 30-second distance
update; ``max_instances=1`` and ``coalesce`` make sure a slow run is never overlapped by
the next one. Offer expiry, abandonment and the sweep are commands of the write pipeline like any
frame. The ticker only reads, and publishes.

The tick is spread over its interval: with the default 30 s it runs every second, each
time for the live sessions whose id falls in that second's slice (``id % 30``), so that
every session still gets its update every 30 s while the leader never sends 10,000 of them
in one burst (which held its event loop, and the chat of its sockets, for as long).

Typing has no job: each worker stops its own sockets' indicators (``chat.typing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from worksession.config import Settings
from worksession.eventlog.outbox import publish
from worksession.kit.broker import Broker
from worksession.kit.clock import utcnow
from worksession.kit.db import Database, is_database_unavailable
from worksession.kit.leader import Leadership
from worksession.ops import metrics
from worksession.pipeline.commands import CancelAbandoned, Command, ExpireOffers, SweepExpired
from worksession.pipeline.runner import Outcome, Pipeline
from worksession.sessions import repository as sessions
from worksession.sessions.location import tick_outbox

logger = logging.getLogger(__name__)

FAST_JOB_INTERVAL_S = 1.0
"""Offer expiry resolution: an offer expires within a second of its deadline."""
LEADERSHIP_REFRESH_S = 1.0
TICK_BATCH = 500
TICK_BURST = 100
TICK_PAUSE_S = 0.01
"""A slice is read a page of ``TICK_BATCH`` at a time but sent ``TICK_BURST`` sessions at
a time, with this pause between bursts: 100 sessions hold the leader's loop for about 4 ms
and make 200 frames that the workers deliver at once, so a slice of 10,000 sessions' 333
goes out in four bursts over about 40 ms instead of one (up to 10,000 sessions a second).
Bursts of 50 spread it further but cost a fifth more CPU per session (a publication per
burst)."""
MAX_TICK_SLICES = 60
ABANDON_BATCH = 200
"""Sessions cancelled per batch of the abandonment job; a backlog takes several batches."""
ABANDON_CHECK_MAX_S = 60.0
"""The abandonment job runs at least this often (and four times per ``abandon_after_s`` when
that is shorter), so a session ends within a minute of its twelve idle hours."""


def abandon_check_interval_s(abandon_after_s: float) -> float:
    return max(FAST_JOB_INTERVAL_S, min(ABANDON_CHECK_MAX_S, abandon_after_s / 4))


def tick_slices(interval_s: float) -> int:
    """How many slices the tick's interval is cut into: about one a second."""
    return max(1, min(MAX_TICK_SLICES, round(interval_s)))


class Jobs:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        pipeline: Pipeline,
        broker: Broker,
        leadership: Leadership,
    ) -> None:
        self.settings = settings
        self.db = db
        self.pipeline = pipeline
        self.broker = broker
        self.leadership = leadership
        self.slices = tick_slices(settings.distance_interval_s)
        self._next_slice = 0
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

    async def _leading(self, work: Callable[[], Awaitable[int]]) -> int:
        if self._stopping or not self.leadership.is_leader:
            return 0
        async with self._tracked():
            try:
                return await work()
            except Exception as exc:
                if not is_database_unavailable(exc):
                    raise
                # The next run retries; one line a run instead of a traceback a second.
                logger.warning("job skipped, database unavailable: %s", type(exc).__name__)
                return 0

    async def _command(self, command: Command) -> Outcome | None:
        outcome: Outcome | None = None

        async def run() -> int:
            nonlocal outcome
            outcome = await self.pipeline.submit(command)
            return 1

        await self._leading(run)
        return outcome

    async def distance_tick(self) -> int:
        """One slice of the periodic distance update: every live session of the slice with
        both positions gets a ``distance_update``, a page at a time."""
        if not self.leadership.is_leader:  # a follower's run is a no-op, not a tick to time
            return 0
        part = self._next_slice
        self._next_slice = (part + 1) % self.slices
        with metrics.TICK_DURATION.time():
            return await self._leading(lambda: self._tick(part))

    async def _tick(self, part: int) -> int:
        now = utcnow()
        sent, after_id = 0, 0
        while not self._stopping:
            async with self.db.transaction() as s:
                page = await sessions.live_sessions_with_positions(
                    s, after_id=after_id, limit=TICK_BATCH, slices=self.slices, part=part
                )
            for start in range(0, len(page), TICK_BURST):
                if start:
                    await asyncio.sleep(TICK_PAUSE_S)
                burst = page[start : start + TICK_BURST]
                await publish(self.broker, tick_outbox(burst, now))
                metrics.distance_updates("tick", len(burst))
            sent += len(page)
            if len(page) < TICK_BATCH:
                break
            after_id = page[-1].id
            await asyncio.sleep(TICK_PAUSE_S)
        return sent

    async def expire_offers(self) -> None:
        await self._command(ExpireOffers())

    async def cancel_abandoned(self) -> int:
        """Cancel every live session idle past ``abandon_after_s``, a batch at a time."""
        return await self._leading(self._cancel_abandoned)

    async def _cancel_abandoned(self) -> int:
        cancelled = 0
        idle = timedelta(seconds=self.settings.abandon_after_s)
        while not self._stopping:
            async with self.db.transaction() as s:
                ids = await sessions.abandoned_session_ids(
                    s, idle_since=utcnow() - idle, limit=ABANDON_BATCH
                )
            if not ids:
                break
            outcome = await self.pipeline.submit(CancelAbandoned(tuple(ids)))
            ended = sum(1 for event in outcome.events if event.kind == "connection_cancelled")
            cancelled += ended
            # Fewer than asked: the rest were touched meanwhile; they are not candidates.
            if len(ids) < ABANDON_BATCH or not ended:
                break
        if cancelled:
            logger.info("cancelled %d abandoned sessions", cancelled)
        return cancelled

    async def sweep(self) -> int:
        outcome = await self._command(SweepExpired())
        if outcome is None:
            return 0
        messages = sum(s.messages for s in outcome.swept)
        events = sum(s.events for s in outcome.swept)
        sessions = sum(s.sessions for s in outcome.swept)
        orders = sum(s.orders for s in outcome.swept)
        logger.info(
            "swept %d messages, %d events; erased %d sessions, %d orders",
            messages,
            events,
            sessions,
            orders,
        )
        return messages + events + sessions + orders


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
    slice_s = settings.distance_interval_s / jobs.slices
    scheduler.add_job(
        jobs.distance_tick,
        "interval",
        seconds=slice_s,
        id="distance_tick",
        next_run_time=utcnow() + timedelta(seconds=slice_s),
    )
    scheduler.add_job(
        jobs.expire_offers, "interval", seconds=FAST_JOB_INTERVAL_S, id="expire_offers"
    )
    scheduler.add_job(
        jobs.cancel_abandoned,
        "interval",
        seconds=abandon_check_interval_s(settings.abandon_after_s),
        id="cancel_abandoned",
    )
    scheduler.add_job(jobs.sweep, "interval", seconds=settings.sweep_interval_s, id="sweep")
    return scheduler
