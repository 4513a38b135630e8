"""Liveness and readiness."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel

from worksession.state import AppState, get_state

router = APIRouter(tags=["operations"])
logger = logging.getLogger(__name__)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    broker: str


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Database and broker reachable",
    responses={503: {"model": Readiness, "description": "A dependency is unreachable"}},
)
async def readyz(response: Response, state: Annotated[AppState, Depends(get_state)]) -> Readiness:
    database = await _probe("database", state.db.ping)
    broker = await _probe("broker", state.broker.ping)
    ready = database == "ok" and broker == "ok"
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(status="ok" if ready else "unavailable", database=database, broker=broker)


async def _probe(name: str, ping: Callable[[], Awaitable[None]]) -> str:
    try:
        await ping()
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        logger.warning("%s not reachable: %s", name, type(exc).__name__)
        return "unavailable"
    return "ok"
