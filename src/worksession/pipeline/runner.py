"""The write pipeline: every state-changing command of the process, in batches, in arrival order.

Per batch::

    BEGIN -> load (set-based) -> decide each command (pure) -> write (set-based)
          -> COMMIT -> answer the requesters -> publish the events and notices

Whatever queues up while one batch is in the database goes together as the next one
(:class:`~worksession.kit.group_commit.GroupCommit`, no timer), so batches grow with the
load and a quiet moment costs no added delay. A batch may hold commands of many sessions
and kinds; a batch of one is just a batch.

A command whose rules refuse it (its deciding function raises a ``WorksessionError``)
writes nothing, gets its error, and the rest of the batch goes on. A batch that fails in
the database (a concurrent transaction took a unique key first, a deadlock with another
worker) is rolled back and each of its commands runs again as a batch of its own, through
the same code: the database settles the race and only the command that lost it gets an
error (a broken unique index maps to the error its feature names, see ``conflicts``).
A database that cannot be reached fails the whole batch at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from worksession.errors import WorksessionError
from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.outbox import Outbox, publish
from worksession.kit.broker import Broker
from worksession.kit.clock import utcnow
from worksession.kit.db import is_database_unavailable
from worksession.kit.group_commit import GroupCommit
from worksession.ops import metrics
from worksession.pipeline.batch import bind, flush, load
from worksession.pipeline.commands import Command
from worksession.pipeline.decision import Decision, Notice, Reply, Result, Sweep
from worksession.pipeline.rows import Policy
from worksession.pipeline.store import Conflict, Contention, Store, Swept
from worksession.pipeline.world import World
from worksession.protocol.outbound import encode
from worksession.webhooks.outbox import webhooks_for

logger = logging.getLogger(__name__)

Decide = Callable[[World, Command, datetime], Decision]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a committed command produced, for the transport that submitted it."""

    events: tuple[LoggedEvent, ...]
    reply: Reply
    swept: tuple[Swept, ...] = ()
    """What the command's sweeps deleted (``SweepExpired``)."""

    def result(self, kind: type[T]) -> T:
        """The value a REST command answers with, of the type its route promises."""
        if not isinstance(self.reply, Result) or not isinstance(self.reply.value, kind):
            raise TypeError(f"expected a {kind.__name__} result, got {self.reply!r}")
        return self.reply.value


class Requester(Protocol):
    """The socket a command came from, as far as answering it goes."""

    def before_commit(self, outcome: Outcome) -> None:
        """The outcome is decided; the transaction is about to commit."""

    def rolled_back(self, outcome: Outcome) -> None:
        """The outcome announced by ``before_commit`` will not happen."""

    def committed(self, outcome: Outcome) -> None:
        """Queue the direct answer; called after COMMIT, before the publication."""


@dataclass(slots=True, eq=False)
class Submission:
    command: Command
    requester: Requester | None
    origin: str | None
    """The id of the socket the command came from: it gets the answer directly, so a
    notice that answers it is not delivered to it a second time."""
    done: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Pipeline:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        policy: Policy,
        decide: Decide,
        *,
        conflicts: Mapping[str, type[WorksessionError]] | None = None,
        clock: Callable[[], datetime] = utcnow,
        max_batch: int = 256,
    ) -> None:
        self.store = store
        self.policy = policy
        self._broker = broker
        self._decide = decide
        self._conflicts = dict(conflicts or {})
        self._clock = clock
        self._group: GroupCommit[Submission] = GroupCommit(self._run, max_batch=max_batch)
        self.splits = 0
        """Batches that failed in the database and were run again command by command."""
        self.retries = 0
        """Commands run a second time alone after losing a race they could not see."""
        self.webhooks_written: Callable[[], None] | None = None
        """Called after a batch that wrote webhooks has committed (the local dispatcher
        sends them without waiting for its next poll)."""

    @property
    def batches(self) -> int:
        return self._group.batches

    @property
    def commands(self) -> int:
        return self._group.items

    async def submit(
        self, command: Command, *, requester: Requester | None = None, origin: str | None = None
    ) -> Outcome:
        """Queue ``command``; returns its outcome once committed, or raises its error."""
        submission = Submission(command, requester, origin)
        self._group.submit(submission)
        return await asyncio.shield(submission.done)

    async def wait_idle(self) -> None:
        await self._group.wait_idle()

    async def _run(self, batch: list[Submission]) -> None:
        metrics.batch_run(len(batch))
        try:
            await self._run_batch(batch, retry=True)
        except BaseException as exc:
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            raise

    async def _run_batch(self, batch: list[Submission], *, retry: bool) -> None:
        now = self._clock()
        decided: list[tuple[Submission, Decision | WorksessionError]] = []
        announced: list[tuple[Requester, Outcome]] = []
        try:
            async with self.store.transaction() as tx:
                loaded = await load(tx, [item.command for item in batch], self.policy, now)
                world = loaded.world
                for item in batch:
                    command = bind(item.command, loaded.work_ids)
                    try:
                        decision = self._decide(world, command, now)
                    except WorksessionError as refused:
                        decided.append((item, refused))
                        continue
                    world.apply(decision)
                    if self.policy.webhooks:
                        world.changes.webhooks.extend(
                            webhooks_for(
                                command, decision, world.sessions.__getitem__, now, uuid.uuid4
                            )
                        )
                    decided.append((item, decision))
                swept = iter(await flush(tx, world, now))
                for item, decided_one in decided:
                    if item.requester is not None and isinstance(decided_one, Decision):
                        outcome = Outcome(decided_one.events, decided_one.reply)
                        item.requester.before_commit(outcome)
                        announced.append((item.requester, outcome))
        except Exception as exc:
            for requester, outcome in announced:
                requester.rolled_back(outcome)
            await self._failed(batch, exc, retry=retry)
            return
        await self._settle(decided, world, swept)

    async def _failed(self, batch: list[Submission], exc: Exception, *, retry: bool) -> None:
        if is_database_unavailable(exc):
            # One by one would only fail again, once per command: answer them all now.
            for item in batch:
                item.done.set_exception(exc)
            return
        if len(batch) > 1:
            self.splits += 1
            metrics.batch_split()
            logger.info(
                "a batch of %d commands failed (%s); running them one by one",
                len(batch),
                type(exc).__name__,
            )
            for item in batch:
                await self._run_batch([item], retry=retry)
            return
        [item] = batch
        if isinstance(exc, Conflict) and exc.constraint in self._conflicts:
            item.done.set_exception(self._conflicts[exc.constraint]())
        elif isinstance(exc, Conflict | Contention) and retry:
            # A race the locks could not see (a concurrent insert of the same key, a
            # deadlock with another worker): run it once more on fresh rows.
            self.retries += 1
            await self._run_batch(batch, retry=False)
        else:
            item.done.set_exception(exc)

    async def _settle(
        self,
        decided: list[tuple[Submission, Decision | WorksessionError]],
        world: World,
        swept: Iterator[Swept],
    ) -> None:
        outbox = Outbox()
        for item, decision in decided:
            if isinstance(decision, WorksessionError):
                item.done.set_exception(decision)
                continue
            sweeps = tuple(next(swept) for w in decision.writes if isinstance(w, Sweep))
            outcome = Outcome(decision.events, decision.reply, sweeps)
            if item.requester is not None:
                try:
                    item.requester.committed(outcome)
                except Exception:
                    # The command stands, only its answer failed: the rest of the batch
                    # is committed too and must still be answered and published.
                    logger.exception("answering a committed command failed")
            item.done.set_result(outcome)
            _publish_into(outbox, world, decision, origin=item.origin)
            for observation in decision.observations:
                metrics.observe(observation)
        await publish(self._broker, outbox)
        if world.changes.webhooks and self.webhooks_written is not None:
            self.webhooks_written()


def _publish_into(outbox: Outbox, world: World, decision: Decision, *, origin: str | None) -> None:
    for item in decision.out:
        if isinstance(item, Notice):
            skip = origin if item.answers_requester else None
            outbox.frame(item.recipients, encode(item.frame), skip=skip)
            continue
        session = world.sessions[item.session_id]
        outbox.event(item, seeker_id=session.seeker_id, provider_id=session.provider_id)
