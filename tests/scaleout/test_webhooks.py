"""Webhooks with two workers on PostgreSQL and Redis: a socket open on the other worker
counts as online; a worker killed in the middle of sending a webhook loses nothing: its
lease runs out and the other worker sends the same webhook (same id, same body) again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
from tests.realtime.conftest import Server, open_client, uid
from tests.scaleout.conftest import Cluster, needs_postgresql_and_redis, start_cluster, stop_cluster
from tests.webhooks.receiver import HANG, Receiver, in_thread
from worksession.webhooks.dispatcher import LEASE_MARGIN_S

pytestmark = needs_postgresql_and_redis

SECRET = "whsec-test-0123456789abcdef0123456789abcdef"
TIMEOUT_S = 2.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with in_thread(Receiver()) as running:
        yield running


@pytest.fixture
def hooked(tmp_path: Path, receiver: Receiver) -> Iterator[Cluster]:
    assert REDIS_URL
    running = start_cluster(
        tmp_path,
        REDIS_URL,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_timeout_s=str(TIMEOUT_S),
    )
    yield running
    stop_cluster(running)


async def test_a_socket_on_the_other_worker_counts_as_online(
    hooked: Cluster, receiver: Receiver
) -> None:
    online, offline = uid("provider"), uid("provider")
    async with open_client(hooked.b, "provider", online) as provider:
        order = await hooked.a.create_order(seeker_id=uid("seeker"), provider_ids=[online, offline])
        await provider.expect("work_request", work_id=order["work_id"])
        (hook,) = await receiver.wait_for(1)
        await asyncio.sleep(2.5)  # a poll of each worker and more: nothing for the online one
        assert len(receiver.received) == 1
    assert hook.json["user_id"] == offline


def _sender(cluster: Cluster, peer_port: int) -> Server:
    """The worker whose socket has ``peer_port`` as its local port (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == peer_port:
                    inodes.add(fields[9])
    for server in cluster.servers:
        fd_dir = f"/proc/{server.process.pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return server
    raise AssertionError(f"no worker holds port {peer_port}")


@pytest.mark.timeout(180)
async def test_a_worker_killed_mid_delivery_loses_nothing(
    hooked: Cluster, receiver: Receiver
) -> None:
    receiver.answers.append(HANG)
    provider = uid("provider")
    await hooked.a.create_order(seeker_id=uid("seeker"), provider_ids=[provider])
    (first,) = await receiver.wait_for(1)  # its answer never comes
    sender = _sender(hooked, first.peer_port)
    sender.process.send_signal(signal.SIGKILL)
    sender.process.wait()
    killed_at = time.monotonic()
    (_, again) = await receiver.wait_for(2, timeout=TIMEOUT_S + LEASE_MARGIN_S + 15)
    assert again.body == first.body  # the same webhook: same id
    # Not before the dead worker's lease ran out (timeout + margin after the claim).
    assert again.at - first.at >= TIMEOUT_S + LEASE_MARGIN_S - 1
    assert again.at - killed_at < TIMEOUT_S + LEASE_MARGIN_S + 5
    survivor = hooked.b if sender is hooked.a else hooked.a
    assert "Traceback" not in survivor.log(), survivor.log()
