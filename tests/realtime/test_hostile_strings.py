"""Strings UTF-8 or PostgreSQL cannot carry, sent over a real socket (issue 12, findings 2
and 3; PROTOCOL 3 *1.1*): each is a ``validation_error`` that does not echo the bad value,
the socket stays open, the server logs no traceback, and on PostgreSQL no batch of the write
pipeline fails because of one.
"""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.realtime.conftest import Client, Server, live_session, open_client, uid


async def _still_usable(client: Client) -> None:
    pong = await client.request({"type": "ping", "request_id": "after"}, "pong")
    assert pong["request_id"] == "after"


def _splits(server: Server) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    found = re.search(r"^worksession_pipeline_splits_total (\S+)$", text, re.MULTILINE)
    assert found, "the splits counter is exported"
    return float(found.group(1))


async def test_a_lone_surrogate_request_id_is_refused_without_echo(server: Server) -> None:
    async with open_client(server, "seeker", uid("seeker")) as seeker:
        for text in (
            '{"type":"ping","request_id":"\\ud800"}',
            '{"type":"ping","request_id":"ok\\udfff"}',
            '{"type":"ping","request_id":"a\\u0000b"}',
            '{"type":"ping","request_id":"a\\u001b[2Jb"}',
        ):
            await seeker.send(text)
            error = await seeker.expect("error")
            assert error["code"] == "validation_error", error
            assert "request_id" not in error
            assert [d["loc"] for d in error["details"]] == [["request_id"]]
            await _still_usable(seeker)
    assert "Traceback" not in server.log()


async def test_a_lone_surrogate_medium_key_is_refused_without_echo(server: Server) -> None:
    async with live_session(server) as pair:
        text = (
            '{"type":"medium_selection","session_id":"<sid>","request_id":"m-1",'
            '"mediums":{"\\udc80":"9876543210","wh\\u0000atsapp":"1"}}'
        ).replace("<sid>", pair.session_id)
        await pair.seeker.send(text)
        error = await pair.seeker.expect("error", request_id="m-1")
        assert error["code"] == "validation_error"
        raw = pair.seeker.raw[-1]
        assert "\\ud" not in raw.lower()
        assert "\\u0000" not in raw
        assert len(error["details"]) == 2
        await _still_usable(pair.seeker)
    assert "Traceback" not in server.log()


async def test_nul_in_a_chat_frame_is_refused_before_the_pipeline(server: Server) -> None:
    """Among a burst of good messages (so they share a batch), one with a NUL in its
    ``client_msg_id`` and one with a NUL in its text are ``validation_error``s; every good
    one is acked and the pipeline ran no batch again command by command."""
    async with live_session(server) as pair:
        splits_before = _splits(server)
        good = [
            {
                "type": "chat_message",
                "session_id": pair.session_id,
                "message": f"hello {i}",
                "client_msg_id": f"good-{i}",
            }
            for i in range(6)
        ]
        bad_id = {**good[0], "client_msg_id": "bad\x00id", "request_id": "bad-id"}
        bad_text = {**good[0], "message": "bad\x00text", "client_msg_id": "t", "request_id": "bt"}
        await asyncio.gather(
            *(pair.provider.send(frame) for frame in good[:3]),
            pair.seeker.send(bad_id),
            pair.seeker.send(bad_text),
            *(pair.provider.send(frame) for frame in good[3:]),
        )
        for request_id in ("bad-id", "bt"):
            error = await pair.seeker.expect("error", request_id=request_id)
            assert error["code"] == "validation_error", error
        for i in range(6):
            await pair.provider.expect("chat_message_ack", client_msg_id=f"good-{i}")
        assert _splits(server) == splits_before
        await _still_usable(pair.seeker)
    assert "Traceback" not in server.log()
