"""The internal work order API, driven in process through the whole FastAPI app."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.factories import make_work_session
from tests.pipeline_run import decoded
from tests.rest.conftest import Published, bearer, settings_for
from worksession.config import Settings
from worksession.kit.db import Database
from worksession.kit.jwt import UserType
from worksession.lifespan import build_verifier
from worksession.models import WorkOffer, WorkOrder
from worksession.state import AppState

URL = "/internal/v1/work-orders"
GOOD_BODY: dict[str, Any] = {
    "seeker_id": "s1",
    "provider_ids": ["p1", "p2"],
    "details": {"service": "plumbing"},
    "seeker_location": {"lat": 12.9716, "lng": 77.5946},
}


async def test_create_returns_201_stores_the_order_and_publishes_work_requests(
    app: FastAPI, client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    state: AppState = app.state.worksession
    published: list[tuple[str, dict[str, Any]]] = []
    await state.broker.start(lambda channel, payload: published.append((channel, decoded(payload))))
    await state.broker.subscribe("ws:provider:p1")

    response = await client.post(URL, json=GOOD_BODY, headers=bearer(db_url))

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert (body["seeker_id"], body["details"], body["session_id"]) == (
        "s1",
        {"service": "plumbing"},
        None,
    )
    assert body["seeker_location"] == {"lat": 12.9716, "lng": 77.5946}
    assert body["created_at"].endswith("Z")
    assert body["expires_at"].endswith("Z")
    assert body["offers"] == [
        {"provider_id": "p1", "status": "offered", "responded_at": None},
        {"provider_id": "p2", "status": "offered", "responded_at": None},
    ]
    assert (body["offered_to"], body["skipped"]) == (["p1", "p2"], [])
    async with db.transaction() as s:
        order = (await s.execute(select(WorkOrder))).scalar_one()
        offers = (await s.execute(select(WorkOffer.provider_id))).scalars().all()
    assert order.id == body["work_id"]
    assert sorted(offers) == ["p1", "p2"]
    assert published == [
        (
            "ws:provider:p1",
            {
                "frame": {
                    "type": "work_request",
                    "work_id": body["work_id"],
                    "details": {"service": "plumbing"},
                    "seeker_location": {"lat": 12.9716, "lng": 77.5946},
                    "created_at": body["created_at"],
                    "expires_at": body["expires_at"],
                }
            },
        )
    ]


async def test_get_returns_the_order(client: httpx.AsyncClient, db_url: str) -> None:
    created = (await client.post(URL, json=GOOD_BODY, headers=bearer(db_url))).json()

    response = await client.get(f"{URL}/{created['work_id']}", headers=bearer(db_url))

    assert response.status_code == 200
    # The creation's answer is the order plus to whom it went, which is not stored.
    del created["offered_to"], created["skipped"]
    assert response.json() == created


async def test_get_unknown_order_is_404(client: httpx.AsyncClient, db_url: str) -> None:
    response = await client.get(f"{URL}/4242", headers=bearer(db_url))
    assert response.status_code == 404
    assert response.json() == {"detail": "Work order not found", "code": "work_not_found"}


@pytest.mark.parametrize("work_id", ["0", "-1", "2147483648", "99999999999999999999999", "abc"])
async def test_work_id_out_of_range_is_422(
    client: httpx.AsyncClient, db_url: str, work_id: str
) -> None:
    response = await client.get(f"{URL}/{work_id}", headers=bearer(db_url))
    assert response.status_code == 422


async def test_no_token_is_401_with_a_challenge(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=GOOD_BODY)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert set(response.json()) == {"detail"}


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer a.b.c"],
)
async def test_bad_token_is_401(client: httpx.AsyncClient, authorization: str) -> None:
    response = await client.get(f"{URL}/1", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_token_signed_with_another_secret_is_401(client: httpx.AsyncClient) -> None:
    other = build_verifier(
        Settings(env="test", jwt_secret="another-secret-0123456789-abcdefghijklmnopqrstuv")
    ).issue(sub="orders-svc", user_type="service")
    response = await client.post(URL, json=GOOD_BODY, headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 401


async def test_expired_token_is_401(client: httpx.AsyncClient, db_url: str) -> None:
    expired = build_verifier(settings_for(db_url)).issue(
        sub="orders-svc", user_type="service", ttl_s=-5
    )
    response = await client.post(
        URL, json=GOOD_BODY, headers={"Authorization": f"Bearer {expired}"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("user_type", ["seeker", "provider"])
async def test_participant_token_is_403(
    client: httpx.AsyncClient, db: Database, db_url: str, user_type: UserType
) -> None:
    response = await client.post(URL, json=GOOD_BODY, headers=bearer(db_url, user_type))
    assert response.status_code == 403
    assert set(response.json()) == {"detail"}
    async with db.transaction() as s:
        assert (await s.execute(select(WorkOrder))).first() is None


def _with(**changes: Any) -> str:
    return json.dumps({**GOOD_BODY, **changes})


@pytest.mark.parametrize(
    ("content", "field"),
    [
        pytest.param(_with(provider_ids=[]), "provider_ids", id="no-provider"),
        pytest.param(_with(provider_ids=["p1", "p1"]), "provider_ids", id="duplicate-provider"),
        pytest.param(_with(provider_ids=[f"p{i}" for i in range(51)]), "provider_ids", id="51"),
        pytest.param(_with(provider_ids=["p" * 65]), "provider_ids", id="65-char-provider"),
        pytest.param(_with(provider_ids=[""]), "provider_ids", id="empty-provider-id"),
        pytest.param(_with(seeker_id="s" * 65), "seeker_id", id="65-char-seeker"),
        pytest.param(_with(seeker_id=12), "seeker_id", id="numeric-seeker"),
        pytest.param(
            '{"seeker_id": "s1", "provider_ids": ["p1"], "seeker_location": '
            '{"lat": NaN, "lng": 77.5}}',
            "seeker_location",
            id="nan-lat",
        ),
        pytest.param(
            '{"seeker_id": "s1", "provider_ids": ["p1"], "seeker_location": '
            '{"lat": 12.9, "lng": Infinity}}',
            "seeker_location",
            id="infinite-lng",
        ),
        pytest.param(
            _with(seeker_location={"lat": 90.5, "lng": 0}), "seeker_location", id="lat-range"
        ),
        pytest.param(
            _with(seeker_location={"lat": "12.9", "lng": 0}), "seeker_location", id="lat-string"
        ),
        pytest.param(
            '{"seeker_id": "s1", "provider_ids": ["p1"], "details": {"x": NaN}}',
            "details",
            id="nan-in-details",
        ),
        pytest.param(_with(details={"note": "x" * 4100}), "details", id="details-too-big"),
        pytest.param(_with(status="accepted"), "status", id="unknown-field"),
        pytest.param(
            _with(seeker_location={"lat": 1, "lng": 2, "alt": 3}),
            "seeker_location",
            id="unknown-location-field",
        ),
    ],
)
async def test_bad_body_is_422_without_echoing_the_input(
    client: httpx.AsyncClient, db: Database, db_url: str, content: str, field: str
) -> None:
    response = await client.post(
        URL, content=content, headers={**bearer(db_url), "Content-Type": "application/json"}
    )

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(e["loc"][:2] == ["body", field] for e in errors), errors
    assert all("input" not in e for e in errors)
    async with db.transaction() as s:
        assert (await s.execute(select(WorkOrder))).first() is None


async def test_a_seeker_among_the_providers_is_422_and_nothing_stored(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    body = {**GOOD_BODY, "provider_ids": ["p1", GOOD_BODY["seeker_id"]]}
    response = await client.post(URL, json=body, headers=bearer(db_url))

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    # The shape of every documented 422, so schema-driven clients parse it.
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "provider_ids"]]
    async with db.transaction() as s:
        assert (await s.execute(select(WorkOrder))).first() is None
        assert (await s.execute(select(WorkOffer))).first() is None


async def test_busy_and_inactive_providers_are_skipped(
    client: httpx.AsyncClient, db: Database, db_url: str, published: Published
) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s9", provider_id="p-busy", state="active")
    off = await client.put(
        "/internal/v1/users/p-off/availability",
        json={"provider_active": False},
        headers=bearer(db_url),
    )
    assert off.status_code == 200
    await published.subscribe("ws:provider:p-busy", "ws:provider:p-off", "ws:provider:p1")
    body = {**GOOD_BODY, "provider_ids": ["p-busy", "p-off", "p1"]}

    response = await client.post(URL, json=body, headers=bearer(db_url))

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["offered_to"] == ["p1"]
    assert created["skipped"] == [
        {"provider_id": "p-busy", "reason": "busy"},
        {"provider_id": "p-off", "reason": "inactive"},
    ]
    assert [o["provider_id"] for o in created["offers"]] == ["p1"]
    assert [channel for channel, _ in published.messages] == ["ws:provider:p1"]


async def test_nobody_left_to_offer_is_409_and_nothing_stored(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s9", provider_id="p1", state="waiting")
    for provider in ("p2", "p3"):
        await client.put(
            f"/internal/v1/users/{provider}/availability",
            json={"provider_active": False},
            headers=bearer(db_url),
        )
    body = {**GOOD_BODY, "provider_ids": ["p1", "p2", "p3"]}

    response = await client.post(URL, json=body, headers=bearer(db_url))

    assert response.status_code == 409
    assert response.json()["code"] == "no_provider_available"
    async with db.transaction() as s:
        assert (await s.execute(select(WorkOrder.seeker_id))).scalars().all() == ["s9"]
        assert (await s.execute(select(WorkOffer))).first() is None


async def test_a_seeker_with_a_live_session_is_409_seeker_busy(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id="s1", provider_id="p9", state="active")

    response = await client.post(URL, json=GOOD_BODY, headers=bearer(db_url))

    assert response.status_code == 409
    assert response.json()["code"] == "seeker_busy"
    async with db.transaction() as s:
        assert (await s.execute(select(WorkOffer))).first() is None


async def test_details_of_exactly_the_limit_are_accepted(
    client: httpx.AsyncClient, db_url: str
) -> None:
    # {"note":"xxx..."} is 11 bytes of framing around the text.
    details = {"note": "x" * (4096 - 11)}
    assert len(json.dumps(details, separators=(",", ":"))) == 4096
    response = await client.post(
        URL, json={**GOOD_BODY, "details": details}, headers=bearer(db_url)
    )
    assert response.status_code == 201


async def test_the_api_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    post = document["paths"][URL]["post"]
    get = document["paths"][URL + "/{work_id}"]["get"]
    assert {"201", "401", "403", "409", "422"} <= set(post["responses"])
    created = post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][created.rsplit("/", 1)[-1]]
    assert {"offered_to", "skipped"} <= set(schema["required"])
    assert {"200", "401", "403", "404", "422"} <= set(get["responses"])
    assert post["security"] == [{"bearer": []}]
