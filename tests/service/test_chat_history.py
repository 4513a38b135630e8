"""Chat history (PROTOCOL 7): the participant check and the expiry boundary, at the service."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

import pytest

from tests.factories import make_chat_message, make_work_session
from worksession.chat.history import history_page
from worksession.errors import SessionNotFound
from worksession.kit.clock import utcnow
from worksession.kit.db import Database


async def test_a_message_expiring_exactly_now_is_gone(db: Database) -> None:
    now = utcnow()
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id="s", provider_id="p", state="completed")
        await make_chat_message(s, session=session, expires_at=now)
        later = await make_chat_message(
            s, session=session, expires_at=now + timedelta(microseconds=1)
        )

    async with db.transaction() as s:
        page = await history_page(
            s, session_id=session.session_id, user_id="p", role="provider", now=now
        )

    assert [m.message_id for m in page.messages] == [later.message_id]
    assert page.next_cursor is None


@pytest.mark.parametrize(("user_id", "role"), [("s", "provider"), ("x", "seeker")])
async def test_a_non_participant_is_told_session_not_found(
    db: Database, user_id: str, role: Literal["seeker", "provider"]
) -> None:
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id="s", provider_id="p")

    for session_id in (session.session_id, uuid.uuid4()):
        async with db.transaction() as s:
            with pytest.raises(SessionNotFound):
                await history_page(
                    s,
                    session_id=session_id,
                    user_id=user_id,
                    role=role,
                )


@pytest.mark.parametrize("limit", [0, 101])
async def test_a_limit_outside_1_to_100_is_a_programming_error(db: Database, limit: int) -> None:
    async with db.transaction() as s:
        with pytest.raises(ValueError, match="limit"):
            await history_page(s, session_id=uuid.uuid4(), user_id="s", role="seeker", limit=limit)
