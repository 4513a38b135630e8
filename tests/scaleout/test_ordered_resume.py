"""*1.1* ``resume`` is strictly in order, with chat flowing, on two workers: a phone that
resumes sees ``seq`` rise by exactly one from its own last event, with no duplicates, even
while events keep arriving during the replay and after the worker holding its socket was
SIGKILLed.

The phone sends ``resume`` a moment after ``connected`` (a slow mobile link): live events
that reach the socket before the resume must not overtake the replay (the bug this issue
found: "during 4, during 0, during 1, ..."). Replay pages are small so that live events keep
arriving between pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
from tests.faults.chat import stored_seqs
from tests.realtime.conftest import Client, Server, open_client, uid
from tests.scaleout.conftest import Cluster, needs_postgresql_and_redis, start_cluster, stop_cluster

pytestmark = needs_postgresql_and_redis

SLOW_LINK_S = 0.3
"""How long a phone takes to send ``resume`` after ``connected`` arrives."""


async def _chat(client: Client, session_id: str, prefix: str, stop: asyncio.Event) -> int:
    """Messages at 12 a second (under the per-socket limit) until ``stop``."""
    sent = 0
    while not stop.is_set():
        await client.send(
            {
                "type": "chat_message",
                "session_id": session_id,
                "message": f"{prefix} {sent}",
                "client_msg_id": f"{prefix}-{sent}",
            }
        )
        sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / 12)
    return sent


async def _seqs_until_closed(client: Client, out: list[int]) -> None:
    """Every seq this socket receives, in arrival order, until it closes."""
    with contextlib.suppress(Exception):
        while True:
            frame = await client.recv(timeout=60)
            if "seq" in frame:
                out.append(frame["seq"])


async def _resume_late(
    server: Server, user_id: str, session_id: str, last_seq: int, seqs: list[int]
) -> tuple[Client, asyncio.Task[None], contextlib.AsyncExitStack]:
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(open_client(server, "provider", user_id))
    connected = client.received[0]
    assert connected["session"]["session_id"] == session_id
    await asyncio.sleep(SLOW_LINK_S)
    await client.send(
        {"type": "resume", "session_id": session_id, "last_seq": last_seq, "request_id": "rs"}
    )
    return client, asyncio.create_task(_seqs_until_closed(client, seqs)), stack


def _strictly_consecutive(seqs: list[int], after: int) -> None:
    expected = list(range(after + 1, after + 1 + len(seqs)))
    assert seqs == expected, f"after {after}: got {seqs}"


@pytest.fixture
def paged_cluster(tmp_path: Path) -> Iterator[Cluster]:
    assert REDIS_URL
    running = start_cluster(tmp_path, REDIS_URL, replay_page_size="7")
    yield running
    stop_cluster(running)
    assert "Traceback" not in running.a.log(), running.a.log()


@pytest.mark.timeout(180)
async def test_resume_during_live_chat_and_after_a_worker_kill_is_strictly_in_order(
    paged_cluster: Cluster,
) -> None:
    await _play(paged_cluster)


async def _play(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with contextlib.AsyncExitStack() as stack:
        seeker = await stack.enter_async_context(open_client(a, "seeker", seeker_id))
        phone = await stack.enter_async_context(open_client(b, "provider", provider_id))
        order = await a.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        await phone.expect("work_request", work_id=order["work_id"])
        accepted = await phone.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        session_id = accepted["session_id"]
        await seeker.expect("work_accepted", seq=1)

        first_phone: list[int] = [1]
        reading = asyncio.create_task(_seqs_until_closed(phone, first_phone))
        stop = asyncio.Event()
        chatting = asyncio.create_task(_chat(seeker, session_id, "during", stop))
        await asyncio.sleep(2)

        # A second phone of the provider, on the seeker's worker, resumes from 0 mid-chat.
        second_phone: list[int] = []
        second, second_reading, second_stack = await _resume_late(
            a, provider_id, session_id, 0, second_phone
        )
        await asyncio.sleep(2)

        # The first phone's worker dies; that phone comes back on the other one and resumes
        # from the last event it saw, while the seeker keeps chatting.
        b.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(b.process.wait)
        await asyncio.gather(reading, return_exceptions=True)
        seen_before_kill = list(first_phone)
        _strictly_consecutive(seen_before_kill, 0)
        back_phone: list[int] = []
        _, back_reading, back_stack = await _resume_late(
            a, provider_id, session_id, seen_before_kill[-1], back_phone
        )
        await asyncio.sleep(2)
        stop.set()
        sent = await chatting
        await asyncio.sleep(1)  # the last messages reach every phone
        for task in (second_reading, back_reading):
            task.cancel()
        await asyncio.gather(second_reading, back_reading, return_exceptions=True)
        await second_stack.aclose()
        await back_stack.aclose()
        del second

    stored = await stored_seqs(cluster.database_url, session_id)
    assert sent > 20, sent
    last_seq = stored[-1]
    _strictly_consecutive(second_phone, 0)
    assert second_phone[-1] == last_seq, (second_phone[-1], last_seq)
    _strictly_consecutive(back_phone, seen_before_kill[-1])
    assert back_phone[-1] == last_seq, (back_phone[-1], last_seq)
    # The replays overlapped live chat: events were committed while each phone was resuming.
    assert len(second_phone) > 20, second_phone
    assert len(back_phone) > 20, back_phone
