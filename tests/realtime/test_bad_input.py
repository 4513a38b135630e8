"""Section 3: every malformed frame gets the contract's error and the socket carries on."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.realtime.conftest import (
    Client,
    Server,
    dedicated_server,
    live_session,
    open_client,
    uid,
)

SESSION = "6f1c2d2e-1111-4222-8333-444455556666"


def _frame(template: str, **values: str) -> str:
    """JSON text with ``<name>`` placeholders filled in (braces would clash with format)."""
    for name, value in values.items():
        template = template.replace(f"<{name}>", value)
    return template


@pytest.fixture(scope="session")
def roomy_server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a 1 MiB frame limit, so that inputs too big for the default limit can
    reach the parser (50,000 levels of nesting), and a rate limit that lets a long list of
    bad frames through at full speed."""
    with dedicated_server(
        db_url,
        tmp_path_factory.mktemp("roomy"),
        max_frame_bytes=str(2**20),
        rate_limit_per_s="1000",
        rate_limit_burst="1000",
        user_rate_limit_per_s="1000",
        user_rate_limit_burst="1000",
    ) as running:
        yield running


async def _still_usable(client: Client) -> None:
    pong = await client.request({"type": "ping", "request_id": "after"}, "pong")
    assert pong["request_id"] == "after"


async def _error_for(client: Client, frame: str | bytes) -> dict[str, Any]:
    await client.send(frame)
    error = await client.expect("error")
    await _still_usable(client)
    return error


HOSTILE: list[tuple[str, str | bytes, str]] = [
    ("binary", b'{"type":"ping"}', "invalid_json"),
    ("invalid-utf8-binary", b"\xff\xfe\x00garbage", "invalid_json"),
    ("not-json", "hello", "invalid_json"),
    ("truncated", '{"type": "ping"', "invalid_json"),
    ("array", '[{"type":"ping"}]', "invalid_json"),
    ("string", '"ping"', "invalid_json"),
    ("number", "42", "invalid_json"),
    ("null", "null", "invalid_json"),
    (
        "nan",
        _frame('{"type":"location_update","session_id":"<s>","lat":NaN,"lng":1}', s=SESSION),
        "invalid_json",
    ),
    (
        "infinity",
        _frame('{"type":"location_update","session_id":"<s>","lat":Infinity,"lng":1}', s=SESSION),
        "invalid_json",
    ),
    ("duplicate-keys", '{"type":"ping","type":"start_chat"}', "invalid_json"),
    ("deep-nesting", "[" * 5000 + "]" * 5000, "invalid_json"),
    ("no-type", '{"request_id":"x"}', "unknown_type"),
    ("type-not-string", '{"type":7}', "unknown_type"),
    ("unknown-type", '{"type":"launch_rockets"}', "unknown_type"),
    ("unknown-field", '{"type":"ping","extra":1}', "validation_error"),
    ("wrong-field-type", '{"type":"start_chat","session_id":12}', "validation_error"),
    ("non-uuid-session", '{"type":"start_chat","session_id":"not-a-uuid"}', "validation_error"),
    ("missing-field", '{"type":"start_chat"}', "validation_error"),
    (
        "huge-number",
        _frame('{"type":"resume","session_id":"<s>","last_seq":<n>}', s=SESSION, n="9" * 5000),
        "validation_error",
    ),
    (
        "huge-exponent",
        _frame('{"type":"location_update","session_id":"<s>","lat":1e999,"lng":1}', s=SESSION),
        "validation_error",
    ),
    (
        "bool-as-number",
        _frame('{"type":"resume","session_id":"<s>","last_seq":true}', s=SESSION),
        "validation_error",
    ),
    (
        "string-as-bool",
        _frame('{"type":"typing_indicator","session_id":"<s>","is_typing":"yes"}', s=SESSION),
        "validation_error",
    ),
    (
        "lat-out-of-range",
        _frame('{"type":"location_update","session_id":"<s>","lat":91,"lng":1}', s=SESSION),
        "validation_error",
    ),
    (
        "long-request-id",
        _frame('{"type":"ping","request_id":"<n>"}', n="r" * 65),
        "validation_error",
    ),
    (
        "empty-message",
        _frame('{"type":"chat_message","session_id":"<s>","message":"   "}', s=SESSION),
        "validation_error",
    ),
    (
        "nul-in-message",
        _frame('{"type":"chat_message","session_id":"<s>","message":"a\\u0000b"}', s=SESSION),
        "validation_error",
    ),
    (
        "long-message",
        _frame(
            '{"type":"chat_message","session_id":"<s>","message":"<n>"}', s=SESSION, n="x" * 2001
        ),
        "validation_error",
    ),
    (
        "bad-mediums",
        _frame(
            '{"type":"medium_selection","session_id":"<s>","mediums":{"call":"12345"}}', s=SESSION
        ),
        "validation_error",
    ),
    (
        "unknown-medium",
        _frame(
            '{"type":"medium_selection","session_id":"<s>","mediums":{"signal":"9876543210"}}',
            s=SESSION,
        ),
        "validation_error",
    ),
    (
        "future-fix",
        _frame(
            '{"type":"location_update","session_id":"<s>","lat":1,"lng":1,"recorded_at":"2999-01-01T00:00:00Z"}',
            s=SESSION,
        ),
        "validation_error",
    ),
    (
        "naive-fix-time",
        _frame(
            '{"type":"location_update","session_id":"<s>","lat":1,"lng":1,"recorded_at":"2026-01-01T00:00:00"}',
            s=SESSION,
        ),
        "validation_error",
    ),
    (
        "seeker-sends-work-response",
        '{"type":"work_response","work_id":1,"accepted":true}',
        "forbidden",
    ),
    (
        "seeker-completes",
        _frame('{"type":"complete_session","session_id":"<s>"}', s=SESSION),
        "forbidden",
    ),
    (
        "unknown-session",
        _frame('{"type":"start_chat","session_id":"<s>"}', s=SESSION),
        "session_not_found",
    ),
    (
        "unknown-message",
        _frame('{"type":"message_read","message_id":"<s>"}', s=SESSION),
        "message_not_found",
    ),
]


async def test_every_hostile_frame_gets_its_error_and_the_socket_lives(
    roomy_server: Server,
) -> None:
    async with open_client(roomy_server, "seeker", uid("seeker")) as client:
        for name, frame, code in HOSTILE:
            error = await _error_for(client, frame)
            assert error["code"] == code, (name, error)
            assert error["message"], name
    log = roomy_server.log()
    assert "Traceback" not in log


async def test_fifty_thousand_levels_of_nesting(roomy_server: Server) -> None:
    async with open_client(roomy_server, "seeker", uid("seeker")) as client:
        for frame in ("[" * 50_000 + "]" * 50_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
            error = await _error_for(client, frame)
            assert error["code"] == "invalid_json"


async def test_validation_errors_say_which_field_without_echoing_input(server: Server) -> None:
    async with open_client(server, "seeker", uid("seeker")) as client:
        frame = {
            "type": "medium_selection",
            "session_id": SESSION,
            "mediums": {"call": "555-0199"},
            "request_id": "m1",
        }
        error = await _error_for(client, json.dumps(frame))
    assert error["code"] == "validation_error"
    assert error["request_id"] == "m1"
    assert error["details"][0]["loc"] == ["mediums", "call"]
    assert "555" not in json.dumps(error)


async def test_every_bad_medium_is_reported(server: Server) -> None:
    async with open_client(server, "seeker", uid("seeker")) as client:
        frame = {
            "type": "medium_selection",
            "session_id": SESSION,
            "mediums": {"call": "123", "whatsapp": "9876543210", "signal": "9876543210"},
        }
        error = await _error_for(client, json.dumps(frame))
    assert error["code"] == "validation_error"
    assert sorted(d["loc"][-1] for d in error["details"]) == ["call", "signal"]


async def test_request_id_is_echoed_on_errors(server: Server) -> None:
    async with open_client(server, "seeker", uid("seeker")) as client:
        error = await _error_for(client, '{"type":"nope","request_id":"abc"}')
    assert (error["code"], error["request_id"]) == ("unknown_type", "abc")


async def test_provider_may_not_select_mediums(server: Server) -> None:
    async with live_session(server) as pair:
        error = await _error_for(
            pair.provider,
            json.dumps({"type": "medium_selection", "session_id": pair.session_id, "mediums": {}}),
        )
    assert error["code"] == "forbidden"


def _ping_of(size: int) -> str:
    """A ping frame of exactly ``size`` bytes (its padding makes it invalid, so a frame
    within the limit is answered with an error that echoes its request_id)."""
    frame = json.dumps({"type": "ping", "request_id": "x", "pad": ""})
    return frame.replace('"pad": ""', '"pad": "' + "p" * (size - len(frame)) + '"')


async def test_a_frame_over_the_limit_closes_with_1009(server: Server) -> None:
    async with open_client(server, "seeker", uid("seeker")) as client:
        await client.send(json.dumps({"type": "ping", "request_id": "x", "pad": "p" * 17_000}))
        assert await client.closed_with() == 1009


async def test_the_default_frame_limit_is_16_kib(server: Server) -> None:
    # The default server runs with the default limit: 16,384 bytes pass, one more does not.
    async with open_client(server, "seeker", uid("seeker")) as client:
        await client.send(_ping_of(16 * 1024))
        answer = await client.expect("error", request_id="x")
        assert answer["code"] == "validation_error"
        await client.send(_ping_of(16 * 1024 + 1))
        assert await client.closed_with() == 1009


async def test_rate_limit_drops_frames_with_retry_after(server: Server) -> None:
    async with open_client(server, "seeker", uid("seeker")) as client:
        started = time.monotonic()
        for i in range(60):
            await client.send({"type": "ping", "request_id": f"p{i}"})
        frames = [await client.recv() for _ in range(60)]
        elapsed = time.monotonic() - started
    pongs = [f for f in frames if f["type"] == "pong"]
    limited = [f for f in frames if f.get("code") == "rate_limited"]
    assert len(pongs) + len(limited) == 60
    # The default burst of 40 passes, and no more than the default 20 a second trickled
    # back while the server took the frames (that is at most ``elapsed``).
    assert 40 <= len(pongs) <= 40 + 20 * elapsed + 1
    assert all(f["retry_after_ms"] >= 1 for f in limited)
    # Even a dropped frame's error echoes its request_id.
    assert all(f["request_id"].startswith("p") for f in limited)


async def test_sustained_abuse_is_closed_with_1008(server: Server) -> None:
    import asyncio

    from websockets.exceptions import ConnectionClosed

    async with open_client(server, "seeker", uid("seeker")) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        reader = asyncio.create_task(client.closed_with(timeout=30))
        with contextlib.suppress(ConnectionClosed):
            while loop.time() - started < 20 and not reader.done():
                await client.send({"type": "ping"})
                await asyncio.sleep(0.01)  # 100 frames a second, five times the limit
        code = await reader
        elapsed = loop.time() - started
    assert code == 1008
    assert 10 <= elapsed < 13
    limited = [f for f in client.received if f.get("code") == "rate_limited"]
    assert len(limited) > 500


async def test_invalid_utf8_in_a_text_frame_closes_with_1007_without_a_traceback(
    server: Server,
) -> None:
    """RFC 6455 requires failing the connection here (binary frames get invalid_json)."""
    async with open_client(server, "seeker", uid("seeker")) as client:
        await client.ws.send(b'{"type":"ping","x":"\xff\xfe"}', text=True)
        assert await client.closed_with() == 1007
    assert "Traceback" not in server.log()


async def test_query_string_tokens_never_reach_the_log(server: Server) -> None:
    token = server.token(uid("seeker"), "seeker")
    async with open_client(server, "seeker", uid("seeker"), via_query=True, token=token):
        pass
    import httpx

    httpx.get(f"{server.base_url}/healthz?token={token}", timeout=5)
    assert token not in server.log()
    assert token.split(".")[2] not in server.log()
