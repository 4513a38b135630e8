"""*1.1* An abandoned live session, its participants on two workers: the leader's job
cancels it with ``cancelled_by: "system"``, both sockets hear it wherever they are, and both
users are free for a new order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
from tests.realtime.conftest import open_client, uid
from tests.scaleout.conftest import Cluster, needs_postgresql_and_redis, start_cluster, stop_cluster

pytestmark = needs_postgresql_and_redis

ABANDON_AFTER_S = 2


@pytest.fixture
def abandoning_cluster(tmp_path: Path) -> Iterator[Cluster]:
    assert REDIS_URL
    running = start_cluster(tmp_path, REDIS_URL, abandon_after_s=str(ABANDON_AFTER_S))
    yield running
    stop_cluster(running)
    for server in running.servers:
        assert "Traceback" not in server.log(), server.log()


async def test_an_abandoned_session_across_workers_ends_and_frees_both(
    abandoning_cluster: Cluster,
) -> None:
    a, b = abandoning_cluster.a, abandoning_cluster.b
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with (
        open_client(a, "seeker", seeker_id) as seeker,
        open_client(b, "provider", provider_id) as provider,
    ):
        order = await a.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        await provider.expect("work_request", work_id=order["work_id"])
        accepted = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        await seeker.expect("work_accepted", seq=1)
        accepted_at = time.monotonic()
        for client in (seeker, provider):
            frame = await client.expect("connection_cancelled", timeout=ABANDON_AFTER_S + 8)
            assert frame["cancelled_by"] == "system"
            assert frame["session_id"] == accepted["session_id"]
            assert frame["seq"] == 2
            assert await client.closed_with() == 1000
        assert time.monotonic() - accepted_at >= ABANDON_AFTER_S - 0.1

    async with (
        open_client(b, "seeker", seeker_id) as seeker,
        open_client(a, "provider", provider_id) as provider,
    ):
        assert seeker.received[0]["session"] is None
        assert provider.received[0]["session"] is None
        order = await b.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        assert order["offered_to"] == [provider_id]
        await provider.expect("work_request", work_id=order["work_id"])
        again = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        assert again["session_id"] != accepted["session_id"]
        await seeker.expect("work_accepted", seq=1)
