"""*1.1* Withdrawing a pending order through the internal API, and ``GET /v1/me/work-orders``,
in process through the whole FastAPI app, on each backend."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.rest.conftest import Published, bearer
from worksession.kit.db import Database
from worksession.kit.jwt import UserType
from worksession.models import WorkOffer, WorkOrder
from worksession.pipeline import commands as c
from worksession.pipeline.runner import Pipeline
from worksession.state import AppState

ORDERS = "/internal/v1/work-orders"
MINE = "/v1/me/work-orders"


async def _create(
    client: httpx.AsyncClient, db_url: str, seeker_id: str, *provider_ids: str
) -> int:
    body = {"seeker_id": seeker_id, "provider_ids": list(provider_ids), "details": {"n": 1}}
    response = await client.post(ORDERS, json=body, headers=bearer(db_url))
    assert response.status_code == 201, response.text
    work_id: int = response.json()["work_id"]
    return work_id


def _pipeline(app: FastAPI) -> Pipeline:
    state: AppState = app.state.worksession
    return state.pipeline


# --- POST /internal/v1/work-orders/{work_id}/cancel ----------------------------------------


async def test_cancel_withdraws_the_order_and_its_open_offers_and_tells_everyone(
    app: FastAPI, client: httpx.AsyncClient, db: Database, db_url: str, published: Published
) -> None:
    work_id = await _create(client, db_url, "s-1", "p-1", "p-2", "p-3")
    await _pipeline(app).submit(c.DeclineWork(work_id, "p-2"))
    await published.subscribe("ws:seeker:s-1", "ws:provider:p-1", "ws:provider:p-2")

    response = await client.post(f"{ORDERS}/{work_id}/cancel", headers=bearer(db_url))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["work_id"], body["status"], body["session_id"]) == (work_id, "withdrawn", None)
    assert [(o["provider_id"], o["status"]) for o in body["offers"]] == [
        ("p-1", "withdrawn"),
        ("p-2", "declined"),
        ("p-3", "withdrawn"),
    ]
    await _pipeline(app).wait_idle()
    assert published.messages == [
        ("ws:seeker:s-1", {"frame": {"type": "work_withdrawn", "work_id": work_id}}),
        ("ws:provider:p-1", {"frame": {"type": "work_unavailable", "work_id": work_id}}),
    ]
    async with db.transaction() as s:
        status = (
            await s.execute(select(WorkOrder.status).where(WorkOrder.id == work_id))
        ).scalar_one()
        offers = (
            await s.execute(
                select(WorkOffer.provider_id, WorkOffer.status)
                .where(WorkOffer.work_order_id == work_id)
                .order_by(WorkOffer.provider_id)
            )
        ).all()
    assert status == "withdrawn"
    assert [tuple(o) for o in offers] == [
        ("p-1", "withdrawn"),
        ("p-2", "declined"),
        ("p-3", "withdrawn"),
    ]


async def test_cancel_of_an_order_no_longer_pending_is_409_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, db_url: str
) -> None:
    work_id = await _create(client, db_url, "s-2", "p-1")
    await _pipeline(app).submit(c.AcceptWork(work_id, "p-1"))

    response = await client.post(f"{ORDERS}/{work_id}/cancel", headers=bearer(db_url))

    assert response.status_code == 409
    assert response.json()["code"] == "work_unavailable"
    assert set(response.json()) == {"detail", "code"}
    got = await client.get(f"{ORDERS}/{work_id}", headers=bearer(db_url))
    assert got.json()["status"] == "accepted"
    again = await _create(client, db_url, "s-3", "p-2")
    assert (
        await client.post(f"{ORDERS}/{again}/cancel", headers=bearer(db_url))
    ).status_code == 200
    twice = await client.post(f"{ORDERS}/{again}/cancel", headers=bearer(db_url))
    assert twice.status_code == 409


async def test_cancel_of_an_unknown_order_is_404(client: httpx.AsyncClient, db_url: str) -> None:
    response = await client.post(f"{ORDERS}/424242/cancel", headers=bearer(db_url))
    assert response.status_code == 404
    assert response.json()["code"] == "work_not_found"


@pytest.mark.parametrize("work_id", ["0", "-1", str(2**31), "abc"])
async def test_cancel_of_a_work_id_out_of_range_is_422(
    client: httpx.AsyncClient, db_url: str, work_id: str
) -> None:
    response = await client.post(f"{ORDERS}/{work_id}/cancel", headers=bearer(db_url))
    assert response.status_code == 422


async def test_cancel_without_a_token_is_401(client: httpx.AsyncClient, db_url: str) -> None:
    work_id = await _create(client, db_url, "s-4", "p-1")
    response = await client.post(f"{ORDERS}/{work_id}/cancel")
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}


@pytest.mark.parametrize("user_type", ["seeker", "provider"])
async def test_cancel_with_a_participant_token_is_403(
    client: httpx.AsyncClient, db_url: str, user_type: UserType
) -> None:
    # Even the order's own seeker: over REST only the internal API withdraws.
    work_id = await _create(client, db_url, "s-5", "p-1")
    response = await client.post(
        f"{ORDERS}/{work_id}/cancel", headers=bearer(db_url, user_type, "s-5")
    )
    assert response.status_code == 403
    got = await client.get(f"{ORDERS}/{work_id}", headers=bearer(db_url))
    assert got.json()["status"] == "pending"


# --- GET /v1/me/work-orders ------------------------------------------------------------------


async def _mine(
    client: httpx.AsyncClient, db_url: str, role: UserType, user_id: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(MINE, params=params, headers=bearer(db_url, role, user_id))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_every_outcome_appears_newest_first_with_its_session(
    app: FastAPI, client: httpx.AsyncClient, db_url: str
) -> None:
    pipeline = _pipeline(app)
    seeker = "s-outcomes"
    # One order at a time: the seeker may have one live session only.
    rejected = await _create(client, db_url, seeker, "p-1")
    await pipeline.submit(c.DeclineWork(rejected, "p-1"))
    withdrawn = await _create(client, db_url, seeker, "p-1", "p-2")
    await pipeline.submit(c.WithdrawWork(withdrawn, seeker))
    cancelled = await _create(client, db_url, seeker, "p-1", "p-2")
    cancelled_session = uuid.uuid4()
    await pipeline.submit(c.AcceptWork(cancelled, "p-2", session_id=cancelled_session))
    await pipeline.submit(c.CancelSession(cancelled_session, c.Actor(seeker, "seeker")))
    completed = await _create(client, db_url, seeker, "p-1")
    completed_session = uuid.uuid4()
    await pipeline.submit(c.AcceptWork(completed, "p-1", session_id=completed_session))
    await pipeline.submit(c.CompleteSession(completed_session, "p-1"))
    accepted = await _create(client, db_url, seeker, "p-1", "p-2")
    accepted_session = uuid.uuid4()
    await pipeline.submit(c.AcceptWork(accepted, "p-1", session_id=accepted_session))
    other_seekers = await _create(client, db_url, "s-someone-else", "p-2")

    body = await _mine(client, db_url, "seeker", seeker)

    assert body["next_cursor"] is None
    assert [(o["work_id"], o["status"], o["session_id"]) for o in body["work_orders"]] == [
        (accepted, "accepted", str(accepted_session)),
        (completed, "completed", str(completed_session)),
        (cancelled, "cancelled", str(cancelled_session)),
        (withdrawn, "withdrawn", None),
        (rejected, "rejected", None),
    ]
    first = body["work_orders"][0]
    assert set(first) == {"work_id", "status", "created_at", "expires_at", "session_id"}
    assert first["created_at"].endswith("Z")
    assert first["expires_at"].endswith("Z")

    # A provider sees what was offered to them, and only their own sessions.
    p2 = await _mine(client, db_url, "provider", "p-2")
    assert [(o["work_id"], o["status"], o["session_id"]) for o in p2["work_orders"]] == [
        (other_seekers, "pending", None),
        (accepted, "accepted", None),  # p-1's session, not p-2's business
        (cancelled, "cancelled", str(cancelled_session)),
        (withdrawn, "withdrawn", None),
    ]
    nobody = await _mine(client, db_url, "provider", "p-never-offered")
    assert nobody == {"work_orders": [], "next_cursor": None}
    # The role is the token's: the seeker's id with a provider token lists offers, none.
    assert (await _mine(client, db_url, "provider", seeker))["work_orders"] == []


async def test_pages_follow_next_cursor_to_the_end(client: httpx.AsyncClient, db_url: str) -> None:
    created = [await _create(client, db_url, "s-pages", "p-1") for _ in range(5)]

    seen: list[int] = []
    cursors: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        body = await _mine(client, db_url, "seeker", "s-pages", **params)
        seen += [o["work_id"] for o in body["work_orders"]]
        if body["next_cursor"] is None:
            break
        cursors.append(body["next_cursor"])
        params = {"limit": 2, "cursor": body["next_cursor"]}

    assert seen == sorted(created, reverse=True)
    assert len(cursors) == 2
    # Exactly a full last page has no cursor either: the next page is not left empty.
    provider_pages = await _mine(client, db_url, "provider", "p-1", limit=5)
    assert len(provider_pages["work_orders"]) == 5
    assert provider_pages["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "101", "x"])
async def test_a_bad_limit_is_422(client: httpx.AsyncClient, db_url: str, limit: str) -> None:
    response = await client.get(
        MINE, params={"limit": limit}, headers=bearer(db_url, "seeker", "s-1")
    )
    assert response.status_code == 422


async def test_the_listing_needs_a_participant_token(
    client: httpx.AsyncClient, db_url: str
) -> None:
    assert (await client.get(MINE)).status_code == 401
    assert (await client.get(MINE, headers=bearer(db_url))).status_code == 403


async def test_both_routes_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths[f"{ORDERS}/{{work_id}}/cancel"]) == {"post"}
    listing = paths[MINE]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor"}
    assert {"200", "401", "403", "422", "429"} <= set(listing["responses"])
