"""Liveness, readiness and metrics.

The router's lifespan runs in every worker: it keeps the broker-reconnect counter in step
with the broker and, on the way out, drops the worker's live gauges from the shared
multi-process metrics directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Response, status
from pydantic import BaseModel

from worksession.kit.broker import Broker
from worksession.ops import metrics
from worksession.rest_auth import AUTH_RESPONSES, MetricsCaller
from worksession.state import AppState, get_state

logger = logging.getLogger(__name__)

RECONNECTS_POLL_S = 5.0


def _broker_reconnects(broker: Broker) -> int:
    # Only the Redis broker reconnects; the in-process one has nothing to count.
    return int(getattr(broker, "reconnects", 0))


async def _follow_reconnects(broker: Broker) -> None:
    while True:
        metrics.sync_broker_reconnects(_broker_reconnects(broker))
        await asyncio.sleep(RECONNECTS_POLL_S)


@contextlib.asynccontextmanager
async def _metrics_lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state.worksession
    assert isinstance(state, AppState)
    follower = asyncio.create_task(_follow_reconnects(state.broker), name="metrics-reconnects")
    try:
        yield
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        metrics.mark_this_process_dead()


router = APIRouter(tags=["operations"], lifespan=_metrics_lifespan)


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


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format (0.0.4)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **AUTH_RESPONSES,
    },
)
async def prometheus_metrics(
    state: Annotated[AppState, Depends(get_state)], _caller: MetricsCaller
) -> Response:
    metrics.sync_broker_reconnects(_broker_reconnects(state.broker))
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
