"""The reference JavaScript client, and the playground: one page where a seeker and a
provider play a session against this very service, each on its own reference client.

The client (``/client/worksession-client.js``) is public in every mode: it is a library
an app may load, holds nothing secret, and is the documentation of how to reconnect.

The playground (``/playground``) is for development only. Its API mints a token for any
user and creates orders without a service token, so its router is not even mounted when
``Settings.playground_enabled`` is false (every path answers 404), production refuses to
turn it on, and ``serve`` refuses it on an address other than loopback (``config``).
Even when mounted, it answers 404 to any request that is not from loopback to a loopback
Host (``_local_only``). Every asset is a file of this package: the page works offline, with no CDN.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from worksession.orders.schemas import UserIdField, WorkOrderCreated
from worksession.pipeline.commands import CreateWorkOrder
from worksession.state import AppState, get_state

STATIC_DIR = Path(__file__).parent / "static"
CLIENT_FILE = "worksession-client.js"
PAGE_ASSETS = frozenset({"playground.js", "playground.css"})
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
# The page and its script change together with the service: revalidate rather than cache.
_NO_STALE = {"Cache-Control": "no-cache"}

# Loopback peers and the Host names that can only mean this machine (any port).
LOOPBACK_CLIENTS = frozenset({"127.0.0.1", "::1"})
_LOOPBACK_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?", re.IGNORECASE)


async def _local_only(request: Request) -> None:
    """404 unless the request comes from loopback and names a loopback Host. The peer
    check stops a proxy in front of a forgotten dev install (uvicorn's ``proxy_headers``
    makes ``client.host`` the X-Forwarded-For address, and a proxy's own peer address is
    seldom loopback); the Host check stops DNS rebinding (a page on evil.example whose
    name now resolves to 127.0.0.1 still sends ``Host: evil.example``). Raised before the
    body is read: the answer is the same 404 as a playground that is off."""
    client = request.client
    host = request.headers.get("host", "")
    if client is None or client.host not in LOOPBACK_CLIENTS or not _LOOPBACK_HOST.fullmatch(host):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")


client_router = APIRouter(tags=["client"])
router = APIRouter(
    prefix="/playground", include_in_schema=False, dependencies=[Depends(_local_only)]
)
State = Annotated[AppState, Depends(get_state)]


def _file(name: str) -> FileResponse:
    path = STATIC_DIR / name
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_NO_STALE)


@client_router.get(
    f"/client/{CLIENT_FILE}",
    summary="The reference JavaScript client (an ES module, no dependencies)",
    response_class=FileResponse,
    responses={200: {"content": {"text/javascript": {}}}},
)
async def reference_client() -> FileResponse:
    return _file(CLIENT_FILE)


@router.get("")
async def page() -> FileResponse:
    return _file("playground.html")


@router.get("/assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in PAGE_ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such asset")
    return _file(name)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserIdField
    role: Literal["seeker", "provider"]
    # Short lives let the page show auth_refresh at work; never a service token.
    ttl_s: int = Field(default=900, ge=2, le=86400)


class TokenIssued(BaseModel):
    token: str
    exp: datetime


@router.post("/api/tokens", response_model=TokenIssued)
async def issue_token(body: TokenRequest, state: State) -> TokenIssued:
    now = datetime.now(UTC)
    try:
        token = state.verifier.issue(
            sub=body.user_id, user_type=body.role, ttl_s=body.ttl_s, now=now
        )
    except ValueError as exc:
        # A key the service cannot sign with (a public key only).
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    # Whole seconds, as the token's exp claim.
    exp = now.replace(microsecond=0) + timedelta(seconds=body.ttl_s)
    return TokenIssued(token=token, exp=exp)


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seeker_id: UserIdField
    provider_id: UserIdField
    details: dict[str, str] = Field(default_factory=dict, max_length=8)
    seeker_location: dict[Literal["lat", "lng"], float] | None = None


@router.post("/api/orders", response_model=WorkOrderCreated, status_code=201)
async def create_order(body: OrderRequest, state: State) -> WorkOrderCreated:
    """What ``POST /internal/v1/work-orders`` does, without the service token the page
    cannot have."""
    location = body.seeker_location
    command = CreateWorkOrder(
        seeker_id=body.seeker_id,
        provider_ids=(body.provider_id,),
        details=dict(body.details),
        seeker_location=None if location is None else (location["lat"], location["lng"]),
    )
    outcome = await state.pipeline.submit(command)
    return outcome.result(WorkOrderCreated)
