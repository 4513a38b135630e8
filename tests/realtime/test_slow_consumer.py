"""A client that never reads is cut off with 1008; nobody else waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.realtime.conftest import Client, Server, dedicated_server, live_session, open_client


@pytest.fixture(scope="session")
def flood_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A rate limit high enough to push megabytes through one session quickly.
    with dedicated_server(
        db_url,
        tmp_path_factory.mktemp("flood"),
        rate_limit_per_s="5000",
        rate_limit_burst="5000",
        user_rate_limit_per_s="5000",
        user_rate_limit_burst="5000",
        max_messages_per_session="20000",
    ) as running:
        yield running


async def _keep_reading(client: Client, counts: dict[str, int]) -> None:
    """A healthy device: reads everything as it arrives."""
    while True:
        frame = await client.recv(timeout=60)
        counts[frame["type"]] = counts.get(frame["type"], 0) + 1


async def test_a_client_that_never_reads_is_closed_and_others_keep_their_latency(
    flood_server: Server,
) -> None:
    server = flood_server
    # A second device of the flooded provider that never reads: a 4 KiB TCP window and a
    # one-frame client queue. The kernel buffers fill, then the server's bounded queue for
    # that socket, and the server closes it.
    async with (
        live_session(server) as calm,
        live_session(server) as flood,
        open_client(server, "provider", flood.provider_id, receive_buffer=4096) as stuck,
    ):
        loop = asyncio.get_running_loop()
        seeker_got: dict[str, int] = {}
        provider_got: dict[str, int] = {}
        readers = [
            asyncio.create_task(_keep_reading(flood.seeker, seeker_got)),
            asyncio.create_task(_keep_reading(flood.provider, provider_got)),
        ]
        text = "x" * 2000
        rtts: list[float] = []
        sent = 0
        try:
            for _ in range(400):  # at most 10,000 messages, about 20 MB
                for _ in range(25):
                    await flood.seeker.send(
                        {
                            "type": "chat_message",
                            "session_id": flood.session_id,
                            "message": text,
                        }
                    )
                sent += 25
                started = loop.time()
                await calm.seeker.request({"type": "ping"}, "pong")
                rtts.append(loop.time() - started)
                if "slow consumer" in server.log():
                    break
            code = await stuck.closed_with(timeout=30)
            # Everything sent reaches the healthy device of the same user.
            deadline = loop.time() + 30
            while provider_got.get("chat_message", 0) < sent and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            for reader in readers:
                reader.cancel()
    assert code == 1008
    assert server.log().count("slow consumer") == 1  # the stuck device, nobody else
    assert provider_got.get("chat_message", 0) == sent
    assert seeker_got.get("chat_message_ack", 0) == sent
    # A functional bound, not a benchmark: nobody else waited a second for the stuck one.
    assert max(rtts) < 1.0, max(rtts)
