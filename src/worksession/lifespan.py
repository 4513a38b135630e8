"""Builds and tears down what a worker process needs: database, broker, verifier."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from worksession.config import Settings
from worksession.kit.broker import Broker, MemoryBroker
from worksession.kit.db import Database
from worksession.kit.jwt import TokenVerifier
from worksession.state import AppState

logger = logging.getLogger(__name__)


def build_verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier(
        algorithms=settings.allowed_algorithms,
        hmac_secret=settings.jwt_secret,
        public_key=settings.jwt_public_key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )


def build_broker(settings: Settings) -> Broker:
    if settings.redis_url:
        raise NotImplementedError("the Redis broker arrives with the scale-out work")
    return MemoryBroker()


def describe_database(url: str) -> str:
    """The URL without its password, fit for a log line."""
    return make_url(url).render_as_string(hide_password=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    db = Database(settings.database_url)
    broker = build_broker(settings)
    state = AppState(settings=settings, db=db, broker=broker, verifier=build_verifier(settings))
    await broker.start(lambda _channel, _payload: None)
    app.state.worksession = state
    logger.info(
        "worksession ready: database %s, broker %s",
        describe_database(settings.database_url),
        type(broker).__name__,
    )
    try:
        yield
    finally:
        await broker.close()
        await db.dispose()
