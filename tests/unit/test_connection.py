"""A socket's writer on its own: seq tracking, gap healing from the log, and ``resume``.

Real sockets cannot show a gap on demand (the in-process broker never loses a message), so
these drive a :class:`Connection` with a socket that keeps what it was sent and a log that
records what it was asked for.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from worksession.eventlog.events import LoggedEvent
from worksession.realtime.connections import (
    CLOSE_SESSION_ENDED,
    Connection,
    Replay,
    SendEvent,
    SendFrame,
)

SESSION = uuid.UUID("6f1c3a52-0000-4000-8000-000000000001")
AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: int | None = None

    async def send_text(self, data: str) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


class FakeLog:
    """The session's event log: seq 1 is work_accepted, every later one a chat message."""

    def __init__(self, last_seq: int, *, ending: str | None = None) -> None:
        self.events = [event(seq) for seq in range(1, last_seq + 1)]
        if ending is not None:
            self.events.append(event(last_seq + 1, kind=ending))
        self.calls: list[tuple[uuid.UUID, int, int | None]] = []
        self.pages: list[int] = []
        """The rows each read returned."""
        self.broken = False

    async def fetch(
        self, session_id: uuid.UUID, after: int, before: int | None, limit: int
    ) -> list[LoggedEvent]:
        self.calls.append((session_id, after, before))
        if self.broken:
            raise ConnectionError("database unavailable")
        found = [e for e in self.events if e.seq > after and (before is None or e.seq < before)]
        page = found[:limit]
        self.pages.append(len(page))
        return page

    def at(self, seq: int) -> LoggedEvent:
        return self.events[seq - 1]


def event(seq: int, *, kind: str | None = None) -> LoggedEvent:
    data: dict[str, Any]
    if kind is None and seq == 1:
        kind, data = "work_accepted", {"work_id": 7, "connection_state": "waiting"}
    elif kind is None:
        kind = "chat_message"
        data = {
            "message_id": str(uuid.UUID(int=seq)),
            "sender_type": "provider",
            "message": f"message {seq}",
            "client_msg_id": None,
        }
    elif kind == "session_completed":
        data = {}
    else:
        data = {"cancelled_by": "seeker"}
    return LoggedEvent(session_id=SESSION, seq=seq, kind=kind, data=data, created_at=AT)


class Harness:
    def __init__(self, log: FakeLog, *, page_size: int = 200) -> None:
        self.log = log
        self.socket = FakeSocket()
        self.connection = Connection(
            self.socket,
            user_id="seeker-1",
            role="seeker",
            fetch_events=log.fetch,
            page_size=page_size,
        )
        self._marks = 0

    async def settle(self) -> list[dict[str, Any]]:
        """Wait until the writer has handled everything queued; return what it sent."""
        self._marks += 1
        mark = f"mark-{self._marks}"
        self.connection.offer(SendFrame(mark))
        async with asyncio.timeout(2):
            while mark not in self.socket.sent and not self.connection.closed.is_set():
                await asyncio.sleep(0)
        sent = [json.loads(text) for text in self.socket.sent if not text.startswith("mark-")]
        self.socket.sent.clear()
        return sent


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness(FakeLog(10))
    yield h
    await h.connection.wait_closed()


def seqs(frames: list[dict[str, Any]]) -> list[int | None]:
    return [f.get("seq") for f in frames]


async def test_a_gap_is_filled_from_the_log_in_order(harness: Harness) -> None:
    harness.connection.start(baseline={})
    harness.connection.offer(SendEvent(harness.log.at(1)))
    harness.connection.offer(SendEvent(harness.log.at(4)))
    sent = await harness.settle()
    assert seqs(sent) == [1, 2, 3, 4]
    assert harness.log.calls == [(SESSION, 1, 4)]
    assert sent[1]["message"] == "message 2"


async def test_an_event_already_sent_is_dropped(harness: Harness) -> None:
    harness.connection.start(baseline={})
    for seq in (1, 4, 3, 4, 2):
        harness.connection.offer(SendEvent(harness.log.at(seq)))
    harness.connection.offer(SendEvent(harness.log.at(5)))
    assert seqs(await harness.settle()) == [1, 2, 3, 4, 5]
    assert harness.log.calls == [(SESSION, 1, 4)]


async def test_the_request_id_goes_on_the_answering_event_only(harness: Harness) -> None:
    harness.connection.start(baseline={SESSION: 2}, hold_s=0)
    harness.connection.offer(SendEvent(harness.log.at(5), request_id="r"))
    sent = await harness.settle()
    assert [(f["seq"], f.get("request_id")) for f in sent] == [(3, None), (4, None), (5, "r")]


async def test_the_connected_baseline_is_not_sent_again(harness: Harness) -> None:
    harness.connection.start(baseline={SESSION: 5}, hold_s=0)
    for seq in (4, 5, 6):
        harness.connection.offer(SendEvent(harness.log.at(seq)))
    assert seqs(await harness.settle()) == [6]
    assert harness.log.calls == []


async def test_an_unreadable_log_holds_the_event_and_a_resume_recovers_the_gap(
    harness: Harness,
) -> None:
    harness.connection.start(baseline={SESSION: 1}, hold_s=0)
    harness.log.broken = True
    harness.connection.offer(SendEvent(harness.log.at(4)))
    # Sending 4 without 2 and 3 would mark them as sent: nothing goes out yet.
    assert seqs(await harness.settle()) == []
    harness.log.broken = False
    harness.connection.offer(Replay(SESSION, 1))
    assert seqs(await harness.settle()) == [2, 3, 4, 5, 6, 7, 8, 9, 10, None]


async def test_the_next_event_fills_a_gap_the_log_could_not(harness: Harness) -> None:
    harness.connection.start(baseline={SESSION: 1}, hold_s=0)
    harness.log.broken = True
    harness.connection.offer(SendEvent(harness.log.at(4)))
    await harness.settle()
    harness.log.broken = False
    harness.connection.offer(SendEvent(harness.log.at(5)))
    assert seqs(await harness.settle()) == [2, 3, 4, 5]


async def test_a_registered_answer_carries_its_request_id_even_via_a_gap_fill(
    harness: Harness,
) -> None:
    # Event 3 answers this socket's frame, but event 4 (someone else's) arrives first and
    # pulls 3 in from the log: 3 still carries the request_id, once.
    harness.connection.start(baseline={SESSION: 2}, hold_s=0)
    harness.connection.expect_answer(SESSION, 3, "mine")
    harness.connection.offer(SendEvent(harness.log.at(4)))
    harness.connection.offer(SendEvent(harness.log.at(3)))
    sent = await harness.settle()
    assert [(f["seq"], f.get("request_id")) for f in sent] == [(3, "mine"), (4, None)]


async def test_resume_beyond_the_log_reports_the_real_last_seq(harness: Harness) -> None:
    harness.connection.start(baseline={SESSION: 5}, hold_s=0)
    harness.connection.offer(Replay(SESSION, 1000))
    sent = await harness.settle()
    assert sent == [{"type": "resumed", "session_id": str(SESSION), "last_seq": 10}]
    harness.log.events.append(event(11))
    harness.connection.offer(SendEvent(harness.log.at(11)))
    assert seqs(await harness.settle()) == [11]  # not dropped as "already sent"


async def test_resume_sends_what_the_client_missed_then_resumed(harness: Harness) -> None:
    # Reconnected: the snapshot said 8; the client had seen up to 3.
    harness.connection.start(baseline={SESSION: 8}, hold_s=0)
    harness.connection.offer(Replay(SESSION, 3, "r"))
    sent = await harness.settle()
    assert seqs(sent) == [4, 5, 6, 7, 8, 9, 10, None]
    assert sent[-1] == {
        "type": "resumed",
        "session_id": str(SESSION),
        "last_seq": 10,
        "request_id": "r",
    }


async def test_a_resume_sent_first_comes_before_the_live_events_held_meanwhile(
    harness: Harness,
) -> None:
    # 9 and 10 reach the new socket between ``connected`` (last_seq 8) and its first
    # frame, a resume from 3: they wait, the replay goes first, and they are then dropped
    # as sent. The socket sees seq rise by exactly one.
    harness.connection.start(baseline={SESSION: 8})
    harness.connection.offer(SendEvent(harness.log.at(9)))
    harness.connection.offer(SendEvent(harness.log.at(10)))
    harness.connection.offer(Replay(SESSION, 3, "r"))
    harness.connection.release()
    sent = await harness.settle()
    assert seqs(sent) == [4, 5, 6, 7, 8, 9, 10, None]
    assert sent[-1] == {
        "type": "resumed",
        "session_id": str(SESSION),
        "last_seq": 10,
        "request_id": "r",
    }


async def test_a_socket_on_a_live_session_holds_its_events_until_the_first_frame() -> None:
    h = Harness(FakeLog(10))
    h.connection.start(baseline={SESSION: 8}, hold_s=60)
    h.connection.offer(SendEvent(h.log.at(9)))
    await asyncio.sleep(0.05)
    assert h.socket.sent == []
    h.connection.release()  # the first frame was not a resume
    assert seqs(await h.settle()) == [9]
    await h.connection.wait_closed()


async def test_the_hold_ends_by_itself_for_a_client_that_sends_nothing() -> None:
    h = Harness(FakeLog(10))
    h.connection.start(baseline={SESSION: 8}, hold_s=0.05)
    h.connection.offer(SendEvent(h.log.at(9)))
    await asyncio.sleep(0.2)
    assert seqs(await h.settle()) == [9]
    await h.connection.wait_closed()


async def test_a_socket_without_a_live_session_holds_nothing(harness: Harness) -> None:
    harness.connection.start(baseline={})
    harness.connection.offer(SendEvent(harness.log.at(1)))
    assert seqs(await harness.settle()) == [1]


async def test_a_late_resume_does_not_resend_what_arrived_live_before_it(harness: Harness) -> None:
    # The client took longer than the hold: 9 and 10 went out live between ``connected``
    # (last_seq 8) and the resume; the replay sends only 4..8, later copies are dropped.
    harness.connection.start(baseline={SESSION: 8}, hold_s=0)
    harness.connection.offer(SendEvent(harness.log.at(9)))
    harness.connection.offer(SendEvent(harness.log.at(10)))
    harness.connection.offer(Replay(SESSION, 3))
    harness.connection.offer(SendEvent(harness.log.at(10)))
    sent = await harness.settle()
    assert seqs(sent) == [9, 10, 4, 5, 6, 7, 8, None]
    assert sent[-1] == {"type": "resumed", "session_id": str(SESSION), "last_seq": 10}
    harness.connection.offer(Replay(SESSION, 3))
    assert seqs(await harness.settle()) == [None]  # everything after 3 was sent on this socket


async def test_resume_from_zero_of_an_ended_session_keeps_the_socket_open() -> None:
    h = Harness(FakeLog(3, ending="session_completed"))
    h.connection.start(baseline={})
    h.connection.offer(Replay(SESSION, 0))
    sent = await h.settle()
    await h.connection.wait_closed()
    assert [f["type"] for f in sent] == [
        "work_accepted",
        "chat_message",
        "chat_message",
        "session_completed",
        "resumed",
    ]
    assert sent[-1]["last_seq"] == 4
    assert h.socket.closed_with is None


async def test_a_terminal_event_arriving_live_closes_the_socket() -> None:
    h = Harness(FakeLog(3, ending="session_completed"))
    h.connection.start(baseline={SESSION: 3}, hold_s=0)
    h.connection.offer(SendEvent(h.log.at(4)))
    async with asyncio.timeout(2):
        await h.connection.closed.wait()
    await h.connection.wait_closed()
    assert h.socket.closed_with == CLOSE_SESSION_ENDED
    assert [json.loads(t)["type"] for t in h.socket.sent] == ["session_completed"]


async def test_a_resume_the_log_cannot_answer_is_an_error_and_can_be_retried(
    harness: Harness,
) -> None:
    harness.connection.start(baseline={SESSION: 8}, hold_s=0)
    harness.log.broken = True
    harness.connection.offer(Replay(SESSION, 3, "r"))
    failed = await harness.settle()
    harness.log.broken = False
    harness.connection.offer(Replay(SESSION, 3, "again"))
    retried = await harness.settle()
    assert [(f["type"], f.get("code"), f.get("request_id")) for f in failed] == [
        ("error", "internal_error", "r")
    ]
    assert seqs(retried) == [4, 5, 6, 7, 8, 9, 10, None]
    assert retried[-1]["last_seq"] == 10


async def test_a_long_resume_is_read_in_pages_and_sent_in_order() -> None:
    h = Harness(FakeLog(450), page_size=200)
    h.connection.start(baseline={})
    h.connection.offer(Replay(SESSION, 0, "r"))
    sent = await h.settle()
    assert seqs(sent) == [*range(1, 451), None]
    assert sent[-1]["last_seq"] == 450
    assert h.log.pages == [200, 200, 50]  # no read returned more than a page
    assert [after for _, after, _ in h.log.calls] == [0, 200, 400]


async def test_a_resume_near_the_end_reads_from_the_clients_last_event() -> None:
    # A fresh socket resuming a long session from near its end reads one page, from the
    # client's own last event, not the whole log before it.
    h = Harness(FakeLog(5000), page_size=200)
    h.connection.start(baseline={})
    h.connection.offer(Replay(SESSION, 4990, "r"))
    sent = await h.settle()
    assert seqs(sent) == [*range(4991, 5001), None]
    assert sent[-1]["last_seq"] == 5000
    assert [after for _, after, _ in h.log.calls] == [4989]


async def test_a_resume_past_the_end_of_the_log_answers_the_real_end() -> None:
    h = Harness(FakeLog(30), page_size=200)
    h.connection.start(baseline={})
    h.connection.offer(Replay(SESSION, 99, "r"))
    sent = await h.settle()
    assert seqs(sent) == [None]
    assert sent[-1]["last_seq"] == 30  # the log's word, not the client's
    h.log.events.append(event(31))
    h.connection.offer(SendEvent(h.log.at(31)))
    assert seqs(await h.settle()) == [31]  # and nothing after 30 was taken as sent


async def test_a_resume_whose_second_page_fails_keeps_what_the_first_sent() -> None:
    h = Harness(FakeLog(300), page_size=100)
    h.connection.start(baseline={})
    reads = 0
    fetch = h.log.fetch

    async def failing_second_read(
        session_id: uuid.UUID, after: int, before: int | None, limit: int
    ) -> list[LoggedEvent]:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise ConnectionError("database unavailable")
        return await fetch(session_id, after, before, limit)

    h.connection._fetch = failing_second_read
    h.connection.offer(Replay(SESSION, 0, "r"))
    sent = await h.settle()
    assert seqs(sent) == [*range(1, 101), None]
    assert sent[-1]["code"] == "internal_error"
    h.connection.offer(Replay(SESSION, 0, "again"))
    sent = await h.settle()
    assert seqs(sent) == [*range(101, 301), None]  # nothing twice, nothing lost
    assert sent[-1]["type"] == "resumed"


async def test_a_long_gap_is_filled_in_pages() -> None:
    h = Harness(FakeLog(500), page_size=200)
    h.connection.start(baseline={SESSION: 1}, hold_s=0)
    h.connection.offer(SendEvent(h.log.at(500)))
    assert seqs(await h.settle()) == list(range(2, 501))
    assert max(h.log.pages) <= 200


async def test_a_socket_closed_during_the_hold_writes_nothing_more() -> None:
    """A deploy (1012), a 4409 or an expired token closes the socket while its events are
    held: neither the client's first frame nor the hold's end may start a writer then."""
    h = Harness(FakeLog(10))
    h.connection.start(baseline={SESSION: 8}, hold_s=0.05)
    h.connection.offer(SendEvent(h.log.at(9)))
    h.connection.close_soon(1012, "restarting")
    await asyncio.sleep(0.1)  # past the hold
    h.connection.release()
    await asyncio.sleep(0.01)
    assert h.socket.sent == []
    assert h.socket.closed_with == 1012
    await h.connection.wait_closed()


async def test_a_session_that_ended_during_the_hold_closes_after_the_replay() -> None:
    """The terminal event arrives live while held; the client's resume replays it first;
    its live copy, dropped as sent, still ends the socket with 1000."""
    log = FakeLog(9, ending="session_completed")
    h = Harness(log)
    h.connection.start(baseline={SESSION: 8})
    h.connection.offer(SendEvent(log.at(10)))
    h.connection.offer(Replay(SESSION, 8))
    h.connection.release()
    async with asyncio.timeout(2):
        await h.connection.closed.wait()
    assert seqs([json.loads(t) for t in h.socket.sent]) == [9, 10, None]
    assert h.socket.closed_with == 1000
    await h.connection.wait_closed()
