"""The participant REST API (seeker and provider tokens): the live session and chat history."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.factories import make_chat_message, make_work_session
from tests.rest.conftest import bearer
from worksession import geo
from worksession.kit.clock import isoformat_z, utcnow
from worksession.kit.db import Database
from worksession.kit.jwt import UserType
from worksession.models import WorkSession

SEEKER = "seeker-7f3a9c"
PROVIDER = "provider-b41e02"
ME = "/v1/me/session"


def messages_url(session_id: uuid.UUID | str) -> str:
    return f"/v1/sessions/{session_id}/messages"


async def _session(db: Database, **fields: Any) -> WorkSession:
    fields = {"seeker_id": SEEKER, "provider_id": PROVIDER, **fields}
    async with db.transaction() as s:
        return await make_work_session(s, **fields)


# --- GET /v1/me/session ----------------------------------------------------------------


@pytest.mark.parametrize(("role", "sub"), [("seeker", SEEKER), ("provider", PROVIDER)])
async def test_me_session_is_the_connected_snapshot(
    client: httpx.AsyncClient, db: Database, db_url: str, role: UserType, sub: str
) -> None:
    chat_room_id = uuid.uuid4()
    session = await _session(
        db,
        state="active",
        chat_room_id=chat_room_id,
        seeker_selected_mediums={"call": "9876543210"},
        seeker_latitude=12.9716,
        seeker_longitude=77.5946,
        provider_latitude=12.9816,
        provider_longitude=77.5946,
        last_seq=4,
    )

    response = await client.get(ME, headers=bearer(db_url, role, sub))

    assert response.status_code == 200
    distance = geo.haversine_m(12.9716, 77.5946, 12.9816, 77.5946)
    assert response.json() == {
        "session_id": str(session.session_id),
        "work_id": session.work_order_id,
        "connection_state": "active",
        "your_role": role,
        "chat_room_id": str(chat_room_id),
        "mediums": {"seeker": {"call": "9876543210"}, "provider": None},
        "distance_meters": round(distance, 1),
        "distance_formatted": geo.format_distance(distance),
        "last_seq": 4,
        "peer_online": False,  # the other participant has no socket open
    }


async def test_me_session_without_a_live_session_is_404(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    await _session(db, state="cancelled")

    response = await client.get(ME, headers=bearer(db_url, "seeker", SEEKER))

    assert response.status_code == 404
    assert response.json() == {"detail": "You have no live session", "code": "session_not_found"}


async def test_me_session_is_per_role(client: httpx.AsyncClient, db: Database, db_url: str) -> None:
    # The provider of a live session has no live session as a seeker.
    await _session(db)
    response = await client.get(ME, headers=bearer(db_url, "seeker", PROVIDER))
    assert response.status_code == 404


# --- GET /v1/sessions/{id}/messages ------------------------------------------------------


async def test_history_lists_messages_with_sender_type_only(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    session = await _session(db, state="active")
    t0 = utcnow() - timedelta(minutes=5)
    async with db.transaction() as s:
        first = await make_chat_message(
            s,
            session=session,
            created_at=t0,
            text="from the seeker",
            status="read",
            delivered_at=t0 + timedelta(seconds=1),
            read_at=t0 + timedelta(seconds=2),
        )
        second = await make_chat_message(
            s, session=session, created_at=t0 + timedelta(seconds=3), sender_type="provider"
        )

    response = await client.get(
        messages_url(session.session_id), headers=bearer(db_url, "provider", PROVIDER)
    )

    assert response.status_code == 200
    assert response.json() == {
        "messages": [
            {
                "message_id": str(second.message_id),
                "sender_type": "provider",
                "message": "hello",
                "status": "sent",
                "created_at": isoformat_z(t0 + timedelta(seconds=3)),
                "delivered_at": None,
                "read_at": None,
            },
            {
                "message_id": str(first.message_id),
                "sender_type": "seeker",
                "message": "from the seeker",
                "status": "read",
                "created_at": isoformat_z(t0),
                "delivered_at": isoformat_z(t0 + timedelta(seconds=1)),
                "read_at": isoformat_z(t0 + timedelta(seconds=2)),
            },
        ],
        "next_cursor": None,
    }
    assert SEEKER not in response.text
    assert PROVIDER not in response.text


async def test_seven_messages_in_pages_of_three_with_shared_timestamps(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    session = await _session(db, state="active")
    base = utcnow() - timedelta(minutes=1)
    tie = base + timedelta(seconds=1)
    # Five share one timestamp, inserted around the others, so page boundaries fall inside
    # the tie twice and only the id can order them.
    times = [base + timedelta(seconds=2), tie, tie, tie, base + timedelta(seconds=3), tie, tie]
    async with db.transaction() as s:
        rows = [
            await make_chat_message(s, session=session, created_at=t, text=f"m{i}")
            for i, t in enumerate(times)
        ]
    expected = [
        str(m.message_id) for m in sorted(rows, key=lambda m: (m.created_at, m.id), reverse=True)
    ]

    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, str | int] = {"limit": 3}
        if cursor is not None:
            params["before"] = cursor
        response = await client.get(
            messages_url(session.session_id),
            params=params,
            headers=bearer(db_url, "seeker", SEEKER),
        )
        assert response.status_code == 200
        page = response.json()
        seen += [m["message_id"] for m in page["messages"]]
        sizes.append(len(page["messages"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sizes == [3, 3, 1]
    assert seen == expected


async def test_a_last_full_page_has_no_cursor(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    session = await _session(db)
    now = utcnow()
    async with db.transaction() as s:
        for i in range(3):
            await make_chat_message(s, session=session, created_at=now - timedelta(seconds=i))

    response = await client.get(
        messages_url(session.session_id),
        params={"limit": 3},
        headers=bearer(db_url, "seeker", SEEKER),
    )

    assert len(response.json()["messages"]) == 3
    assert response.json()["next_cursor"] is None


async def test_expired_messages_are_never_returned(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    session = await _session(db, state="cancelled")
    now = utcnow()
    async with db.transaction() as s:
        await make_chat_message(
            s,
            session=session,
            created_at=now - timedelta(hours=2),
            expires_at=now - timedelta(seconds=1),
        )
        kept = await make_chat_message(
            s,
            session=session,
            created_at=now - timedelta(hours=1),
            expires_at=now + timedelta(hours=1),
        )
        live = await make_chat_message(s, session=session, created_at=now - timedelta(minutes=1))

    response = await client.get(
        messages_url(session.session_id), headers=bearer(db_url, "seeker", SEEKER)
    )

    assert response.status_code == 200
    ids = [m["message_id"] for m in response.json()["messages"]]
    assert ids == [str(live.message_id), str(kept.message_id)]


@pytest.mark.parametrize(
    ("role", "sub"),
    [
        pytest.param("seeker", "someone-else", id="another-seeker"),
        pytest.param("provider", "another-provider", id="another-provider"),
        # The session's provider holding a seeker token takes no part in it *as a seeker*.
        pytest.param("seeker", PROVIDER, id="participant-in-the-other-role"),
    ],
)
async def test_an_outsider_gets_the_same_404_as_for_no_session(
    client: httpx.AsyncClient, db: Database, db_url: str, role: UserType, sub: str
) -> None:
    session = await _session(db)
    async with db.transaction() as s:
        await make_chat_message(s, session=session, created_at=utcnow())

    outsider = await client.get(messages_url(session.session_id), headers=bearer(db_url, role, sub))
    missing = await client.get(messages_url(uuid.uuid4()), headers=bearer(db_url, role, sub))

    assert outsider.status_code == missing.status_code == 404
    assert (
        outsider.json()
        == missing.json()
        == {
            "detail": "Session not found",
            "code": "session_not_found",
        }
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not a cursor!", id="not-base64"),
        pytest.param("é", id="non-ascii"),
        pytest.param(_b64(b"\xff\xfe"), id="not-utf8"),
        pytest.param(_b64(b"{not json"), id="not-json"),
        pytest.param(_b64(b'{"a": 1}'), id="not-a-list"),
        pytest.param(_b64(json.dumps(["s1", 5]).encode()), id="a-session-cursor"),
        pytest.param(_b64(json.dumps(["m1", 5]).encode()), id="too-few-values"),
        pytest.param(_b64(json.dumps(["m1", -1, 5]).encode()), id="negative"),
        pytest.param(_b64(json.dumps(["m1", 1.5, 5]).encode()), id="float"),
        pytest.param(_b64(json.dumps(["m1", True, 5]).encode()), id="boolean"),
        pytest.param(_b64(b'["m1", NaN, 5]'), id="nan"),
        pytest.param(_b64(json.dumps(["m1", 2**62, 5]).encode()), id="time-out-of-range"),
        pytest.param(_b64(json.dumps(["m1", 2**64, 5]).encode()), id="huge"),
        pytest.param("A" * 201, id="too-long"),
        pytest.param("", id="empty"),
    ],
)
async def test_a_malformed_cursor_is_422_at_the_parameter(
    client: httpx.AsyncClient, db: Database, db_url: str, cursor: str
) -> None:
    session = await _session(db)

    response = await client.get(
        messages_url(session.session_id),
        params={"before": cursor},
        headers=bearer(db_url, "seeker", SEEKER),
    )

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [["query", "before"]]
    assert all("input" not in e for e in errors)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5"])
async def test_limit_out_of_range_is_422(
    client: httpx.AsyncClient, db: Database, db_url: str, limit: str
) -> None:
    session = await _session(db)
    response = await client.get(
        messages_url(session.session_id),
        params={"limit": limit},
        headers=bearer(db_url, "seeker", SEEKER),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize("limit", [1, 100])
async def test_limit_bounds_are_accepted(
    client: httpx.AsyncClient, db: Database, db_url: str, limit: int
) -> None:
    session = await _session(db)
    response = await client.get(
        messages_url(session.session_id),
        params={"limit": limit},
        headers=bearer(db_url, "seeker", SEEKER),
    )
    assert response.status_code == 200


@pytest.mark.parametrize("session_id", ["not-a-uuid", "123", "0" * 40])
async def test_a_session_id_that_is_not_a_uuid_is_422(
    client: httpx.AsyncClient, db_url: str, session_id: str
) -> None:
    response = await client.get(messages_url(session_id), headers=bearer(db_url, "seeker", SEEKER))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "session_id"]


# --- authentication --------------------------------------------------------------------

PARTICIPANT_PATHS = [ME, messages_url("0b7e7c5e-8f5a-4a36-9a43-0d1f8f6b7f10")]


@pytest.mark.parametrize("path", PARTICIPANT_PATHS)
async def test_no_token_is_401(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", PARTICIPANT_PATHS)
async def test_a_service_token_is_403(client: httpx.AsyncClient, db_url: str, path: str) -> None:
    response = await client.get(path, headers=bearer(db_url, "service"))
    assert response.status_code == 403
    assert set(response.json()) == {"detail"}


async def test_the_participant_api_is_documented(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    me = paths[ME]["get"]
    history = paths["/v1/sessions/{session_id}/messages"]["get"]
    assert {"200", "401", "403", "404"} <= set(me["responses"])
    assert {"200", "401", "403", "404", "422"} <= set(history["responses"])
    assert history["security"] == [{"bearer": []}]
    assert {p["name"] for p in history["parameters"]} == {"session_id", "before", "limit"}
