"""Section 5, anonymous chat: rooms, messages, retries, receipts, typing, anonymity."""

from __future__ import annotations

import asyncio
import json
import time

from tests.realtime.conftest import Server, live_session


async def test_start_chat_once_then_repeat_answers_the_caller_alone(server: Server) -> None:
    async with live_session(server) as pair:
        ready = await pair.seeker.request(
            {"type": "start_chat", "session_id": pair.session_id, "request_id": "s"}, "chat_ready"
        )
        assert ready == await pair.provider.expect("chat_ready") | {"request_id": "s"}
        repeat = await pair.provider.request(
            {"type": "start_chat", "session_id": pair.session_id}, "chat_ready"
        )
        await pair.seeker.nothing_more()
    assert ready["seq"] == 2
    assert repeat == {
        "type": "chat_ready",
        "session_id": pair.session_id,
        "chat_room_id": ready["chat_room_id"],
    }


async def test_message_ack_and_delivery_with_implicit_chat_start(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.seeker.send(
            {
                "type": "chat_message",
                "session_id": pair.session_id,
                "message": "Hello",
                "client_msg_id": "c-1",
                "request_id": "r",
            }
        )
        ready = await pair.seeker.expect("chat_ready")
        ack = await pair.seeker.expect("chat_message_ack")
        assert await pair.provider.expect("chat_ready") == ready
        message = await pair.provider.expect("chat_message")
    assert ready["seq"] == 2
    assert ack == {
        "type": "chat_message_ack",
        "session_id": pair.session_id,
        "message_id": ack["message_id"],
        "client_msg_id": "c-1",
        "status": "sent",
        "sender_type": "seeker",
        "message": "Hello",
        "created_at": ack["created_at"],
        "seq": 3,
        "request_id": "r",
    }
    assert message == {
        "type": "chat_message",
        "session_id": pair.session_id,
        "message_id": ack["message_id"],
        "sender_type": "seeker",
        "message": "Hello",
        "created_at": ack["created_at"],
        "seq": 3,
    }


async def test_a_retried_message_is_stored_once(server: Server) -> None:
    async with live_session(server) as pair:
        frame = {
            "type": "chat_message",
            "session_id": pair.session_id,
            "message": "once",
            "client_msg_id": "dup",
        }
        await pair.provider.send(frame)
        first = await pair.provider.expect("chat_message_ack")
        await pair.provider.send(frame)
        second = await pair.provider.expect("chat_message_ack")
        # And two at once: the unique key settles it.
        await asyncio.gather(
            pair.provider.send(frame | {"client_msg_id": "dup2"}),
            pair.provider.send(frame | {"client_msg_id": "dup2"}),
        )
        third = await pair.provider.expect("chat_message_ack", client_msg_id="dup2")
        fourth = await pair.provider.expect("chat_message_ack", client_msg_id="dup2")
        delivered = [f for f in await pair.seeker.drain(0.5) if f["type"] == "chat_message"]
    assert first == second
    assert third == fourth
    assert [m["message_id"] for m in delivered] == [first["message_id"], third["message_id"]]


async def test_receipts_move_forward_once_per_step(server: Server) -> None:
    async with live_session(server) as pair:
        ack = await pair.seeker.request(
            {"type": "chat_message", "session_id": pair.session_id, "message": "hi"},
            "chat_message_ack",
        )
        mid = ack["message_id"]
        await pair.seeker.expect("chat_ready")
        await pair.provider.expect("chat_ready")
        await pair.provider.expect("chat_message")
        await pair.provider.send({"type": "message_delivered", "message_id": mid})
        delivered = await pair.seeker.expect("message_status_update")
        # 1.1: the recipient's sockets get the same frame (its other devices see it).
        assert await pair.provider.expect("message_status_update") == delivered
        await pair.provider.send(
            {"type": "message_delivered", "message_id": mid}
        )  # repeat: nothing
        await pair.provider.send({"type": "message_read", "message_id": mid})
        read = await pair.seeker.expect("message_status_update")
        assert await pair.provider.expect("message_status_update") == read
        await pair.provider.send(
            {"type": "message_delivered", "message_id": mid}
        )  # backwards: nothing
        await pair.seeker.nothing_more()
        own = await pair.seeker.request(
            {"type": "message_read", "message_id": mid, "request_id": "o"}, "error"
        )
        await pair.provider.nothing_more()
    assert (delivered["status"], delivered["message_id"]) == ("delivered", mid)
    assert (read["status"], read["seq"]) == ("read", delivered["seq"] + 1)
    assert (own["code"], own["request_id"]) == ("forbidden", "o")


async def test_read_on_a_sent_message_reports_both_steps(server: Server) -> None:
    async with live_session(server) as pair:
        ack = await pair.provider.request(
            {"type": "chat_message", "session_id": pair.session_id, "message": "hi"},
            "chat_message_ack",
        )
        await pair.seeker.send({"type": "message_read", "message_id": ack["message_id"]})
        first = await pair.provider.expect("message_status_update")
        second = await pair.provider.expect("message_status_update")
    assert [first["status"], second["status"]] == ["delivered", "read"]


async def test_typing_reaches_the_other_side_and_stops_by_itself(server: Server) -> None:
    async with live_session(server) as pair:
        sent = time.monotonic()
        await pair.seeker.send(
            {"type": "typing_indicator", "session_id": pair.session_id, "is_typing": True}
        )
        typing = await pair.provider.expect("typing_indicator")
        stopped = await pair.provider.expect("typing_indicator", timeout=3)
        after = time.monotonic() - sent
        await pair.seeker.nothing_more()
    # The server's timeout is 1 s: never before it, and well before twice it (the
    # configured timeout is the one used, not a multiple of it).
    assert 1.0 <= after < 1.9
    assert typing == {
        "type": "typing_indicator",
        "session_id": pair.session_id,
        "sender_type": "seeker",
        "is_typing": True,
    }
    assert stopped["is_typing"] is False


async def test_no_chat_frame_carries_a_user_id_or_phone_number(server: Server) -> None:
    phone = "9876543210"
    async with live_session(server) as pair:
        await pair.seeker.request(
            {"type": "medium_selection", "session_id": pair.session_id, "mediums": {"call": phone}},
            "mediums_selected",
        )
        await pair.provider.request(
            {
                "type": "medium_share",
                "session_id": pair.session_id,
                "mediums": {"whatsapp": "8765432109"},
            },
            "mediums_shared",
        )
        await pair.seeker.request(
            {"type": "start_chat", "session_id": pair.session_id}, "chat_ready"
        )
        for i in range(3):
            ack = await pair.seeker.request(
                {"type": "chat_message", "session_id": pair.session_id, "message": f"m{i}"},
                "chat_message_ack",
            )
            await pair.provider.expect("chat_message")
            await pair.provider.send({"type": "message_read", "message_id": ack["message_id"]})
            await pair.provider.request(
                {"type": "chat_message", "session_id": pair.session_id, "message": f"p{i}"},
                "chat_message_ack",
            )
        await pair.provider.send(
            {"type": "typing_indicator", "session_id": pair.session_id, "is_typing": True}
        )
        await pair.seeker.expect("typing_indicator")
        await asyncio.sleep(0.3)
    chat_types = {
        "chat_ready",
        "chat_message",
        "chat_message_ack",
        "message_status_update",
        "typing_indicator",
    }
    secrets = [pair.seeker_id, pair.provider_id, phone, "8765432109"]
    chat_frames = [
        text
        for client in (pair.seeker, pair.provider)
        for text in client.raw
        if json.loads(text)["type"] in chat_types
    ]
    assert len(chat_frames) >= 15
    for text in chat_frames:
        for secret in secrets:
            assert secret not in text, text
    log = server.log()
    for secret in [phone, "8765432109", "m0", "p1"]:
        assert secret not in log
