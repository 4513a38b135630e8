"""Issue 4: the service is correct with two worker processes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from tests.realtime.conftest import Client, live_session, open_client, uid
from tests.scaleout.conftest import (
    Cluster,
    PrivateRedis,
    needs_postgresql_and_redis,
    start_cluster,
    stop_cluster,
)

pytestmark = needs_postgresql_and_redis


def _location(session_id: str, lat: float, lng: float = 77.6066) -> dict[str, object]:
    return {"type": "location_update", "session_id": session_id, "lat": lat, "lng": lng}


async def test_a_whole_session_across_two_workers(cluster: Cluster) -> None:
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with (
        open_client(cluster.a, "seeker", seeker_id) as seeker,
        open_client(cluster.b, "provider", provider_id) as provider,
    ):
        order = await cluster.a.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        await provider.expect("work_request", work_id=order["work_id"])
        accepted = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        sid = accepted["session_id"]
        assert (await seeker.expect("work_accepted"))["session_id"] == sid

        await seeker.request(
            {"type": "medium_selection", "session_id": sid, "mediums": {"call": "9876543210"}},
            "mediums_selected",
        )
        assert (await provider.expect("seeker_mediums_selected"))["mediums"] == {
            "call": "9876543210"
        }

        await seeker.send(_location(sid, 12.9756))
        await provider.send(_location(sid, 12.9936))
        assert (await seeker.expect("distance_update"))["distance_formatted"] == "2.0 km away"
        await provider.expect("distance_update")

        ack = await seeker.request(
            {"type": "chat_message", "session_id": sid, "message": "hi"}, "chat_message_ack"
        )
        message = await provider.expect("chat_message")
        assert message["message_id"] == ack["message_id"]
        await provider.send({"type": "message_read", "message_id": ack["message_id"]})
        statuses = [(await seeker.expect("message_status_update"))["status"] for _ in range(2)]
        assert statuses == ["delivered", "read"]

        await provider.send({"type": "typing_indicator", "session_id": sid, "is_typing": True})
        assert (await seeker.expect("typing_indicator"))["is_typing"] is True
        assert (await seeker.expect("typing_indicator", timeout=4))["is_typing"] is False

        await seeker.request(
            {"type": "cancel_connection", "session_id": sid}, "connection_cancelled"
        )
        assert (await provider.expect("connection_cancelled"))["cancelled_by"] == "seeker"
        assert await seeker.closed_with() == 1000
        assert await provider.closed_with() == 1000


async def _ticks(client: Client, seconds: float) -> list[dict[str, object]]:
    return [f for f in await client.drain(seconds) if f["type"] == "distance_update"]


async def test_the_distance_tick_runs_once_per_interval_not_once_per_worker(
    cluster: Cluster,
) -> None:
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with (
        open_client(cluster.a, "seeker", seeker_id) as seeker,
        open_client(cluster.b, "provider", provider_id) as provider,
    ):
        order = await cluster.b.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        accepted = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        sid = accepted["session_id"]
        await seeker.send(_location(sid, 12.9756))
        await provider.send(_location(sid, 12.9936))
        await seeker.expect("distance_update")
        ticks = await _ticks(seeker, 5.0)
        provider_ticks = await _ticks(provider, 0.2)
    # 1 s interval over 5 s: about five, never about ten.
    assert 4 <= len(ticks) <= 6, len(ticks)
    assert len(provider_ticks) >= 4


async def test_killing_the_leader_hands_the_ticker_over_within_the_ttl(cluster: Cluster) -> None:
    leader = cluster.leader()
    survivor = cluster.b if leader is cluster.a else cluster.a
    async with live_session(survivor) as pair:
        await pair.seeker.send(_location(pair.session_id, 12.9756))
        await pair.provider.send(_location(pair.session_id, 12.9936))
        await pair.seeker.expect("distance_update")
        assert len(await _ticks(pair.seeker, 2.5)) >= 2  # the leader ticks for this worker too
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        await pair.seeker.drain(0.2)  # a tick already in flight
        await pair.seeker.expect("distance_update", timeout=10)
        resumed_after = loop.time() - killed_at
    # The lease lasts 3 s; the survivor retries every second; then the tick (1 s) runs.
    assert resumed_after < 3 + 1 + 1 + 0.5, resumed_after
    assert "now runs the periodic jobs" in survivor.log()


async def test_restarting_redis_mid_chat_loses_nothing(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    cluster = await asyncio.to_thread(start_cluster, tmp_path, private_redis.url)
    try:
        seeker_id, provider_id = uid("seeker"), uid("provider")
        async with (
            open_client(cluster.a, "seeker", seeker_id) as seeker,
            open_client(cluster.b, "provider", provider_id) as provider,
        ):
            order = await cluster.a.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
            accepted = await provider.request(
                {"type": "work_response", "work_id": order["work_id"], "accepted": True},
                "work_accepted",
            )
            sid = accepted["session_id"]
            await seeker.expect("work_accepted")
            for i in range(3):
                await seeker.request(
                    {"type": "chat_message", "session_id": sid, "message": f"before {i}"},
                    "chat_message_ack",
                )
                await provider.expect("chat_message", message=f"before {i}")

            private_redis.stop()
            # Sent while Redis is down: committed, acked to the sender, not delivered.
            for i in range(3):
                await seeker.request(
                    {"type": "chat_message", "session_id": sid, "message": f"during {i}"},
                    "chat_message_ack",
                )
            async with httpx.AsyncClient(timeout=10) as http:
                ready = await http.get(f"{cluster.a.base_url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["broker"] != "ok"
            await asyncio.to_thread(private_redis.start)

            for i in range(3):
                await provider.expect("chat_message", message=f"during {i}", timeout=15)
            await seeker.request(
                {"type": "chat_message", "session_id": sid, "message": "after"}, "chat_message_ack"
            )
            await provider.expect("chat_message", message="after")
            await provider.drain(0.5)
        seqs = [f["seq"] for f in provider.received if "seq" in f]
        assert seqs == sorted(set(seqs)), seqs  # in order, no duplicates
        assert seqs == list(range(1, seqs[-1] + 1))  # no holes
        readiness_logged = [s.log() for s in cluster.servers]
        assert any("broker reconnected" in log for log in readiness_logged)
    finally:
        await asyncio.to_thread(stop_cluster, cluster)


async def test_graceful_shutdown_closes_with_1012_and_hands_over_the_lease(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    survivor = cluster.b if leader is cluster.a else cluster.a
    async with open_client(leader, "seeker", uid("seeker")) as client:
        leader.process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        assert await client.closed_with(timeout=10) == 1012
    await asyncio.to_thread(leader.process.wait, 15)
    # uvicorn finishes its shutdown, then re-raises SIGTERM so the exit status tells why.
    assert leader.process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in leader.log()
    # The lease was released, not left to expire: the survivor takes it at its next try.
    while "now runs the periodic jobs" not in survivor.log():
        assert loop.time() - stopped_at < 3.0, "the survivor did not take over promptly"
        await asyncio.sleep(0.1)
    assert "Traceback" not in leader.log()
