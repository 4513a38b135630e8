"""Typing indicators (PROTOCOL 5): relayed to the other participant, stopped by a timer.

Typing is ephemeral: nothing is logged and no table row is written per keystroke. Each
worker relays what its own sockets send and keeps one timer per (session, role) that is
typing: a ``true`` not repeated within the timeout becomes a ``false`` published through
the broker. A repeated ``true`` only moves the timer (clients repeat it every few seconds
while typing, and the other side already shows the indicator); a ``false`` when not typing
sends nothing.

A user typing on two devices connected to two workers may have the indicator started
twice; that is harmless, and cheaper than sharing the state.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from worksession.eventlog.outbox import Outbox, Recipient
from worksession.pipeline.rows import SessionRow
from worksession.protocol.outbound import TypingIndicatorOut, encode

Publish = Callable[[Outbox], Coroutine[Any, Any, None]]


def typing_frame(session_id: uuid.UUID, sender_type: str, is_typing: bool) -> TypingIndicatorOut:
    return TypingIndicatorOut(
        type="typing_indicator",
        session_id=str(session_id),
        sender_type="seeker" if sender_type == "seeker" else "provider",
        is_typing=is_typing,
    )


def _other(session: SessionRow, role: str) -> Recipient:
    return ("provider", session.provider_id) if role == "seeker" else ("seeker", session.seeker_id)


class TypingRelay:
    """One per worker process."""

    def __init__(self, publish: Publish, *, timeout_s: float) -> None:
        self._publish = publish
        self._timeout_s = timeout_s
        self._timers: dict[tuple[uuid.UUID, str], asyncio.TimerHandle] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def typing(self, session: SessionRow, role: str, is_typing: bool) -> Outbox:
        """What to publish for this indicator (the caller checked that ``role`` may type in
        the live ``session``); schedules or cancels the automatic stop."""
        key = (session.session_id, role)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        outbox = Outbox()
        if is_typing:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(self._timeout_s, self._stop, session, role)
        if is_typing != (timer is not None):
            outbox.frame(
                (_other(session, role),), encode(typing_frame(session.session_id, role, is_typing))
            )
        return outbox

    @property
    def typing_now(self) -> int:
        """Indicators currently shown by this worker (for tests and metrics)."""
        return len(self._timers)

    def _stop(self, session: SessionRow, role: str) -> None:
        self._timers.pop((session.session_id, role), None)
        outbox = Outbox()
        outbox.frame(
            (_other(session, role),), encode(typing_frame(session.session_id, role, False))
        )
        task = asyncio.get_running_loop().create_task(self._publish(outbox))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def forget(self, session_id: uuid.UUID) -> None:
        """The session ended: its indicators stop without a word (the end closes the
        sockets anyway, and a late ``false`` would reach nobody who cares)."""
        for role in ("seeker", "provider"):
            timer = self._timers.pop((session_id, role), None)
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
