"""A worker SIGKILLed in the middle of a group commit, with chat flowing on its sockets.

Two ``worksession serve`` processes, A and B (the leader), each with its own proxy to
PostgreSQL. Two sessions chat on A, both participants sending. A's replies from PostgreSQL
are held for a moment (the commands pile up into one batch behind the stalled one), then
held again right after A's pipeline sent a ``COMMIT``: that batch is committed in the
database but A never hears so, and A is killed there. That is the worst moment for a
crash: committed, nothing acked, nothing published. The clients reconnect to B,
``resume`` from the last seq they saw, and resend what was not acked with the same
``client_msg_id``.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.faults.chat import ChatFlow, check_against_database, stored_messages, stored_seqs
from tests.faults.conftest import ProxyTo, leaders, needs_postgresql_and_redis, proxied_servers
from tests.realtime.conftest import Client, Pair, live_session, open_client

pytestmark = needs_postgresql_and_redis

SESSIONS = 2


async def _resume_on(client: Client, session_id: str, last_seq: int) -> list[int]:
    """``resume`` on a fresh socket: the seqs replayed before ``resumed``, which must be
    everything after ``last_seq`` up to the one it names."""
    client.received.clear()
    await client.send(
        {"type": "resume", "session_id": session_id, "last_seq": last_seq, "request_id": "rs"}
    )
    resumed = await client.expect("resumed", timeout=15)
    replay = [f["seq"] for f in client.received if "seq" in f]
    assert replay == list(range(last_seq + 1, resumed["last_seq"] + 1)), (last_seq, replay)
    return replay


@pytest.mark.timeout(240)  # two server starts and a kill, on a loaded machine
async def test_a_worker_killed_mid_group_commit_loses_and_repeats_nothing(
    tmp_path: Path, proxy_to: ProxyTo
) -> None:
    async with proxied_servers(tmp_path, proxy_to, workers=2) as run:
        # The victim is not the leader: only chat batches commit through its pipeline, so
        # the COMMIT held is one of theirs, not an offer expiry's.
        while not leaders(run.servers):
            await asyncio.sleep(0.1)
        [b] = leaders(run.servers)
        a = next(s for s in run.servers if s is not b)
        link = run.pgs[run.servers.index(a)]
        async with AsyncExitStack() as stack:
            pairs: list[Pair] = [
                await stack.enter_async_context(live_session(a)) for _ in range(SESSIONS)
            ]
            sockets: list[tuple[Pair, Client, ChatFlow, str]] = []
            for pair in pairs:
                for client, user in (
                    (pair.seeker, pair.seeker_id),
                    (pair.provider, pair.provider_id),
                ):
                    sockets.append((pair, client, ChatFlow(pair.session_id), user))
            stop = asyncio.Event()
            tasks = [asyncio.create_task(flow.read(client)) for _, client, flow, _ in sockets] + [
                asyncio.create_task(flow.send_until(client, stop, f"{client.role}-{i}"))
                for i, (_, client, flow, _) in enumerate(sockets)
            ]
            await asyncio.sleep(1.5)
            link.hold()
            await asyncio.sleep(0.5)
            held = link.hold_after(b"COMMIT", tag=b"worksession-pipeline", skip=1)
            link.release()
            assert await asyncio.to_thread(held.wait, 10), "A's pipeline never committed"
            a.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(a.process.wait)
            link.release()
            stop.set()
            await asyncio.sleep(0.5)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        sizes: dict[str, Any] = {}
        for pair in pairs:
            flows = [flow for p, _, flow, _ in sockets if p is pair]
            stored = await stored_messages(run.database_url, pair.session_id)
            check_against_database(flows, stored)
            acked = sum(len(f.acks) for f in flows)
            sizes[pair.session_id] = {
                "sent": sum(len(f.sent) for f in flows),
                "acked": acked,
                "stored": len(stored),
                "committed_unacked": len(stored) - acked,
            }

        # Every socket comes back on B, resumes, and resends what was not acked.
        for pair, old, flow, user in sockets:
            async with open_client(b, old.role, user) as client:
                connected = client.received[0]
                assert connected["session"]["session_id"] == pair.session_id
                last_seen = max(flow.seen)
                replay = await _resume_on(client, pair.session_id, last_seen)
                flow.seen.extend(replay)
                await flow.resend_unacked(client)
        for pair in pairs:
            flows = [flow for p, _, flow, _ in sockets if p is pair]
            stored = await stored_messages(run.database_url, pair.session_id)
            check_against_database(flows, stored)
            sizes[pair.session_id]["stored_after_resend"] = len(stored)
            assert len(stored) == sum(len(f.sent) for f in flows)
            assert all(set(f.sent) == set(f.acks) for f in flows)
            seqs = await stored_seqs(run.database_url, pair.session_id)
            assert seqs == list(range(1, len(seqs) + 1))
    print(f"per session: {list(sizes.values())}")
    # The kill fell after a COMMIT the worker never heard back from.
    assert sum(s["committed_unacked"] for s in sizes.values()) >= 1, sizes
