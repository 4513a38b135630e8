"""PROTOCOL 7: a cursor the server did not make is a 422, never a 500 (issue 12, finding 4).

Every row id is a PostgreSQL ``integer``: a forged cursor carrying 2**31 once reached the
keyset comparison, and asyncpg refused the parameter (a 500, the connection dropped). These
requests run on each backend, PostgreSQL included when its URL is set, against a session the
caller really takes part in, so that the cursor would reach the query if it decoded.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.factories import make_work_session
from tests.rest.conftest import bearer
from worksession.kit.db import Database

SEEKER = "seeker-forged-cursor"
PROVIDER = "provider-forged-cursor"


def _cursor(*items: object) -> str:
    raw = json.dumps(list(items), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


ROW_ID_OUT_OF_RANGE = (2**31, 2**31 + 5, 2**63 - 1, 2**63, -1, -(2**31) - 1)
# A time in microseconds: up to 2**63 - 1 fits the JSON, but not a datetime past year 9999.
MICROS_OUT_OF_RANGE = (2**62, 2**63 - 1, 2**63, -1)


def _forged(kind: str, *out_of_range: tuple[int, ...]) -> list[object]:
    """Each position of a cursor of ``kind`` in turn set to each of its hostile values."""
    arity = len(out_of_range)
    fine = [1] * arity
    cases: list[object] = []
    for position, hostile in enumerate(out_of_range):
        for value in hostile:
            values = list(fine)
            values[position] = value
            cases.append(pytest.param(_cursor(kind, *values), id=f"{kind}-{position}-{value}"))
    cases += [
        pytest.param(_cursor(kind, *(["12"] * arity)), id=f"{kind}-numeric-strings"),
        pytest.param(_cursor(kind, *(["abc"] * arity)), id=f"{kind}-non-numeric"),
        pytest.param("not-a-cursor", id="non-numeric-text"),
        # A base64 blob far past any real cursor; the query parameter's own limit or the
        # decoder's must refuse it before anything is decoded.
        pytest.param(base64.urlsafe_b64encode(b"\x00" * 6_000).decode(), id="huge-blob"),
        pytest.param(
            _cursor(kind, *([10**400] * arity))[:8000], id=f"{kind}-huge-number-truncated"
        ),
    ]
    return cases


@pytest.mark.parametrize("cursor", _forged("m1", MICROS_OUT_OF_RANGE, ROW_ID_OUT_OF_RANGE))
async def test_a_forged_history_cursor_is_422(
    client: httpx.AsyncClient, db: Database, db_url: str, cursor: str
) -> None:
    async with db.transaction() as s:
        session = await make_work_session(s, seeker_id=SEEKER, provider_id=PROVIDER)

    response = await client.get(
        f"/v1/sessions/{session.session_id}/messages",
        params={"before": cursor},
        headers=bearer(db_url, "seeker", SEEKER),
    )

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "before"]]


@pytest.mark.parametrize("cursor", _forged("s1", ROW_ID_OUT_OF_RANGE))
async def test_a_forged_lookup_cursor_is_422(
    client: httpx.AsyncClient, db: Database, db_url: str, cursor: str
) -> None:
    async with db.transaction() as s:
        await make_work_session(s, seeker_id=SEEKER, provider_id=PROVIDER)

    response = await client.get(
        "/internal/v1/sessions",
        params={"cursor": cursor, "user_id": SEEKER},
        headers=bearer(db_url),
    )

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "cursor"]]


async def test_the_largest_row_id_a_cursor_may_carry_still_pages(
    client: httpx.AsyncClient, db: Database, db_url: str
) -> None:
    # The bound is the column's, not tighter: 2**31 - 1 is a row id PostgreSQL can hold.
    async with db.transaction() as s:
        await make_work_session(s, seeker_id=SEEKER, provider_id=PROVIDER)

    response = await client.get(
        "/internal/v1/sessions",
        params={"cursor": _cursor("s1", 2**31 - 1), "user_id": SEEKER},
        headers=bearer(db_url),
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["sessions"]) == 1


@pytest.mark.parametrize("cursor", _forged("o1", ROW_ID_OUT_OF_RANGE))
@pytest.mark.parametrize("role", ["seeker", "provider"])
async def test_a_forged_work_order_cursor_is_422(
    client: httpx.AsyncClient, db: Database, db_url: str, cursor: str, role: str
) -> None:
    # A real order of each caller's, so that a cursor that decoded would reach the query.
    response = await client.post(
        "/internal/v1/work-orders",
        json={"seeker_id": SEEKER, "provider_ids": [PROVIDER]},
        headers=bearer(db_url),
    )
    assert response.status_code == 201, response.text

    response = await client.get(
        "/v1/me/work-orders",
        params={"cursor": cursor},
        headers=bearer(db_url, role, SEEKER if role == "seeker" else PROVIDER),  # type: ignore[arg-type]
    )

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "cursor"]]


@pytest.mark.parametrize("kind", ["s1", "m1"])
async def test_another_listings_cursor_is_422_for_work_orders(
    client: httpx.AsyncClient, db_url: str, kind: str
) -> None:
    response = await client.get(
        "/v1/me/work-orders",
        params={"cursor": _cursor(kind, *([1] * (2 if kind == "m1" else 1)))},
        headers=bearer(db_url, "seeker", SEEKER),
    )
    assert response.status_code == 422, response.text


async def test_the_largest_work_id_a_cursor_may_carry_still_pages(
    client: httpx.AsyncClient, db_url: str
) -> None:
    created = await client.post(
        "/internal/v1/work-orders",
        json={"seeker_id": SEEKER, "provider_ids": [PROVIDER]},
        headers=bearer(db_url),
    )
    assert created.status_code == 201, created.text

    response = await client.get(
        "/v1/me/work-orders",
        params={"cursor": _cursor("o1", 2**31 - 1)},
        headers=bearer(db_url, "seeker", SEEKER),
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["work_orders"]) == 1
