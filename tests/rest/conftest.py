"""The whole FastAPI app in process (httpx over ASGI), its lifespan entered, on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.pipeline_run import decoded
from worksession.config import Settings
from worksession.kit.db import Database
from worksession.kit.jwt import UserType
from worksession.lifespan import build_verifier
from worksession.main import create_app
from worksession.state import AppState

SECRET = "rest-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def settings_for(db_url: str) -> Settings:
    return Settings(env="test", database_url=db_url, jwt_secret=SECRET)


def bearer(db_url: str, user_type: UserType = "service", sub: str = "orders-svc") -> dict[str, str]:
    token = build_verifier(settings_for(db_url)).issue(sub=sub, user_type=user_type)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def app(db: Database, db_url: str) -> AsyncIterator[FastAPI]:
    # ASGITransport does not run the lifespan; enter it here. `db` empties the tables after.
    application = create_app(settings_for(db_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@dataclass
class Published:
    """What the app published on the channels a test subscribed to, decoded, in order."""

    state: AppState
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def subscribe(self, *channels: str) -> None:
        for channel in channels:
            await self.state.broker.subscribe(channel)

    def collect(self, channel: str, payload: bytes) -> None:
        self.messages.append((channel, decoded(payload)))


@pytest.fixture
async def published(app: FastAPI) -> Published:
    """Replaces the hub as the in-process broker's consumer (no socket is open in these tests)."""
    recorder = Published(state=app.state.worksession)
    await recorder.state.broker.start(recorder.collect)
    return recorder
