"""The participant REST API against a real server, beside the WebSocket it mirrors."""

from __future__ import annotations

from typing import Any

import httpx

from tests.realtime.conftest import Server, live_session, open_client


async def _get(server: Server, path: str, user_id: str, role: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        return await http.get(
            path, headers={"Authorization": f"Bearer {server.token(user_id, role)}"}
        )


async def test_me_session_is_what_connected_says(server: Server) -> None:
    async with live_session(server) as pair:
        await pair.seeker.request(
            {
                "type": "medium_selection",
                "session_id": pair.session_id,
                "mediums": {"call": "9876543210"},
            },
            "mediums_selected",
        )
        await pair.provider.expect("seeker_mediums_selected")
        for role, user_id in (("seeker", pair.seeker_id), ("provider", pair.provider_id)):
            async with open_client(server, role, user_id, expect_connected=False) as device:
                connected = await device.expect("connected")
            response = await _get(server, "/v1/me/session", user_id, role)
            assert response.status_code == 200
            assert response.json() == connected["session"]
            assert response.json()["your_role"] == role


async def test_history_shows_what_was_said_and_its_receipts(server: Server) -> None:
    async with live_session(server) as pair:
        said: list[dict[str, Any]] = []
        for text in ("one", "two", "three"):
            said.append(
                await pair.seeker.request(
                    {"type": "chat_message", "session_id": pair.session_id, "message": text},
                    "chat_message_ack",
                )
            )
            await pair.provider.expect("chat_message", message=text)
        first = said[0]["message_id"]
        await pair.provider.send({"type": "message_read", "message_id": first})
        await pair.seeker.expect("message_status_update", status="read")

        response = await _get(
            server,
            f"/v1/sessions/{pair.session_id}/messages?limit=2",
            pair.provider_id,
            "provider",
        )
        page = response.json()
        older = await _get(
            server,
            f"/v1/sessions/{pair.session_id}/messages?limit=2&before={page['next_cursor']}",
            pair.provider_id,
            "provider",
        )

    assert response.status_code == older.status_code == 200
    messages = page["messages"] + older.json()["messages"]
    assert [m["message"] for m in messages] == ["three", "two", "one"]
    assert [m["message_id"] for m in messages] == [a["message_id"] for a in reversed(said)]
    assert [m["status"] for m in messages] == ["sent", "sent", "read"]
    assert all(m["sender_type"] == "seeker" for m in messages)
    assert [m["created_at"] for m in messages] == [a["created_at"] for a in reversed(said)]
    assert older.json()["next_cursor"] is None
    assert pair.seeker_id not in response.text + older.text
