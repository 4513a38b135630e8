"""Group commit: run the items that queued up while the previous batch ran, as one batch.

No timer: the first item of a quiet moment starts a batch of its own at once (on the next
turn of the event loop, with whatever else arrived in that turn), and whatever arrives while
a batch is in the database waits for it and goes as the next batch. Batches therefore grow
with the load and with the database's latency, and never add a fixed delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

RunBatch = Callable[[list[T]], Awaitable[None]]


class GroupCommit(Generic[T]):
    """One batch at a time, in arrival order; ``run_batch`` settles every item it is given.

    Items of one batch are handed over in the order they were submitted, and a batch starts
    only after the previous one finished: what one producer submits is processed in order.
    """

    def __init__(self, run_batch: RunBatch[T], *, max_batch: int = 256) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._pending: list[T] = []
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> None:
        self._pending.append(item)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain(), name="group-commit")

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self.batches += 1
            self.items += len(batch)
            try:
                await self._run_batch(batch)
            except Exception:
                # run_batch settles its items itself; this is a bug in it, and the
                # items it did not settle would wait forever, so say it loudly.
                logger.exception("a group commit batch failed")

    async def wait_idle(self) -> None:
        """Wait until everything submitted so far has been run (shutdown, tests)."""
        while self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)
