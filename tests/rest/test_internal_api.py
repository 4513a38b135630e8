"""The internal REST API for sessions and availability (service tokens)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.factories import make_chat_message, make_work_order, make_work_session
from tests.rest.conftest import Published, bearer
from worksession import geo
from worksession.kit.clock import isoformat_z, utcnow
from worksession.kit.db import Database
from worksession.kit.jwt import UserType
from worksession.models import (
    ChatMessage,
    ProviderActiveStatus,
    SeekerSearchPreference,
    WorkOrder,
    WorkSession,
)
from worksession.pipeline.commands import SweepExpired
from worksession.state import AppState

SESSIONS = "/internal/v1/sessions"
ORDERS = "/internal/v1/work-orders"
SOME_UUID = "0b7e7c5e-8f5a-4a36-9a43-0d1f8f6b7f10"


def service_auth(db_url: str) -> dict[str, str]:
    return bearer(db_url, "service")


async def _session(db: Database, **fields: Any) -> WorkSession:
    async with db.transaction() as s:
        return await make_work_session(s, **fields)


# --- GET /internal/v1/sessions/{id} --------------------------------------------------


async def test_get_session_is_the_whole_session(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    now = utcnow().replace(microsecond=0)
    chat_room_id = uuid.uuid4()
    session = await _session(
        db,
        seeker_id="s-1",
        provider_id="p-1",
        state="active",
        chat_room_id=chat_room_id,
        chat_started_at=now,
        seeker_selected_mediums={"whatsapp": "9876543210"},
        provider_selected_mediums={"call": "8123456789"},
        mediums_shared_at=now,
        seeker_latitude=12.9716,
        seeker_longitude=77.5946,
        seeker_last_location_update=now,
        seeker_fix_recorded_at=now - timedelta(seconds=2),
        provider_latitude=12.9720,
        provider_longitude=77.5950,
        provider_last_location_update=now,
        nearby_at=now,
        last_seq=7,
        created_at=now - timedelta(minutes=3),
        updated_at=now,
    )

    response = await client.get(f"{SESSIONS}/{session.session_id}", headers=service_auth(db_url))

    assert response.status_code == 200
    distance = geo.haversine_m(12.9716, 77.5946, 12.9720, 77.5950)
    z = isoformat_z(now)
    assert response.json() == {
        "session_id": str(session.session_id),
        "work_id": session.work_order_id,
        "seeker_id": "s-1",
        "provider_id": "p-1",
        "state": "active",
        "chat_room_id": str(chat_room_id),
        "mediums": {"seeker": {"whatsapp": "9876543210"}, "provider": {"call": "8123456789"}},
        "positions": {
            "seeker": {
                "lat": 12.9716,
                "lng": 77.5946,
                "updated_at": z,
                "recorded_at": isoformat_z(now - timedelta(seconds=2)),
            },
            "provider": {"lat": 12.972, "lng": 77.595, "updated_at": z, "recorded_at": None},
        },
        "distance_meters": round(distance, 1),
        "distance_formatted": geo.format_distance(distance),
        "nearby_at": z,
        "arrived_at": None,
        "chat_started_at": z,
        "mediums_shared_at": z,
        "cancelled_by": None,
        "cancelled_at": None,
        "completed_at": None,
        "created_at": isoformat_z(now - timedelta(minutes=3)),
        "updated_at": z,
        "last_seq": 7,
    }


async def test_after_the_sweep_the_api_shows_no_mediums_positions_or_details(
    app: FastAPI, client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    """PROTOCOL 5 (1.1): 24 h after the end, the phone numbers, the positions and the
    order's details are gone from what the internal API answers; ids, states and times
    stay."""
    ended = utcnow().replace(microsecond=0) - timedelta(hours=25)
    personal = {"address": "12 MG Road"}
    async with db.transaction() as s:
        session = await make_work_session(
            s,
            seeker_id="s-1",
            provider_id="p-1",
            state="cancelled",
            cancelled_by="seeker",
            cancelled_at=ended,
            seeker_selected_mediums={"whatsapp": "9876543210"},
            provider_selected_mediums={"call": "8123456789"},
            mediums_shared_at=ended,
            seeker_latitude=12.9716,
            seeker_longitude=77.5946,
            provider_latitude=12.9720,
            provider_longitude=77.5950,
            current_distance_meters=55.0,
        )
        order = await s.get(WorkOrder, session.work_order_id)
        assert order is not None
        order.status, order.updated_at, order.details = "cancelled", ended, personal
        order.seeker_latitude, order.seeker_longitude = 12.9716, 77.5946
        unmatched = await make_work_order(
            s, status="expired", details=personal, seeker_latitude=1.0, seeker_longitude=2.0
        )
        unmatched.updated_at = ended
    headers = service_auth(db_url)
    before = (await client.get(f"{SESSIONS}/{session.session_id}", headers=headers)).json()
    assert before["mediums"]["seeker"] == {"whatsapp": "9876543210"}

    state: AppState = app.state.worksession
    await state.pipeline.submit(SweepExpired())

    after = (await client.get(f"{SESSIONS}/{session.session_id}", headers=headers)).json()
    assert after["mediums"] == {"seeker": None, "provider": None}
    assert after["positions"] == {"seeker": None, "provider": None}
    assert (after["distance_meters"], after["distance_formatted"]) == (None, None)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"mediums", "positions", "distance_meters", "distance_formatted"}
    for work_id in (session.work_order_id, unmatched.id):
        view = (await client.get(f"{ORDERS}/{work_id}", headers=headers)).json()
        assert (view["details"], view["seeker_location"]) == ({}, None)
        assert view["status"] in {"cancelled", "expired"}


async def test_get_unknown_session_is_404(client: httpx.AsyncClient, db_url: str) -> None:
    response = await client.get(f"{SESSIONS}/{uuid.uuid4()}", headers=service_auth(db_url))
    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found", "code": "session_not_found"}


@pytest.mark.parametrize(
    "path",
    [f"{SESSIONS}/not-a-uuid", f"{SESSIONS}/42/cancel", f"{SESSIONS}/xyz/complete"],
)
async def test_a_session_id_that_is_not_a_uuid_is_422(
    client: httpx.AsyncClient, db_url: str, path: str
) -> None:
    method = "POST" if path.endswith(("cancel", "complete")) else "GET"
    response = await client.request(method, path, headers=service_auth(db_url))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "session_id"]


# --- GET /internal/v1/sessions -------------------------------------------------------


async def _ids(client: httpx.AsyncClient, db_url: str, **params: Any) -> list[str]:
    response = await client.get(SESSIONS, params=params, headers=service_auth(db_url))
    assert response.status_code == 200, response.text
    return [s["session_id"] for s in response.json()["sessions"]]


async def test_lookup_by_user_finds_both_roles_newest_first(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    as_seeker = await _session(db, seeker_id="u-1", provider_id="p-9", state="completed")
    await _session(db, seeker_id="s-9", provider_id="p-8")
    as_provider = await _session(db, seeker_id="s-7", provider_id="u-1")

    assert await _ids(client, db_url, user_id="u-1") == [
        str(as_provider.session_id),
        str(as_seeker.session_id),
    ]


async def test_lookup_by_state_and_user(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    done = await _session(db, seeker_id="u-1", provider_id="p-1", state="completed")
    live = await _session(db, seeker_id="u-1", provider_id="p-2", state="active")
    other = await _session(db, seeker_id="s-3", provider_id="p-3", state="completed")

    assert await _ids(client, db_url, state="completed") == [
        str(other.session_id),
        str(done.session_id),
    ]
    assert await _ids(client, db_url, state="active", user_id="u-1") == [str(live.session_id)]
    assert await _ids(client, db_url, state="waiting", user_id="u-1") == []


async def test_lookup_pages_with_a_cursor(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    created = [
        await _session(db, seeker_id="u-1", provider_id=f"p-{i}", state="cancelled")
        for i in range(5)
    ]
    expected = [str(s.session_id) for s in reversed(created)]

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(4):
        params: dict[str, Any] = {"user_id": "u-1", "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get(SESSIONS, params=params, headers=service_auth(db_url))).json()
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == expected
    assert cursor is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"limit": 0}, "limit", id="limit-0"),
        pytest.param({"limit": 101}, "limit", id="limit-101"),
        pytest.param({"state": "ended"}, "state", id="unknown-state"),
        pytest.param({"user_id": "u" * 65}, "user_id", id="65-char-user"),
        pytest.param({"user_id": ""}, "user_id", id="empty-user"),
        pytest.param({"cursor": "%%%"}, "cursor", id="not-base64"),
        pytest.param({"cursor": _b64(json.dumps(["m1", 1, 2]).encode())}, "cursor", id="history"),
        pytest.param({"cursor": _b64(json.dumps(["s1", "7"]).encode())}, "cursor", id="string-id"),
    ],
)
async def test_bad_lookup_parameters_are_422(
    client: httpx.AsyncClient, db_url: str, params: dict[str, Any], field: str
) -> None:
    response = await client.get(SESSIONS, params=params, headers=service_auth(db_url))
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["query", field]]


# --- GET /internal/v1/sessions/{id}/messages (moderation, 1.1) ----------------------


def moderation_url(session_id: uuid.UUID | str) -> str:
    return f"{SESSIONS}/{session_id}/messages"


async def test_moderation_reads_any_sessions_chat_with_sender_type_only(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    session = await _session(db, seeker_id="s-mod", provider_id="p-mod", state="cancelled")
    t0 = utcnow() - timedelta(minutes=5)
    async with db.transaction() as s:
        first = await make_chat_message(s, session=session, created_at=t0, text="hi there")
        second = await make_chat_message(
            s,
            session=session,
            created_at=t0 + timedelta(seconds=3),
            sender_type="provider",
            text="abuse?",
            status="delivered",
            delivered_at=t0 + timedelta(seconds=4),
        )

    response = await client.get(moderation_url(session.session_id), headers=service_auth(db_url))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "messages": [
            {
                "message_id": str(second.message_id),
                "sender_type": "provider",
                "message": "abuse?",
                "status": "delivered",
                "created_at": isoformat_z(t0 + timedelta(seconds=3)),
                "delivered_at": isoformat_z(t0 + timedelta(seconds=4)),
                "read_at": None,
            },
            {
                "message_id": str(first.message_id),
                "sender_type": "seeker",
                "message": "hi there",
                "status": "sent",
                "created_at": isoformat_z(t0),
                "delivered_at": None,
                "read_at": None,
            },
        ],
        "next_cursor": None,
    }
    assert "s-mod" not in response.text
    assert "p-mod" not in response.text


async def test_moderation_pages_exactly_like_the_participant_history(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    session = await _session(db, seeker_id="s-pages", provider_id="p-pages", state="active")
    base = utcnow() - timedelta(minutes=1)
    tie = base + timedelta(seconds=1)
    times = [base + timedelta(seconds=2), tie, tie, tie, base + timedelta(seconds=3), tie, tie]
    async with db.transaction() as s:
        for i, t in enumerate(times):
            await make_chat_message(s, session=session, created_at=t, text=f"m{i}")

    async def pages(url: str, headers: dict[str, str]) -> list[list[str]]:
        found: list[list[str]] = []
        cursor: str | None = None
        for _ in range(5):
            params: dict[str, Any] = {"limit": 3}
            if cursor is not None:
                params["before"] = cursor
            response = await client.get(url, params=params, headers=headers)
            assert response.status_code == 200, response.text
            found.append([m["message_id"] for m in response.json()["messages"]])
            cursor = response.json()["next_cursor"]
            if cursor is None:
                return found
        raise AssertionError("more pages than messages")

    moderated = await pages(moderation_url(session.session_id), service_auth(db_url))
    participant = await pages(
        f"/v1/sessions/{session.session_id}/messages", bearer(db_url, "seeker", "s-pages")
    )
    assert [len(page) for page in moderated] == [3, 3, 1]
    assert moderated == participant


async def test_moderation_never_shows_expired_messages(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    session = await _session(db, state="completed")
    now = utcnow()
    async with db.transaction() as s:
        await make_chat_message(
            s, session=session, created_at=now - timedelta(hours=2), expires_at=now
        )
        kept = await make_chat_message(
            s,
            session=session,
            created_at=now - timedelta(hours=1),
            expires_at=now + timedelta(hours=1),
        )

    response = await client.get(moderation_url(session.session_id), headers=service_auth(db_url))

    assert [m["message_id"] for m in response.json()["messages"]] == [str(kept.message_id)]


async def test_moderation_of_an_unknown_session_is_404(
    client: httpx.AsyncClient, db_url: str
) -> None:
    response = await client.get(moderation_url(uuid.uuid4()), headers=service_auth(db_url))
    assert response.status_code == 404
    assert response.json()["code"] == "session_not_found"


@pytest.mark.parametrize(
    "before",
    [
        pytest.param("not-a-cursor", id="text"),
        pytest.param(_b64(json.dumps(["s1", 7]).encode()), id="lookup-cursor"),
        pytest.param(_b64(json.dumps(["m1", 1, 2**31]).encode()), id="row-id-out-of-range"),
        pytest.param(_b64(json.dumps(["m1", 2**63, 1]).encode()), id="time-out-of-range"),
    ],
)
async def test_a_forged_moderation_cursor_is_422(
    client: httpx.AsyncClient, db: Database, db_url: str, before: str
) -> None:
    session = await _session(db)
    response = await client.get(
        moderation_url(session.session_id), params={"before": before}, headers=service_auth(db_url)
    )
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "before"]]


# --- POST cancel / complete ----------------------------------------------------------


def _events(published: Published) -> list[tuple[str, dict[str, Any]]]:
    return [(channel, message["event"]) for channel, message in published.messages]


async def test_cancel_ends_the_session_and_tells_both_as_system(
    client: httpx.AsyncClient, db: Database, db_url: str, published: Published
) -> None:
    session = await _session(db, seeker_id="s-1", provider_id="p-1", state="active", last_seq=3)
    async with db.transaction() as s:
        await make_chat_message(s, session=session)
    await published.subscribe("ws:seeker:s-1", "ws:provider:p-1")

    response = await client.post(
        f"{SESSIONS}/{session.session_id}/cancel", headers=service_auth(db_url)
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["cancelled_by"], body["last_seq"]) == ("cancelled", "system", 4)
    assert body["cancelled_at"] is not None
    async with db.transaction() as s:
        row = (await s.execute(select(WorkSession))).scalar_one()
        order = (await s.execute(select(WorkOrder))).scalar_one()
        message = (await s.execute(select(ChatMessage))).scalar_one()
        provider_active = (await s.execute(select(ProviderActiveStatus.is_active))).scalar_one()
        seeker_searching = (
            await s.execute(select(SeekerSearchPreference.is_searching))
        ).scalar_one()
    assert (row.connection_state, row.cancelled_by, row.cancelled_by_id) == (
        "cancelled",
        "system",
        None,
    )
    assert order.status == "cancelled"
    assert message.expires_at is not None
    assert message.expires_at > utcnow() + timedelta(hours=23)
    assert (provider_active, seeker_searching) == (True, True)
    events = _events(published)
    assert [channel for channel, _ in events] == ["ws:seeker:s-1", "ws:provider:p-1"]
    for _, event in events:
        assert (event["kind"], event["seq"], event["data"]) == (
            "connection_cancelled",
            4,
            {"cancelled_by": "system"},
        )
        assert event["session_id"] == str(session.session_id)


async def test_complete_ends_the_session_and_tells_both(
    client: httpx.AsyncClient, db: Database, db_url: str, published: Published
) -> None:
    session = await _session(db, seeker_id="s-1", provider_id="p-1", state="waiting", last_seq=1)
    await published.subscribe("ws:seeker:s-1", "ws:provider:p-1")

    response = await client.post(
        f"{SESSIONS}/{session.session_id}/complete", headers=service_auth(db_url)
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["cancelled_by"], body["last_seq"]) == ("completed", None, 2)
    assert body["completed_at"] is not None
    async with db.transaction() as s:
        order = (await s.execute(select(WorkOrder))).scalar_one()
        provider_active = (await s.execute(select(ProviderActiveStatus.is_active))).scalar_one()
        searching = (await s.execute(select(SeekerSearchPreference))).first()
    assert order.status == "completed"
    assert provider_active is True
    assert searching is None  # the seeker's searching stays as it was
    events = _events(published)
    assert [channel for channel, _ in events] == ["ws:seeker:s-1", "ws:provider:p-1"]
    assert all((e["kind"], e["seq"], e["data"]) == ("session_completed", 2, {}) for _, e in events)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("cancel", "cancel"),
        ("cancel", "complete"),
        ("complete", "cancel"),
        ("complete", "complete"),
    ],
)
async def test_a_second_ending_is_409_and_publishes_nothing(
    client: httpx.AsyncClient,
    db: Database,
    db_url: str,
    published: Published,
    first: str,
    second: str,
) -> None:
    session = await _session(db, seeker_id="s-1", provider_id="p-1")
    url = f"{SESSIONS}/{session.session_id}"
    assert (await client.post(f"{url}/{first}", headers=service_auth(db_url))).status_code == 200
    await published.subscribe("ws:seeker:s-1", "ws:provider:p-1")

    response = await client.post(f"{url}/{second}", headers=service_auth(db_url))

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_state"
    assert published.messages == []
    detail = (await client.get(url, headers=service_auth(db_url))).json()
    assert detail["state"] == {"cancel": "cancelled", "complete": "completed"}[first]
    assert detail["last_seq"] == 1


@pytest.mark.parametrize("action", ["cancel", "complete"])
async def test_ending_an_unknown_session_is_404(
    client: httpx.AsyncClient, db_url: str, action: str
) -> None:
    response = await client.post(
        f"{SESSIONS}/{uuid.uuid4()}/{action}", headers=service_auth(db_url)
    )
    assert response.status_code == 404
    assert response.json()["code"] == "session_not_found"


# --- availability --------------------------------------------------------------------


def availability_url(user_id: str) -> str:
    return f"/internal/v1/users/{user_id}/availability"


async def test_availability_of_an_unknown_user_is_all_null(
    client: httpx.AsyncClient, db_url: str
) -> None:
    response = await client.get(availability_url("nobody"), headers=service_auth(db_url))
    assert response.status_code == 200
    assert response.json() == {"provider_active": None, "seeker_searching": None}


async def test_put_availability_changes_only_the_given_flags(
    client: httpx.AsyncClient, db_url: str
) -> None:
    url, auth = availability_url("u-1"), service_auth(db_url)

    first = await client.put(url, json={"provider_active": True}, headers=auth)
    second = await client.put(
        url, json={"seeker_searching": False, "provider_active": None}, headers=auth
    )
    unchanged = await client.put(url, json={}, headers=auth)
    flipped = await client.put(url, json={"provider_active": False}, headers=auth)

    assert first.json() == {"provider_active": True, "seeker_searching": None}
    assert second.json() == {"provider_active": True, "seeker_searching": False}
    assert unchanged.json() == {"provider_active": True, "seeker_searching": False}
    assert flipped.json() == {"provider_active": False, "seeker_searching": False}
    got = await client.get(url, headers=auth)
    assert got.json() == flipped.json()
    other = await client.get(availability_url("u-2"), headers=auth)
    assert other.json() == {"provider_active": None, "seeker_searching": None}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"provider_active": "true"}, id="string"),
        pytest.param({"provider_active": 1}, id="number"),
        pytest.param({"seeker_searching": True, "is_busy": True}, id="unknown-field"),
        pytest.param([True], id="not-an-object"),
    ],
)
async def test_bad_availability_body_is_422(
    client: httpx.AsyncClient, db_url: str, body: Any
) -> None:
    url, auth = availability_url("u-1"), service_auth(db_url)
    response = await client.put(url, json=body, headers=auth)
    assert response.status_code == 422
    assert (await client.get(url, headers=auth)).json() == {
        "provider_active": None,
        "seeker_searching": None,
    }


async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient, db_url: str) -> None:
    response = await client.put(
        availability_url("u-1"),
        content=b"\xff{not json",
        headers={**service_auth(db_url), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert set(response.json()) == {"detail"}


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_a_user_id_over_64_chars_is_422(
    client: httpx.AsyncClient, db_url: str, method: str
) -> None:
    response = await client.request(
        method, availability_url("u" * 65), json={}, headers=service_auth(db_url)
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "user_id"]


# --- authentication and the document ---------------------------------------------------

INTERNAL_CALLS = [
    ("GET", f"{SESSIONS}/{SOME_UUID}"),
    ("GET", SESSIONS),
    ("GET", f"{SESSIONS}/{SOME_UUID}/messages"),
    ("POST", f"{SESSIONS}/{SOME_UUID}/cancel"),
    ("POST", f"{SESSIONS}/{SOME_UUID}/complete"),
    ("GET", availability_url("u-1")),
    ("PUT", availability_url("u-1")),
]


@pytest.mark.parametrize(("method", "path"), INTERNAL_CALLS)
async def test_no_token_is_401(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path, json={} if method == "PUT" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("user_type", ["seeker", "provider"])
@pytest.mark.parametrize(("method", "path"), INTERNAL_CALLS)
async def test_a_participant_token_is_403(
    client: httpx.AsyncClient, db_url: str, method: str, path: str, user_type: UserType
) -> None:
    response = await client.request(
        method,
        path,
        json={"provider_active": True} if method == "PUT" else None,
        headers=bearer(db_url, user_type, "u-1"),
    )
    assert response.status_code == 403
    assert set(response.json()) == {"detail"}


async def test_a_participant_token_changes_nothing(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    session = await _session(db, seeker_id="s-1", provider_id="p-1")
    await client.post(
        f"{SESSIONS}/{session.session_id}/cancel", headers=bearer(db_url, "seeker", "s-1")
    )
    detail = await client.get(f"{SESSIONS}/{session.session_id}", headers=service_auth(db_url))
    assert detail.json()["state"] == "waiting"


async def test_the_internal_api_is_documented(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {
        (SESSIONS + "/{session_id}", "get"): {"200", "401", "403", "404", "422"},
        (SESSIONS, "get"): {"200", "401", "403", "422"},
        (SESSIONS + "/{session_id}/messages", "get"): {"200", "401", "403", "404", "422"},
        (SESSIONS + "/{session_id}/cancel", "post"): {"200", "401", "403", "404", "409", "422"},
        (SESSIONS + "/{session_id}/complete", "post"): {"200", "401", "403", "404", "409", "422"},
        ("/internal/v1/users/{user_id}/availability", "get"): {"200", "401", "403", "422"},
        ("/internal/v1/users/{user_id}/availability", "put"): {
            "200",
            "400",
            "401",
            "403",
            "422",
        },
    }
    for (path, method), codes in expected.items():
        operation = paths[path][method]
        assert codes <= set(operation["responses"]), (path, method)
        assert operation["security"] == [{"bearer": []}]
