"""A batch in which one command hits a bug (an unexpected error, not a refusal of its rules
nor a database that cannot be reached) fails that command alone: the others of the same
batch commit, are answered and published once.

The faults are real code paths of the pipeline, injected where a bug would sit: a deciding
function that raises for one command (registered in front of the real ``decide``), and a
requester (the transport's side) that raises while it is told of the outcome, before or
after the COMMIT. The store, the database and the rest of the pipeline are the real ones.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest
from sqlalchemy import select

from tests.pipeline_run import policy
from tests.service.test_chat_batch import PROVIDER, SEEKER, Published, Recorder, new_session
from worksession.decide import CONSTRAINT_ERRORS, decide
from worksession.eventlog.outbox import user_channel
from worksession.kit.db import Database
from worksession.lifespan import build_store
from worksession.models import ChatMessage, SessionEvent, WorkSession
from worksession.pipeline.commands import Actor, Command, SendMessage
from worksession.pipeline.decision import Decision
from worksession.pipeline.rows import Policy
from worksession.pipeline.runner import Outcome, Pipeline
from worksession.pipeline.world import World

BUG = "trips the bug"


class Bug(Exception):
    """Stands for any programming error: not a WorksessionError, not the database's."""


def buggy_decide(world: World, command: Command, now: datetime) -> Decision:
    if isinstance(command, SendMessage) and command.text == BUG:
        raise Bug("a deciding function failed")
    return decide(world, command, now)


class FailsBeforeCommit(Recorder):
    def before_commit(self, outcome: Outcome) -> None:
        super().before_commit(outcome)
        raise Bug("the transport failed before the commit")


class FailsAfterCommit(Recorder):
    def committed(self, outcome: Outcome) -> None:
        super().committed(outcome)
        raise Bug("the transport failed after the commit")


def _pipeline(db: Database, published: Published, rules: Policy) -> Pipeline:
    return Pipeline(
        build_store(db), published.broker, rules, buggy_decide, conflicts=CONSTRAINT_ERRORS
    )


async def _stored(db: Database, session_id: uuid.UUID) -> tuple[list[str], list[int]]:
    async with db.transaction() as s:
        pk = (
            await s.execute(select(WorkSession.id).where(WorkSession.session_id == session_id))
        ).scalar_one()
        texts = (
            await s.execute(
                select(ChatMessage.message_text)
                .where(ChatMessage.session_id == pk)
                .order_by(ChatMessage.seq)
            )
        ).scalars()
        seqs = (
            await s.execute(
                select(SessionEvent.seq)
                .where(SessionEvent.session_id == pk)
                .order_by(SessionEvent.seq)
            )
        ).scalars()
        return list(texts), list(seqs)


@pytest.mark.parametrize("fault", ["decider", "before_commit", "after_commit"])
async def test_an_unexpected_error_fails_only_its_own_command(db: Database, fault: str) -> None:
    sid = await new_session(db)
    other = await new_session(db, "seeker-u2", "provider-u2")
    published = Published()
    await published.start(("provider", PROVIDER), ("provider", "provider-u2"))
    pipeline = _pipeline(db, published, policy())
    faulty: Recorder = {"before_commit": FailsBeforeCommit, "after_commit": FailsAfterCommit}.get(
        fault, Recorder
    )()
    submitted = [
        (SendMessage(sid, Actor(SEEKER, "seeker"), "one", "c1"), Recorder()),
        (
            SendMessage(sid, Actor(SEEKER, "seeker"), BUG if fault == "decider" else "x", "cx"),
            faulty,
        ),
        (SendMessage(sid, Actor(SEEKER, "seeker"), "two", "c2"), Recorder()),
        (SendMessage(other, Actor("seeker-u2", "seeker"), "elsewhere", "c3"), Recorder()),
    ]
    batches = pipeline.batches
    try:
        results = await asyncio.gather(
            *(pipeline.submit(c, requester=r) for c, r in submitted), return_exceptions=True
        )
    finally:
        await pipeline.store.dispose()
    assert pipeline.batches == batches + 1, "the commands did not go as one batch"
    one, bad, two, elsewhere = results
    for good in (one, two, elsewhere):
        assert isinstance(good, Outcome), good
    if fault == "after_commit":
        # Committed before its answer failed: the submitter learns it stands (a REST
        # caller gets its result; the socket's answer is what failed, and a resend of the
        # frame is answered from the stored row).
        assert isinstance(bad, Outcome), bad
    else:
        assert isinstance(bad, Bug), bad
    for _, requester in (submitted[0], submitted[2], submitted[3]):
        assert requester.calls[-1] == "committed", requester.calls
        assert requester.calls.count("committed") == 1

    texts, seqs = await _stored(db, sid)
    # After the COMMIT a failing answer cannot undo the write: the command stands.
    expected = ["one", "x", "two"] if fault == "after_commit" else ["one", "two"]
    assert texts == expected
    assert seqs == list(range(1, len(expected) + 2))  # chat_ready, then the messages
    assert await _stored(db, other) == (["elsewhere"], [1, 2])
    # Published once each, in order: nothing of the rolled back first attempt.
    assert published.seqs(user_channel("provider", PROVIDER)) == seqs
    assert published.seqs(user_channel("provider", "provider-u2")) == [1, 2]
