"""The pipeline writes webhooks with their events, on both backends: which events, for
whom, with what in the body (never chat text, a phone number or the other participant's
id), and chat coalesced per recipient and session."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from tests.conftest import NEEDS_PG_URL, PG_URL
from tests.pipeline_run import NOW, policy, run
from worksession.geo import Fix
from worksession.kit.db import Database
from worksession.models import WebhookDelivery
from worksession.pipeline import commands as c
from worksession.pipeline.rows import Policy
from worksession.webhooks import deliveries
from worksession.webhooks.deliveries import Claimed
from worksession.webhooks.dispatcher import Dispatcher
from worksession.webhooks.outbox import RETRY_FOR, WEBHOOK_TYPES

ON = dataclasses.replace(policy(), webhooks=True, webhook_chat_window=timedelta(seconds=30))
BODY_KEYS = {"id", "type", "user_id", "user_type", "work_id", "session_id", "seq", "occurred_at"}
TEXT = "meet me at the blue door, code 4471"
PHONE = "5551234567"


async def rows(db: Database) -> list[WebhookDelivery]:
    async with db.transaction() as s:
        found = await s.execute(select(WebhookDelivery).order_by(WebhookDelivery.created_at))
        return list(found.scalars())


def body_of(row: WebhookDelivery) -> dict[str, Any]:
    claimed = Claimed(
        **{f.name: getattr(row, f.name) for f in dataclasses.fields(Claimed)},
    )
    value: dict[str, Any] = json.loads(claimed.body())
    return value


async def step(db: Database, command: c.Command, at: datetime, rules: Policy = ON) -> Any:
    outcome, _ = await run(db, command, now=at, rules=rules)
    return outcome


async def session_of(db: Database, seeker: str, provider: str, at: datetime) -> uuid.UUID:
    created = await step(db, c.CreateWorkOrder(seeker, (provider,), {"note": TEXT}), at)
    work_id = created.reply.value.work_id
    accept = c.AcceptWork(work_id, provider)
    await step(db, accept, at)
    return accept.session_id


async def test_nothing_is_written_with_webhooks_off(db: Database) -> None:
    await run(db, c.CreateWorkOrder("s-off", ("p-off",), {}))
    assert await rows(db) == []


async def test_every_event_type_names_only_its_recipient(db: Database) -> None:
    at = NOW
    # work_request (both providers), work_rejected: the only provider declines.
    created = await step(db, c.CreateWorkOrder("s-rej", ("p-rej",), {"phone": PHONE}), at)
    await step(db, c.DeclineWork(created.reply.value.work_id, "p-rej"), at)
    # work_expired: nobody answers.
    await step(db, c.CreateWorkOrder("s-exp", ("p-exp",), {}), at)
    await step(db, c.ExpireOffers(), at + timedelta(minutes=5))
    # work_accepted, chat both ways, nearby, arrived, completed by the provider.
    sid = await session_of(db, "s-1", "p-1", at)
    await step(db, c.SelectMediums(sid, "s-1", {"phone": PHONE}), at)
    await step(db, c.ShareMediums(sid, "p-1", {"phone": "5559876543"}), at)
    await step(db, c.SendMessage(sid, c.Actor("p-1", "provider"), TEXT), at)
    await step(db, c.SendMessage(sid, c.Actor("s-1", "seeker"), TEXT + "!"), at)
    seeker_fix = Fix(lat=12.9716, lng=77.5946, accuracy_m=5, recorded_at=None)
    await step(db, c.ReportLocation(sid, c.Actor("s-1", "seeker"), seeker_fix), at)
    for minutes, lng in ((2, 77.5966), (4, 77.5948)):
        fix = Fix(lat=12.9716, lng=lng, accuracy_m=5, recorded_at=None)
        moved = at + timedelta(minutes=minutes)
        await step(db, c.ReportLocation(sid, c.Actor("p-1", "provider"), fix), moved)
    await step(db, c.CompleteSession(sid, "p-1"), at + timedelta(minutes=6))
    # connection_cancelled by the seeker.
    other = await session_of(db, "s-2", "p-2", at)
    await step(db, c.CancelSession(other, c.Actor("s-2", "seeker")), at)

    found = await rows(db)
    bodies = [body_of(r) for r in found]
    assert {b["type"] for b in bodies} == set(WEBHOOK_TYPES)
    recipients = {(b["type"], b["user_type"], b["user_id"]) for b in bodies}
    assert recipients == {
        ("work_request", "provider", "p-rej"),
        ("work_rejected", "seeker", "s-rej"),
        ("work_request", "provider", "p-exp"),
        ("work_expired", "seeker", "s-exp"),
        ("work_request", "provider", "p-1"),
        ("work_accepted", "seeker", "s-1"),
        ("chat_message", "seeker", "s-1"),
        ("chat_message", "provider", "p-1"),
        ("provider_nearby", "seeker", "s-1"),
        ("provider_arrived", "seeker", "s-1"),
        ("session_completed", "seeker", "s-1"),
        ("work_request", "provider", "p-2"),
        ("work_accepted", "seeker", "s-2"),
        ("connection_cancelled", "provider", "p-2"),
    }
    participants = {"s-rej", "p-rej", "s-exp", "p-exp", "s-1", "p-1", "s-2", "p-2"}
    for body in bodies:
        assert set(body) == BODY_KEYS
        text = json.dumps(body)
        assert TEXT not in text
        assert PHONE not in text
        assert "5559876543" not in text
        assert not (participants - {body["user_id"]}) & set(_strings(body)), body
        if body["session_id"] is None:
            assert body["seq"] is None
            assert isinstance(body["work_id"], int)
        else:
            assert isinstance(body["seq"], int)
    chat = {b["user_type"]: b for b in bodies if b["type"] == "chat_message"}
    assert chat["seeker"]["seq"] < chat["provider"]["seq"]


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return [value] if isinstance(value, str) else []


async def test_internal_endings_tell_both(db: Database) -> None:
    sid = await session_of(db, "s-3", "p-3", NOW)
    await step(db, c.CompleteSession(sid, None), NOW)
    other = await session_of(db, "s-4", "p-4", NOW)
    await step(db, c.CancelSession(other, None), NOW)
    ended = {(r.type, r.user_id) for r in await rows(db) if r.type.startswith(("session", "conn"))}
    assert ended == {
        ("session_completed", "s-3"),
        ("session_completed", "p-3"),
        ("connection_cancelled", "s-4"),
        ("connection_cancelled", "p-4"),
    }


async def test_twenty_messages_wait_as_one_webhook_with_the_last_seq(db: Database) -> None:
    sid = await session_of(db, "s-5", "p-5", NOW)
    sender = c.Actor("p-5", "provider")
    seqs = []
    for i in range(20):
        outcome = await step(db, c.SendMessage(sid, sender, f"{TEXT} {i}"), NOW)
        seqs.append(outcome.events[-1].seq)
    chat = [r for r in await rows(db) if r.type == "chat_message"]
    assert len(chat) == 1
    assert chat[0].seq == seqs[-1]
    assert chat[0].next_attempt_at == NOW  # the leading edge: due at once


async def test_a_message_after_one_went_out_waits_for_the_window(db: Database) -> None:
    sid = await session_of(db, "s-6", "p-6", NOW)
    sender = c.Actor("s-6", "seeker")
    await step(db, c.SendMessage(sid, sender, "first"), NOW)
    async with db.transaction() as s:  # the dispatcher takes it
        (first,) = [
            r
            for r in await deliveries.claim(
                s, now=NOW, lease_until=NOW + timedelta(seconds=15), limit=10
            )
            if r.type == "chat_message"
        ]
    later = NOW + timedelta(seconds=5)
    for text in ("second", "third"):
        last = await step(db, c.SendMessage(sid, sender, text), later)
    chat = [r for r in await rows(db) if r.type == "chat_message"]
    waiting = [r for r in chat if r.id != first.id]
    assert len(waiting) == 1
    assert waiting[0].seq == last.events[-1].seq
    assert waiting[0].next_attempt_at == NOW + timedelta(seconds=30)  # the trailing edge
    assert waiting[0].attempts == 0


async def test_a_skipped_webhook_opens_no_window(db: Database) -> None:
    sid = await session_of(db, "s-7", "p-7", NOW)
    sender = c.Actor("s-7", "seeker")
    await step(db, c.SendMessage(sid, sender, "first"), NOW)
    async with db.transaction() as s:
        claimed = await deliveries.claim(
            s, now=NOW, lease_until=NOW + timedelta(seconds=15), limit=10
        )
        await deliveries.skipped(s, claimed, NOW)  # the recipient was online
    later = NOW + timedelta(seconds=5)
    await step(db, c.SendMessage(sid, sender, "second"), later)
    (waiting,) = [r for r in await rows(db) if r.type == "chat_message" and r.attempts == 0]
    assert waiting.next_attempt_at == later


async def _claim_chat(db: Database, at: datetime) -> Claimed:
    async with db.transaction() as s:
        claimed = await deliveries.claim(
            s, now=at, lease_until=at + timedelta(seconds=15), limit=10
        )
    (chat,) = [r for r in claimed if r.type == "chat_message"]
    return chat


async def test_a_chat_webhook_held_for_a_re_check_takes_later_messages(db: Database) -> None:
    sid = await session_of(db, "s-9", "p-9", NOW)
    sender = c.Actor("s-9", "seeker")
    await step(db, c.SendMessage(sid, sender, "first"), NOW)
    held = await _claim_chat(db, NOW)
    recheck_at = NOW + timedelta(seconds=45)
    async with db.transaction() as s:  # the recipient looked online: look again later
        await deliveries.recheck_later(s, [held], NOW, recheck_at)
    later = NOW + timedelta(seconds=5)
    last = await step(db, c.SendMessage(sid, sender, "second"), later)
    (chat,) = [r for r in await rows(db) if r.type == "chat_message"]
    assert chat.id == held.id
    assert (chat.status, chat.attempts, chat.first_sent_at) == ("pending", 0, None)
    assert chat.seq == last.events[-1].seq
    assert chat.next_attempt_at == recheck_at
    assert chat.online_at == NOW
    # Online again at the re-check: skipped now, and it opened no window.
    again = await _claim_chat(db, recheck_at)
    assert again.online_at == NOW
    async with db.transaction() as s:
        await deliveries.skipped(s, [again], recheck_at)
    after = recheck_at + timedelta(seconds=1)
    await step(db, c.SendMessage(sid, sender, "third"), after)
    (waiting,) = [r for r in await rows(db) if r.type == "chat_message" and r.status == "pending"]
    assert waiting.next_attempt_at == after
    assert waiting.online_at is None


async def skipped_for_a_newer(db: Database, held: Claimed) -> WebhookDelivery:
    """The held chat webhook is skipped; returns the one newer row of its chat."""
    chat = {r.id: r for r in await rows(db) if r.type == "chat_message"}
    assert chat[held.id].status == "skipped"
    (newer,) = [r for i, r in chat.items() if i != held.id]
    return newer


async def test_a_held_chat_webhook_superseded_by_a_newer_open_one_is_skipped(
    db: Database,
) -> None:
    sid = await session_of(db, "s-10", "p-10", NOW)
    sender = c.Actor("s-10", "seeker")
    await step(db, c.SendMessage(sid, sender, "first"), NOW)
    held = await _claim_chat(db, NOW)
    # A message between the claim and the presence check: a new open row.
    await step(db, c.SendMessage(sid, sender, "second"), NOW)
    async with db.transaction() as s:
        await deliveries.recheck_later(s, [held], NOW, NOW + timedelta(seconds=45))
    newer = await skipped_for_a_newer(db, held)
    # It takes the held one's place in the re-check: due then, online then, and the 30 s
    # window it got from the held one's claim is void (nothing went out).
    assert (newer.status, newer.next_attempt_at, newer.online_at) == (
        "pending",
        NOW + timedelta(seconds=45),
        NOW,
    )


@pytest.mark.skipif(not PG_URL, reason=NEEDS_PG_URL)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_re_check_racing_a_batch_that_opens_a_newer_row_settles_on_the_newer(
    db: Database,
) -> None:
    # Only PostgreSQL has a second writer: a batch inserts the newer open row and has not
    # committed when the re-check looks for one, so the re-check's re-open meets it in the
    # unique index, waits, and fails once the batch commits. The dispatcher's second try
    # sees the newer row and skips the held one in its favour.
    sid = await session_of(db, "s-12", "p-12", NOW)
    await step(db, c.SendMessage(sid, c.Actor("s-12", "seeker"), "first"), NOW)
    held = await _claim_chat(db, NOW)
    batch = await asyncpg.connect(
        make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        await batch.execute("BEGIN")
        await batch.execute(
            "INSERT INTO webhook_deliveries (id, type, user_id, user_type, work_id,"
            " session_id, seq, occurred_at, coalesce_key, status, attempts, next_attempt_at,"
            " give_up_at, created_at, updated_at)"
            " SELECT $1, type, user_id, user_type, work_id, session_id, seq + 1, occurred_at,"
            " coalesce_key, 'pending', 0, next_attempt_at, give_up_at, created_at, updated_at"
            " FROM webhook_deliveries WHERE id = $2",
            uuid.uuid4(),
            held.id,
        )
        dispatcher = Dispatcher(
            db, url="http://127.0.0.1:9/", secret="s", timeout_s=1.0, online=nobody_online
        )
        holding = asyncio.ensure_future(dispatcher._hold([held], []))
        await asyncio.sleep(0.5)
        assert not holding.done()  # waiting on the batch's row in the unique index
        await batch.execute("COMMIT")
        await asyncio.wait_for(holding, 10)
        await dispatcher.stop()
    finally:
        await batch.close()
    newer = await skipped_for_a_newer(db, held)
    assert newer.status == "pending"
    assert newer.online_at is not None


async def nobody_online(users: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    return set()


async def test_the_sweep_removes_finished_webhooks_after_their_retention(db: Database) -> None:
    await step(db, c.CreateWorkOrder("s-8", ("p-8", "p-9", "p-10"), {}), NOW)
    found = await rows(db)
    statuses = {found[0].id: "delivered", found[1].id: "dead", found[2].id: "pending"}
    async with db.transaction() as s:
        for row_id, status in statuses.items():
            await s.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == row_id).values(status=status)
            )
    swept = await step(db, c.SweepExpired(), NOW + timedelta(days=6))
    assert sum(s.webhooks for s in swept.swept) == 0
    # Delivered 7 days ago; pending 7 days past its give_up_at (nobody sends it: the URL
    # was unset since). Dead ones stay for 30 days.
    eight_days = NOW + timedelta(days=8)
    swept = await step(db, c.SweepExpired(), eight_days)
    assert sum(s.webhooks for s in swept.swept) == 2
    assert {r.status for r in await rows(db)} == {"dead"}
    swept = await step(db, c.SweepExpired(), NOW + timedelta(days=31))
    assert sum(s.webhooks for s in swept.swept) == 1
    assert await rows(db) == []


async def test_a_work_request_is_given_up_when_its_offer_expires(db: Database) -> None:
    created = await step(db, c.CreateWorkOrder("s-11", ("p-11",), {}), NOW)
    await step(db, c.DeclineWork(created.reply.value.work_id, "p-11"), NOW)
    found = {r.type: r for r in await rows(db)}
    offer_expires = created.reply.value.expires_at
    assert NOW < offer_expires < NOW + RETRY_FOR
    assert found["work_request"].give_up_at == offer_expires
    assert found["work_rejected"].give_up_at == NOW + RETRY_FOR


async def test_a_chat_webhook_that_died_unsent_comes_back_closed_beside_a_newer_open_one(
    db: Database,
) -> None:
    sid = await session_of(db, "s-13", "p-13", NOW)
    sender = c.Actor("s-13", "seeker")
    await step(db, c.SendMessage(sid, sender, "first"), NOW)
    (dead,) = [r for r in await rows(db) if r.type == "chat_message"]
    async with db.transaction() as s:
        # Past its give-up time before anyone claimed it: dead, never sent.
        await s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == dead.id)
            .values(give_up_at=NOW - timedelta(seconds=1))
        )
        assert await deliveries.give_up_overdue(s, NOW) == 1
    await step(db, c.SendMessage(sid, sender, "second"), NOW)  # a newer open row
    async with db.transaction() as s:
        view, retried = await deliveries.retry_dead(s, dead.id, NOW)
    assert retried
    assert view is not None
    assert view.status == "pending"
    chat = {r.id: r for r in await rows(db) if r.type == "chat_message"}
    assert chat[dead.id].first_sent_at == NOW  # not open: later messages do not merge in
    assert len(chat) == 2
