"""Sends the webhook outbox: every worker runs one, each claiming its own rows.

A loop claims due rows (``deliveries.claim``), holds back those whose user has a socket
open on any worker now (the socket told them, unless it is a dead one: they are looked at
again after ``ONLINE_RECHECK_S`` and skipped only if the user is still online), and sends
each of the others in a task of its own, at most ``max_in_flight`` at a time: a receiver
that hangs holds one slot for at most the timeout, never the loop, the other users'
webhooks or the live session (the pipeline only wrote a row; nothing of the live path
waits for a send). It claims only as many rows as it
has free slots, so a claimed row is sent at once and its lease is never spent waiting.

The loop wakes when the local pipeline committed webhooks, when a slot frees, when a retry
of its own falls due, and otherwise every ``poll_s`` (rows other workers wrote or leased).

Outcomes: a 2xx is delivered; anything else, or no answer within the timeout, is retried
after 1 s, 2 s, 4 s, ... (at most 10 minutes), each ±20 % at random so that a receiver
coming back is not hit by every retry at once, until 24 hours after the row was written;
then it is dead, with its last error, until someone retries it by hand. The send tasks
only note their outcomes; the loop writes all that ended since its last turn in one
statement, so a burst of timeouts is one write, not one transaction each.

A receiver failing as a whole (no answers, connection errors, 5xx) pauses the claims
(``breaker``): one probe now and then instead of every retry of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import httpx
from sqlalchemy.exc import IntegrityError

from worksession import __version__
from worksession.eventlog.outbox import user_channel
from worksession.kit.broker import Broker
from worksession.kit.clock import utcnow
from worksession.kit.db import Database, is_database_unavailable
from worksession.ops import metrics
from worksession.webhooks import deliveries
from worksession.webhooks.breaker import Breaker, State
from worksession.webhooks.deliveries import Claimed, Outcome
from worksession.webhooks.signing import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)

User = tuple[str, str]
"""(user_type, user_id)."""
Online = Callable[[Sequence[User]], Awaitable[set[User]]]
"""Which of these users have a socket open on any worker now."""

BACKOFF_CAP_S = 600.0
JITTER = 0.2
LEASE_MARGIN_S = 10.0
"""A claim's lease outlasts the send's timeout by this much (the outcome's own write)."""
POLL_S = 1.0
ONLINE_RECHECK_S = 45.0
"""How long a webhook whose recipient is online when it falls due waits before presence is
checked again; only if they are online then too is it skipped. "Online" may be a dead
socket: a phone that locks keeps its server-side socket until the ping timeout (up to
~40 s), and a crashed worker's sockets count for up to 10 s. 45 s outlasts both, so a
webhook falling due in that gap goes out once the stale socket is gone."""
STATS_EVERY_S = 15.0
MAX_IN_FLIGHT = 32


def backoff_s(attempts: int, rng: Callable[[], float] = random.random) -> float:
    """The wait after the ``attempts``-th failed attempt: 1 s, 2 s, 4 s, ... at most
    10 minutes, each ±20 %."""
    # The exponent clamped: 2.0 ** 1024 overflows, and 2 ** 10 s is past the cap anyway.
    base = min(BACKOFF_CAP_S, 2.0 ** min(max(attempts - 1, 0), 10))
    return base * (1 - JITTER + 2 * JITTER * rng())


def online_in(broker: Broker) -> Online:
    """Presence from the broker's per-user socket groups (the sockets cap keeps them)."""

    async def online(users: Sequence[User]) -> set[User]:
        channels = [user_channel(role, user_id) for role, user_id in users]
        counts = await broker.count_online(channels)
        return {user for user, channel in zip(users, channels, strict=True) if counts.get(channel)}

    return online


class Dispatcher:
    def __init__(
        self,
        db: Database,
        *,
        url: str,
        secret: str,
        timeout_s: float,
        online: Online,
        max_in_flight: int = MAX_IN_FLIGHT,
        poll_s: float = POLL_S,
        recheck_s: float = ONLINE_RECHECK_S,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        breaker: Breaker | None = None,
    ) -> None:
        self._db = db
        self._url = url
        self._secret = secret
        self._timeout_s = timeout_s
        self._online = online
        self._max_in_flight = max_in_flight
        self._poll_s = poll_s
        self._recheck = timedelta(seconds=recheck_s)
        self._clock = clock
        self._rng = rng
        self._lease = timedelta(seconds=timeout_s + LEASE_MARGIN_S)
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []
        self._breaker = Breaker(clock=time.monotonic) if breaker is None else breaker
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._client = httpx.AsyncClient(
            headers={"user-agent": f"worksession/{__version__}"},
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_in_flight),
        )
        self._stats_at = 0.0

    def wake(self) -> None:
        """Look for due rows now (the local pipeline committed some)."""
        self._wake.set()

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def pause(self) -> None:
        """Claim nothing more; sends in flight go on. A shutdown calls this before it
        closes the sockets: a row claimed after that would find their users offline and
        push to apps that are about to reconnect to another worker."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def stop(self, grace_s: float = 2.0) -> None:
        """Claim nothing more; let sends in flight finish for ``grace_s``, then cancel
        them (their leases run out and any worker sends them again)."""
        await self.pause()
        if self._sending:
            _, late = await asyncio.wait(self._sending, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._record_outcomes()  # those that finished in the grace; not the cancelled
        await self._client.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            full = False
            try:
                await self._record_outcomes()
                full = await self.dispatch_due()
                await self._housekeeping()
            except Exception as exc:
                if not is_database_unavailable(exc):
                    logger.exception("webhook dispatch failed")
                else:
                    logger.warning("webhooks wait: database unavailable (%s)", type(exc).__name__)
            if full and len(self._sending) < self._max_in_flight:
                continue  # a claim as large as it could be: there may be more due rows
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def dispatch_due(self) -> bool:
        """Claim what is due, up to the free slots, and start sending it; returns whether
        the claim took as many rows as it could (more may be due)."""
        free = self._breaker.slots(self._max_in_flight, len(self._sending))
        if free <= 0:
            return False  # slots busy (a freed one wakes us) or paused (``_send`` set a wake)
        probe = self._breaker.state is State.HALF_OPEN  # then ``free`` is 1
        now = self._clock()
        async with self._db.transaction() as db:
            rows = await deliveries.claim(
                db, now=now, lease_until=now + self._lease, limit=free, untried_first=probe
            )
        if not rows:
            return False
        for row in await self._not_online(rows):
            if probe:
                self._breaker.probing(row.id)
            task = asyncio.create_task(self._send(row))
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return len(rows) == free

    async def _not_online(self, rows: list[Claimed]) -> list[Claimed]:
        users = sorted({(row.user_type, row.user_id) for row in rows})
        try:
            online = await self._online(users)
        except Exception as exc:
            # Unknown presence: a push too many beats a missed one.
            logger.warning("webhooks: presence unknown (%s); sending", type(exc).__name__)
            return rows
        held = [row for row in rows if (row.user_type, row.user_id) in online]
        to_send = [row for row in rows if (row.user_type, row.user_id) not in online]
        if not held:
            return to_send
        # The first time: perhaps a dead socket, look again later. The second: skipped.
        recheck = [row for row in held if row.online_at is None]
        skipped = [row for row in held if row.online_at is not None]
        try:
            await self._hold(recheck, skipped)
        except Exception as exc:
            # Held rows stay leased and are claimed again after the lease; the others go
            # out now all the same.
            logger.warning("webhooks held for presence not recorded (%s)", type(exc).__name__)
            return to_send
        if recheck:
            metrics.webhook_outcome("online_recheck", len(recheck))
            delay = self._recheck.total_seconds()
            asyncio.get_running_loop().call_later(delay, self._wake.set)
        if skipped:
            metrics.webhook_outcome("skipped_online", len(skipped))
        return to_send

    async def _hold(self, recheck: list[Claimed], skipped: list[Claimed]) -> None:
        for attempt in (1, 2):
            now = self._clock()
            try:
                async with self._db.transaction() as db:
                    if recheck:
                        await deliveries.recheck_later(db, recheck, now, now + self._recheck)
                    if skipped:
                        await deliveries.skipped(db, skipped, now)
                return
            except IntegrityError:
                # Re-opening a chat webhook met a newer open one of the same chat, inserted
                # by a batch that had not committed when we looked: it has now, so the
                # second try sees it and skips ours in its favour.
                if attempt == 2:
                    raise

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()  # a slot is free

    async def _send(self, row: Claimed) -> None:
        try:
            now = self._clock()
            if now >= row.give_up_at:
                # It waited past its give-up time (behind a backlog, or the breaker): an
                # offer that expired meanwhile, a 24-hour-old event. Dead, not sent.
                self._outcomes.append(Outcome(row, now, deliveries.GAVE_UP))
                return
            error, receiver_failed = await self._post(row)
            self._tell_breaker(row, error, receiver_failed)
            now = self._clock()
            retry_at: datetime | None = None
            if error is not None:
                retry_at = now + timedelta(seconds=backoff_s(row.attempts, self._rng))
                if retry_at > row.give_up_at:
                    retry_at = None
            # Written by the loop with the others that ended meanwhile (``_sent`` wakes it).
            self._outcomes.append(Outcome(row, now, error, retry_at))
        finally:
            self._breaker.abandoned(row.id)  # a probe that ended in none of the above

    def _tell_breaker(self, row: Claimed, error: str | None, receiver_failed: bool) -> None:
        if not receiver_failed:
            if self._breaker.state is not State.CLOSED:
                logger.info("webhook receiver answers again: sending resumes")
                metrics.webhook_receiver_failing(False)
            self._breaker.answered(row.id)
        elif self._breaker.failed(row.id):
            pause_s = self._breaker.reopens_in() or 0.0
            logger.warning(
                "webhook receiver failing (%s): sending paused for %g s, then one probe",
                error,
                pause_s,
            )
            metrics.webhook_receiver_failing(True)
            asyncio.get_running_loop().call_later(pause_s, self._wake.set)

    async def _record_outcomes(self) -> None:
        """Write the outcomes of the sends that ended since the last time, in one
        transaction, then count them and set a wake-up for each retry's time."""
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        try:
            async with self._db.transaction() as db:
                await deliveries.record_outcomes(db, outcomes)
        except asyncio.CancelledError:
            # A pause in the middle of the write: ``stop`` writes them (again: the guard
            # makes a second write of the same attempt a no-op).
            self._outcomes[:0] = outcomes
            raise
        except Exception as exc:
            # Their leases run out and the rows are sent again: at least once, not exactly
            # once.
            if is_database_unavailable(exc):
                logger.warning(
                    "%d webhook outcomes not recorded (%s)", len(outcomes), type(exc).__name__
                )
            else:
                logger.exception("%d webhook outcomes not recorded", len(outcomes))
            return
        # The metric's name for a retry to come is "failed"; the row stays "pending".
        counted = Counter("failed" if o.status == "pending" else o.status for o in outcomes)
        for outcome, count in counted.items():
            metrics.webhook_outcome(outcome, count)
        if dead := [o for o in outcomes if o.status == "dead"]:
            # One line, not one per row: a backlog of expired offers dies all at once.
            logger.warning(
                "%d webhooks dead, e.g. %s after %d attempts: %s",
                len(dead),
                dead[0].row.id,
                dead[0].row.attempts,
                dead[0].error,
            )
        now = self._clock()
        for retry_at in {o.retry_at for o in outcomes if o.retry_at is not None}:
            delay = (retry_at - now).total_seconds()
            asyncio.get_running_loop().call_later(max(delay, 0.0), self._wake.set)

    async def _post(self, row: Claimed) -> tuple[str | None, bool]:
        """One attempt: None on a 2xx, else why not (never the response's body); and
        whether the failure is the receiver's rather than this webhook's (for the breaker:
        no answer, a connection error or an error of our own sending, a 5xx, a 429)."""
        try:
            body = row.body()
            headers = {
                "content-type": "application/json",
                SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
            }
            # A bound on the whole exchange: httpx's timeout is per read, and a receiver
            # trickling bytes would otherwise hold the slot for as long as it likes.
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream(
                    "POST", self._url, content=body, headers=headers, timeout=self._timeout_s
                ) as response:
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return f"no answer within {self._timeout_s:g} s", True
        except httpx.HTTPError as exc:
            return type(exc).__name__, True
        except Exception as exc:
            # Not httpx's own errors (an InvalidURL, a bug): still a failed attempt, retried
            # and in the end dead, never a row re-sent forever as its lease runs out.
            logger.warning("webhook %s: %s sending it", row.id, type(exc).__name__)
            return type(exc).__name__, True
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", status >= 500 or status == 429

    async def _housekeeping(self) -> None:
        """Every ``STATS_EVERY_S``: rows past their give-up time are marked dead (the
        breaker may be holding them), and the queue's metrics."""
        if time.monotonic() - self._stats_at < STATS_EVERY_S:
            return
        self._stats_at = time.monotonic()
        async with self._db.transaction() as db:
            if gave_up := await deliveries.give_up_overdue(db, self._clock()):
                metrics.webhook_outcome("dead", gave_up)
                logger.warning("%d webhooks dead: %s", gave_up, deliveries.GAVE_UP)
            depth, oldest = await deliveries.queue_stats(db)
        age = 0.0 if oldest is None else max(0.0, (self._clock() - oldest).total_seconds())
        metrics.webhook_queue(depth, age)
