"""Commands through the real write pipeline against a test database, with what it publishes.

The service tests drive the pipeline the way the gateway, the REST routes and the jobs do
(``submit``), on the run's database of each backend, with a clock of their choosing. What
the pipeline publishes is recorded, decoded into ``(channel, {"event": wire})`` for logged
events and ``(channel, {"frame": frame, "skip": socket})`` for ephemeral frames (``skip``
only when the requesting socket is skipped), in publication order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worksession.decide import CONSTRAINT_ERRORS, decide
from worksession.eventlog.outbox import decode
from worksession.kit.broker import Broker, Deliver, Resubscribed
from worksession.kit.db import Database
from worksession.lifespan import build_store
from worksession.pipeline.commands import Command
from worksession.pipeline.rows import Policy
from worksession.pipeline.runner import Outcome, Pipeline
from worksession.protocol.outbound import Outbound, encode
from worksession.sessions.schemas import LocationRules

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = LocationRules(
    move_threshold_m=50.0, nearby_m=300.0, arrived_m=50.0, max_accuracy_m=100.0, max_speed_kmh=200.0
)
ORIGIN = "socket-1"


def policy(
    *,
    rules: LocationRules = RULES,
    retention_hours: float = 24.0,
    offer_ttl_s: float = 120.0,
) -> Policy:
    return Policy(
        location=rules,
        retention=timedelta(hours=retention_hours),
        offer_ttl=timedelta(seconds=offer_ttl_s),
    )


def decoded(payload: bytes) -> dict[str, Any]:
    envelope = decode(payload)
    if envelope.event is not None:
        return {"event": envelope.event.to_wire()}
    body: dict[str, Any] = {"frame": json.loads(envelope.text)}
    if envelope.skip is not None:
        body["skip"] = envelope.skip
    return body


@dataclass
class Recorder(Broker):
    """A broker that keeps what was published (nobody subscribes)."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def start(self, deliver: Deliver, on_resubscribed: Resubscribed | None = None) -> None:
        return None

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self.messages.extend((channel, decoded(payload)) for channel, payload in messages)

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        taken, self.messages = self.messages, []
        return taken


def pipeline_for(
    db: Database,
    broker: Broker,
    *,
    now: datetime | None = NOW,
    rules: Policy | None = None,
    max_batch: int = 256,
    clock: Callable[[], datetime] | None = None,
) -> Pipeline:
    """A pipeline on ``db`` whose clock says ``now``, or asks ``clock`` (the real clock
    when both are None)."""
    if clock is None and now is not None:
        fixed = now
        clock = lambda: fixed  # noqa: E731
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    return Pipeline(
        build_store(db),
        broker,
        rules or policy(),
        decide,
        conflicts=CONSTRAINT_ERRORS,
        max_batch=max_batch,
        **options,
    )


async def run(
    db: Database,
    command: Command,
    *,
    now: datetime | None = NOW,
    rules: Policy | None = None,
    origin: str = ORIGIN,
) -> tuple[Outcome, list[tuple[str, dict[str, Any]]]]:
    """One command alone through a pipeline of its own; its outcome and what it published.
    The command's error, if it has one, is raised."""
    broker = Recorder()
    pipeline = pipeline_for(db, broker, now=now, rules=rules)
    try:
        outcome = await pipeline.submit(command, origin=origin)
    finally:
        await pipeline.store.dispose()
    return outcome, broker.take()


def as_dict(frame: Outbound) -> dict[str, Any]:
    """A frame as the client receives it."""
    result: dict[str, Any] = json.loads(encode(frame))
    return result
