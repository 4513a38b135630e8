"""The outbox rows' moves outside the pipeline, on both backends: an attempt's outcome is
written only for the attempt that was claimed, and rows past their give-up time are
marked dead without being sent."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sqlalchemy import select, update

from tests.pipeline_run import NOW, Recorder, pipeline_for, policy
from worksession.kit.db import Database
from worksession.models import WebhookDelivery as W
from worksession.pipeline import commands as c
from worksession.webhooks import deliveries
from worksession.webhooks.deliveries import Outcome

LEASE = timedelta(seconds=15)


async def write_work_requests(db: Database, *providers: str) -> None:
    rules = dataclasses.replace(policy(), webhooks=True)
    pipeline = pipeline_for(db, Recorder(), now=NOW, rules=rules)
    try:
        await pipeline.submit(c.CreateWorkOrder("s-d", providers, {}))
    finally:
        await pipeline.wait_idle()
        await pipeline.store.dispose()


async def by_user(db: Database) -> dict[str, W]:
    async with db.transaction() as s:
        return {row.user_id: row for row in (await s.execute(select(W))).scalars()}


async def test_outcomes_are_written_in_one_go_only_for_the_attempt_claimed(db: Database) -> None:
    await write_work_requests(db, "p-ok", "p-retry", "p-dead", "p-taken")
    async with db.transaction() as s:
        claimed = {
            row.user_id: row
            for row in await deliveries.claim(s, now=NOW, lease_until=NOW + LEASE, limit=10)
        }
    # Another worker took p-taken over after our lease ran out: its attempt counts, not ours.
    async with db.transaction() as s:
        await s.execute(update(W).where(W.user_id == "p-taken").values(attempts=2))
    at = NOW + timedelta(seconds=1)
    retry_at = at + timedelta(seconds=2)
    async with db.transaction() as s:
        await deliveries.record_outcomes(
            s,
            [
                Outcome(claimed["p-ok"], at),
                Outcome(claimed["p-retry"], at, "HTTP 503", retry_at),
                Outcome(claimed["p-dead"], at, "x" * 300),
                Outcome(claimed["p-taken"], at, "HTTP 500", retry_at),
            ],
        )
    rows = await by_user(db)
    ok, retry, dead, taken = (rows[u] for u in ("p-ok", "p-retry", "p-dead", "p-taken"))
    assert (ok.status, ok.delivered_at, ok.last_error) == ("delivered", at, None)
    assert ok.next_attempt_at == NOW + LEASE  # left as the claim set it
    assert (retry.status, retry.next_attempt_at, retry.last_error) == (
        "pending",
        retry_at,
        "HTTP 503",
    )
    assert retry.delivered_at is None
    assert (dead.status, dead.last_error) == ("dead", "x" * 200)
    assert (taken.status, taken.attempts, taken.last_error) == ("pending", 2, None)
    assert taken.next_attempt_at == NOW + LEASE


async def test_rows_past_their_give_up_time_are_dead_unless_leased(db: Database) -> None:
    await write_work_requests(db, "p-old", "p-failed", "p-leased", "p-young")
    async with db.transaction() as s:
        await s.execute(
            update(W).where(W.user_id != "p-young").values(give_up_at=NOW - timedelta(seconds=1))
        )
        await s.execute(update(W).where(W.user_id == "p-failed").values(last_error="HTTP 503"))
        await s.execute(
            update(W).where(W.user_id == "p-leased").values(next_attempt_at=NOW + LEASE)
        )
    async with db.transaction() as s:
        assert await deliveries.give_up_overdue(s, NOW) == 2
    rows = await by_user(db)
    assert (rows["p-old"].status, rows["p-old"].last_error) == ("dead", deliveries.GAVE_UP)
    # Its last real error is kept: what an operator needs to see.
    assert (rows["p-failed"].status, rows["p-failed"].last_error) == ("dead", "HTTP 503")
    assert rows["p-leased"].status == "pending"  # its attempt is in flight: its outcome rules
    assert rows["p-young"].status == "pending"
    async with db.transaction() as s:
        assert await deliveries.give_up_overdue(s, NOW) == 0


async def test_the_probe_claims_a_row_never_tried_before_older_retries(db: Database) -> None:
    await write_work_requests(db, "p-retried", "p-new")
    async with db.transaction() as s:
        await s.execute(
            update(W)
            .where(W.user_id == "p-retried")
            .values(attempts=3, next_attempt_at=NOW - timedelta(minutes=5))
        )
    async with db.transaction() as s:
        (untried,) = await deliveries.claim(
            s, now=NOW, lease_until=NOW + LEASE, limit=1, untried_first=True
        )
    assert untried.user_id == "p-new"  # the oldest due is p-retried, five minutes overdue
    async with db.transaction() as s:
        await s.execute(update(W).where(W.user_id == "p-new").values(next_attempt_at=NOW))
        (oldest,) = await deliveries.claim(s, now=NOW, lease_until=NOW + LEASE, limit=1)
    assert oldest.user_id == "p-retried"


async def test_a_pass_looks_at_the_oldest_due_only_and_the_next_pass_goes_on(
    db: Database,
) -> None:
    await write_work_requests(db, "p-first", "p-second")
    async with db.transaction() as s:
        await s.execute(update(W).values(give_up_at=NOW - timedelta(seconds=1)))
        await s.execute(
            update(W)
            .where(W.user_id == "p-first")
            .values(next_attempt_at=NOW - timedelta(seconds=10))
        )
    async with db.transaction() as s:
        assert await deliveries.give_up_overdue(s, NOW, oldest=1) == 1
    assert {u: r.status for u, r in (await by_user(db)).items()} == {
        "p-first": "dead",
        "p-second": "pending",
    }
    async with db.transaction() as s:
        assert await deliveries.give_up_overdue(s, NOW, oldest=1) == 1
    assert {r.status for r in (await by_user(db)).values()} == {"dead"}
