"""The dispatcher against a real HTTP receiver, on both backends: who gets a webhook, what
it carries and how it is signed, retries with the same id, chat coalescing over time, and a
receiver that hangs delaying nobody else."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.pipeline_run import Recorder, pipeline_for, policy
from tests.webhooks.receiver import HANG, Receiver
from worksession.eventlog.outbox import user_channel
from worksession.kit.broker import MemoryBroker
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.models import WebhookDelivery
from worksession.pipeline import commands as c
from worksession.pipeline.runner import Pipeline
from worksession.webhooks import deliveries
from worksession.webhooks.breaker import Breaker
from worksession.webhooks.dispatcher import Dispatcher, backoff_s, online_in
from worksession.webhooks.outbox import RETRY_FOR
from worksession.webhooks.verify import verify_worksession_signature

SECRET = "whsec-test-0123456789abcdef0123456789abcdef"


@dataclasses.dataclass
class Rig:
    pipeline: Pipeline
    dispatcher: Dispatcher
    presence: MemoryBroker


@asynccontextmanager
async def rig(
    db: Database,
    receiver: Receiver,
    *,
    window_s: float = 30.0,
    timeout_s: float = 5.0,
    clock: Callable[[], datetime] = utcnow,
    url: str | None = None,
    recheck_s: float = 0.5,
    breaker: Breaker | None = None,
    offer_ttl_s: float = 120.0,
) -> AsyncIterator[Rig]:
    rules = dataclasses.replace(
        policy(offer_ttl_s=offer_ttl_s),
        webhooks=True,
        webhook_chat_window=timedelta(seconds=window_s),
    )
    pipeline = pipeline_for(db, Recorder(), now=None, rules=rules)
    presence = MemoryBroker()
    dispatcher = Dispatcher(
        db,
        url=receiver.url if url is None else url,
        secret=SECRET,
        timeout_s=timeout_s,
        online=online_in(presence),
        clock=clock,
        recheck_s=recheck_s,
        breaker=breaker,
    )
    pipeline.webhooks_written = dispatcher.wake
    await dispatcher.start()
    try:
        yield Rig(pipeline, dispatcher, presence)
    finally:
        await dispatcher.stop(grace_s=0.1)
        await pipeline.wait_idle()
        await pipeline.store.dispose()


async def statuses(db: Database) -> dict[str, str]:
    async with db.transaction() as s:
        found = await s.execute(select(WebhookDelivery.user_id, WebhookDelivery.status))
        return {str(user): str(status) for user, status in found.all()}


async def wait_for_statuses(db: Database, expected: dict[str, str], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (found := await statuses(db)) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert found == expected


async def test_offline_provider_gets_one_signed_work_request_online_one_none(
    db: Database,
) -> None:
    async with Receiver() as receiver, rig(db, receiver) as r:
        await r.presence.join(user_channel("provider", "p-on"), "socket-1", 5)
        created = await r.pipeline.submit(c.CreateWorkOrder("s-1", ("p-off", "p-on"), {}))
        (hook,) = await receiver.wait_for(1)
        # Online at the re-check too (0.5 s here): skipped.
        await wait_for_statuses(db, {"p-off": "delivered", "p-on": "skipped"})
        await asyncio.sleep(1.5)  # a poll or more: nothing else comes
        assert len(receiver.received) == 1
    body = hook.json
    assert body["type"] == "work_request"
    assert body["user_id"] == "p-off"
    assert body["user_type"] == "provider"
    assert body["work_id"] == created.reply.value.work_id  # type: ignore[attr-defined]
    assert body["session_id"] is None
    assert body["seq"] is None
    assert hook.headers["content-type"] == "application/json"
    signature = hook.headers["worksession-signature"]
    assert verify_worksession_signature(hook.body, signature, SECRET)
    assert not verify_worksession_signature(hook.body, signature, SECRET + "x")
    assert await statuses(db) == {"p-off": "delivered", "p-on": "skipped"}


async def test_500_three_times_then_200_is_the_same_webhook_four_times(db: Database) -> None:
    async with Receiver(answers=[500, 500, 500, 200]) as receiver, rig(db, receiver) as r:
        await r.pipeline.submit(c.CreateWorkOrder("s-2", ("p-2",), {}))
        hooks = await receiver.wait_for(4, timeout=20)
        await asyncio.sleep(1.2)
        assert len(receiver.received) == 4
    assert len({h.body for h in hooks}) == 1  # same id, same body
    gaps = [b.at - a.at for a, b in itertools.pairwise(hooks)]
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert 0.75 <= gaps[0] <= 1.5, gaps
    assert gaps[2] >= 3.0, gaps
    async with db.transaction() as s:
        (row,) = (await s.execute(select(WebhookDelivery))).scalars()
    assert (row.status, row.attempts, row.last_error) == ("delivered", 4, None)


async def test_a_hanging_receiver_delays_nobody_else(db: Database) -> None:
    def hang_for_slow(body: dict[str, object]) -> int | None:
        return HANG if body["user_id"] == "p-slow" else 200

    async with (
        Receiver(choose=hang_for_slow) as receiver,
        rig(db, receiver, timeout_s=1.0) as r,
    ):
        await r.pipeline.submit(c.CreateWorkOrder("s-3", ("p-slow",), {}))
        await receiver.wait_for(1)
        started = time.monotonic()
        await r.pipeline.submit(c.CreateWorkOrder("s-4", ("p-fast",), {}))
        (fast,) = await receiver.wait_for(1, user_id="p-fast", timeout=5)
        assert fast.at - started < 0.5
        # The hanging one times out after 1 s and is tried again, same id.
        slow = await receiver.wait_for(2, user_id="p-slow", timeout=10)
        assert slow[0].body == slow[1].body
    async with db.transaction() as s:
        row = (
            await s.execute(select(WebhookDelivery).where(WebhookDelivery.user_id == "p-slow"))
        ).scalar_one()
    assert row.last_error == "no answer within 1 s"


async def test_chat_coalesces_leading_then_trailing_edge(db: Database) -> None:
    async with Receiver() as receiver, rig(db, receiver, window_s=2.0) as r:
        created = await r.pipeline.submit(c.CreateWorkOrder("s-5", ("p-5",), {}))
        accept = c.AcceptWork(created.reply.value.work_id, "p-5")  # type: ignore[attr-defined]
        await r.pipeline.submit(accept)
        sender = c.Actor("p-5", "provider")
        seqs = []
        for i in range(20):
            sent = await r.pipeline.submit(c.SendMessage(accept.session_id, sender, f"hi {i}"))
            seqs.append(sent.events[-1].seq)
            await asyncio.sleep(0.02)
        chat = await receiver.wait_for(2, kind="chat_message", timeout=10)
        await asyncio.sleep(2.5)  # a whole window more: nothing else
        chat = receiver.of_type("chat_message")
    assert len(chat) == 2, [h.json for h in chat]
    first, second = (h.json for h in chat)
    assert first["id"] != second["id"]
    assert first["user_id"] == "s-5"
    assert second["seq"] == seqs[-1]
    assert first["seq"] < second["seq"]
    assert chat[1].at - chat[0].at >= 1.9


A_WEEK_S = 7 * 24 * 3600.0
"""An offer that outlives the 24 hours of retries: its ``work_request`` gives up at 24 h."""


def the_last_moment() -> datetime:
    """The dispatcher's clock 0.8 s short of a fresh row's 24 hours (an offer that lasts
    longer, ``A_WEEK_S``): its first attempt
    goes out (if sent within 0.8 s of the write) and its failure is final (the first retry,
    0.8-1.2 s later, would be past it). Set before the dispatcher starts, so no claim can
    race a test's change of ``give_up_at``."""
    return utcnow() + RETRY_FOR - timedelta(seconds=0.8)


def a_day_later() -> datetime:
    """The dispatcher's clock past every row's 24 hours."""
    return utcnow() + timedelta(hours=25)


async def test_a_webhook_past_its_give_up_time_is_dead_and_never_sent(db: Database) -> None:
    async with Receiver() as receiver, rig(db, receiver, clock=a_day_later) as r:
        await r.pipeline.submit(c.CreateWorkOrder("s-g", ("p-g",), {}))
        await wait_for_statuses(db, {"p-g": "dead"})
    assert receiver.received == []
    async with db.transaction() as s:
        (row,) = (await s.execute(select(WebhookDelivery))).scalars()
    assert row.last_error == deliveries.GAVE_UP


async def test_a_dead_webhook_sent_again_by_hand(db: Database) -> None:
    async with (
        Receiver(answers=[500]) as receiver,
        rig(db, receiver, clock=the_last_moment, offer_ttl_s=A_WEEK_S) as r,
    ):
        await r.pipeline.submit(c.CreateWorkOrder("s-6", ("p-6",), {}))
        await receiver.wait_for(1)
        await asyncio.sleep(0.5)
        assert await statuses(db) == {"p-6": "dead"}
        async with db.transaction() as s:
            (dead,) = await deliveries.listing(s, "dead", 10)
            view, retried = await deliveries.retry_dead(s, dead.id, utcnow())
        assert retried
        assert view is not None
        assert view.status == "pending"
        assert view.attempts == 0  # its backoff starts from 1 s again
        r.dispatcher.wake()
        await receiver.wait_for(2)
        await asyncio.sleep(0.3)
    assert await statuses(db) == {"p-6": "delivered"}
    assert dead.last_error == "HTTP 500"
    assert receiver.received[0].body == receiver.received[1].body


def test_backoff_doubles_to_ten_minutes_with_jitter() -> None:
    assert [backoff_s(n, lambda: 0.5) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_s(30, lambda: 0.5) == 600.0
    assert backoff_s(1, lambda: 0.0) == pytest.approx(0.8)
    assert backoff_s(1, lambda: 1.0) == pytest.approx(1.2)


async def test_an_unexpected_exception_is_a_failed_attempt_and_ends_dead(db: Database) -> None:
    # httpx.InvalidURL is not an httpx.HTTPError: it used to escape the send, leave the
    # outcome unwritten and the row to be sent again every lease, forever.
    async with (
        Receiver() as receiver,
        rig(
            db, receiver, clock=the_last_moment, url="http://[::1/hooks", offer_ttl_s=A_WEEK_S
        ) as r,
    ):
        await r.pipeline.submit(c.CreateWorkOrder("s-7", ("p-7",), {}))
        for _ in range(50):
            await asyncio.sleep(0.1)
            if await statuses(db) == {"p-7": "dead"}:
                break
    async with db.transaction() as s:
        (row,) = (await s.execute(select(WebhookDelivery))).scalars()
    assert (row.status, row.attempts, row.last_error) == ("dead", 1, "InvalidURL")
    assert receiver.received == []


def test_backoff_never_overflows() -> None:
    assert backoff_s(1025, lambda: 0.5) == 600.0
    assert backoff_s(10**6, lambda: 0.5) == 600.0
    assert backoff_s(0, lambda: 0.5) == 1.0


async def test_online_when_due_but_gone_at_the_re_check_gets_the_webhook(db: Database) -> None:
    # A locked phone's socket lingers until the ping timeout: "online" when the webhook
    # falls due, gone by the re-check.
    async with Receiver() as receiver, rig(db, receiver, recheck_s=1.0) as r:
        channel = user_channel("seeker", "s-8")
        await r.presence.join(channel, "socket-1", 5)
        created = await r.pipeline.submit(c.CreateWorkOrder("s-8", ("p-8",), {}))
        accept = c.AcceptWork(created.reply.value.work_id, "p-8")  # type: ignore[attr-defined]
        await r.pipeline.submit(accept)
        sender = c.Actor("p-8", "provider")
        await r.pipeline.submit(c.SendMessage(accept.session_id, sender, "one"))
        await asyncio.sleep(0.3)  # claimed and held back: the seeker is "online"
        assert receiver.of_type("chat_message") == []
        await r.presence.leave(channel, "socket-1")
        # A message meanwhile merges into the held one: one webhook, the latest seq.
        last = await r.pipeline.submit(c.SendMessage(accept.session_id, sender, "two"))
        (chat,) = await receiver.wait_for(1, kind="chat_message", timeout=5)
        (accepted,) = await receiver.wait_for(1, kind="work_accepted", timeout=5)
        await asyncio.sleep(1.5)
        assert len(receiver.of_type("chat_message")) == 1
    assert chat.json["seq"] == last.events[-1].seq
    assert chat.at - accepted.at < 0.5  # both held, both sent at the re-check
    async with db.transaction() as s:
        found = await s.execute(
            select(WebhookDelivery.type, WebhookDelivery.status, WebhookDelivery.attempts)
        )
        rows = {kind: (status, attempts) for kind, status, attempts in found.all()}
    assert rows["chat_message"] == ("delivered", 1)
    assert rows["work_accepted"] == ("delivered", 1)


async def test_paused_it_claims_nothing_more(db: Database) -> None:
    # A shutdown pauses the dispatcher before it closes the sockets with 1012.
    async with Receiver() as receiver, rig(db, receiver) as r:
        await r.dispatcher.pause()
        await r.pipeline.submit(c.CreateWorkOrder("s-9", ("p-9",), {}))
        r.dispatcher.wake()
        await asyncio.sleep(1.5)
        assert receiver.received == []
    async with db.transaction() as s:
        (row,) = (await s.execute(select(WebhookDelivery))).scalars()
    assert (row.status, row.attempts) == ("pending", 0)


async def test_a_failing_receiver_gets_probes_not_every_retry_then_the_queue_drains(
    db: Database,
) -> None:
    failing = True

    def answer(body: dict[str, object]) -> int:
        return 503 if failing else 200

    breaker = Breaker(clock=time.monotonic, first_cooldown_s=0.3, max_cooldown_s=0.6)
    async with Receiver(choose=answer) as receiver, rig(db, receiver, breaker=breaker) as r:
        providers = tuple(f"p-b{k}" for k in range(20))
        await r.pipeline.submit(c.CreateWorkOrder("s-b", providers, {}))
        await receiver.wait_for(20)  # one burst, sent before any answer came back
        await asyncio.sleep(3.0)
        # Without the breaker: every row again after ~1 s and ~3 s, 40 more requests. With
        # it: one probe per cool-down (0.3 s, then 0.6 s) once rows fall due again.
        retried = len(receiver.received) - 20
        assert 1 <= retried <= 8, retried
        failing = False
        await wait_for_statuses(db, dict.fromkeys(providers, "delivered"), timeout=10)
    assert {h.json["user_id"] for h in receiver.received} == set(providers)
