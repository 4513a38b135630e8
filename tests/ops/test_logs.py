"""Structured logs on a real server: JSON lines with request and session ids, and never
message text, phone numbers or tokens, even at debug level."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realtime.conftest import Server, dedicated_server, open_client, uid

TEXT = "zebra quokka 7731, see you at the gate"
SEEKER_PHONE, SEEKER_DIGITS = "+91 98765-43210", "9876543210"
PROVIDER_PHONE = "9123456780"


@pytest.fixture(params=["info", "debug"])
def json_server(
    request: pytest.FixtureRequest, db_url: str, tmp_path: Path
) -> Iterator[tuple[Server, str]]:
    """A server logging JSON at the given level, on a database of its own."""
    level = request.param
    with dedicated_server(db_url, tmp_path, log_format="json", log_level=level) as server:
        yield server, level


async def test_json_logs_carry_ids_and_no_secrets(json_server: tuple[Server, str]) -> None:
    server, level = json_server
    seeker_id, provider_id = uid("seeker"), uid("provider")
    seeker_token = server.token(seeker_id, "seeker")
    expired = server.token(seeker_id, "seeker", ttl_s=-60)
    tokens = [seeker_token, expired, server.token(provider_id, "provider")]
    async with open_client(
        server, "seeker", seeker_id, token=expired, via_query=True, expect_connected=False
    ) as refused:
        assert await refused.closed_with() == 4401
    async with (
        open_client(server, "seeker", seeker_id, token=seeker_token, via_query=True) as seeker,
        open_client(server, "provider", provider_id, token=tokens[2]) as provider,
    ):
        order = await server.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        await provider.expect("work_request")
        accepted = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        sid = accepted["session_id"]
        await seeker.request(
            {"type": "medium_selection", "session_id": sid, "mediums": {"call": SEEKER_PHONE}},
            "mediums_selected",
        )
        await provider.request(
            {"type": "medium_share", "session_id": sid, "mediums": {"call": PROVIDER_PHONE}},
            "mediums_shared",
        )
        await seeker.request(
            {"type": "medium_selection", "session_id": sid, "mediums": {"call": "12345"}},
            "error",
            code="validation_error",
        )
        ack = await seeker.request(
            {"type": "chat_message", "session_id": sid, "message": TEXT, "request_id": "rq-7"},
            "chat_message_ack",
        )
        await provider.expect("chat_message", message=TEXT)
        await provider.send({"type": "message_read", "message_id": ack["message_id"]})
        await seeker.expect("message_status_update", status="read")
        await provider.request({"type": "complete_session", "session_id": sid}, "session_completed")
    log = server.log()

    records: list[dict[str, Any]] = []
    for line in log.splitlines():
        if line.strip():
            records.append(json.loads(line))  # every line is one JSON object
    assert records
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    for secret in (TEXT, "zebra", "quokka", SEEKER_PHONE, SEEKER_DIGITS, "98765", PROVIDER_PHONE):
        assert secret not in log, secret
    for token in tokens:
        assert token not in log
        assert token.split(".")[2] not in log  # not even the signature
    assert "token=" not in log
    assert any("refused a seeker socket" in r["msg"] for r in records)
    if level == "debug":
        handled = [r for r in records if r["msg"].startswith("handled chat_message")]
        assert handled, log
        assert handled[0]["request_id"] == "rq-7"
        assert handled[0]["session_id"] == sid
        # A frame without a session (the offer's answer) carries no session id.
        answered = [r for r in records if r["msg"].startswith("handled work_response")]
        assert answered
        assert "session_id" not in answered[0]
