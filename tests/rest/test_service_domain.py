"""Service tokens as a trust domain of their own, through the whole app (PROTOCOL 1, *1.1*):
with a service key configured, the participant key never opens the internal API, the
service key never opens the participant one, and the service audience is enforced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.rest.conftest import SECRET
from worksession.config import Settings
from worksession.kit.db import Database
from worksession.kit.jwt import UserType
from worksession.lifespan import build_verifier
from worksession.main import create_app

SERVICE_SECRET = "rest-service-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
AUDIENCE = "worksession-internal"


def _split(db_url: str) -> Settings:
    return Settings(
        env="test",
        database_url=db_url,
        jwt_secret=SECRET,
        service_jwt_secret=SERVICE_SECRET,
        service_jwt_audience=AUDIENCE,
    )


@pytest.fixture
async def client(db: Database, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(_split(db_url))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def _bearer(settings: Settings, user_type: UserType, **extra: str) -> dict[str, str]:
    token = build_verifier(settings).issue(sub="caller-1", user_type=user_type, extra=extra)
    return {"Authorization": f"Bearer {token}"}


AVAILABILITY = "/internal/v1/users/someone/availability"


async def test_the_service_key_with_its_audience_opens_the_internal_api(
    client: httpx.AsyncClient, db_url: str
) -> None:
    response = await client.get(AVAILABILITY, headers=_bearer(_split(db_url), "service"))
    assert response.status_code == 200


async def test_the_participant_key_never_opens_the_internal_api(
    client: httpx.AsyncClient, db_url: str
) -> None:
    shared = Settings(database_url=db_url, jwt_secret=SECRET)  # one key for every token
    response = await client.get(AVAILABILITY, headers=_bearer(shared, "service"))
    assert response.status_code == 401


async def test_a_service_token_without_the_audience_is_refused(
    client: httpx.AsyncClient, db_url: str
) -> None:
    no_audience = Settings(database_url=db_url, jwt_secret=SERVICE_SECRET)
    response = await client.get(AVAILABILITY, headers=_bearer(no_audience, "service"))
    assert response.status_code == 401


async def test_the_service_key_never_opens_the_participant_api(
    client: httpx.AsyncClient, db_url: str
) -> None:
    by_service_key = Settings(database_url=db_url, jwt_secret=SERVICE_SECRET)
    response = await client.get("/v1/me/session", headers=_bearer(by_service_key, "seeker"))
    assert response.status_code == 401
    own = await client.get("/v1/me/session", headers=_bearer(_split(db_url), "seeker"))
    assert own.status_code == 404  # no live session, but the token was ours
