"""Who is calling the REST API: the bearer JWT, verified, and the role it must have.

Routers declare ``caller: ServiceCaller`` (internal API, ``service`` tokens) or
``caller: ParticipantCaller`` (seeker and provider tokens) and list ``AUTH_RESPONSES`` in
their ``responses=``. The token itself is never logged; a refusal logs the verifier's
fixed-vocabulary reason only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from worksession.kit.jwt import Claims, InvalidToken, UserType
from worksession.state import get_state

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="`Authorization: Bearer <jwt>` with `sub`, `user_type` and `exp` claims.",
)
_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}


class ErrorDetail(BaseModel):
    """The body of every REST error other than a validation error."""

    detail: str
    code: str | None = Field(
        default=None,
        description="The same stable code as the WebSocket errors (e.g. session_not_found).",
    )


BODY_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status.HTTP_400_BAD_REQUEST: {
        "model": ErrorDetail,
        "description": "The body is not JSON",
    },
}
"""For every route that reads a JSON body."""

AUTH_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status.HTTP_401_UNAUTHORIZED: {
        "model": ErrorDetail,
        "description": "Missing, malformed, badly signed or expired bearer token",
    },
    status.HTTP_403_FORBIDDEN: {
        "model": ErrorDetail,
        "description": "The token's user_type may not use this endpoint",
    },
    status.HTTP_429_TOO_MANY_REQUESTS: {
        "model": ErrorDetail,
        "description": "Participant tokens only: over 10 requests a second (bursts of 20); "
        "the Retry-After header says when to try again",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}


async def _authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Missing bearer token", _CHALLENGE)
    try:
        return get_state(request).verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        logger.info("REST token refused: %s", exc.reason)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "Invalid or expired token", _CHALLENGE
        ) from None


def _require(*allowed: UserType) -> Callable[[Claims], Awaitable[Claims]]:
    async def check(claims: Annotated[Claims, Depends(_authenticate)]) -> Claims:
        if claims.user_type not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"This endpoint is for {' or '.join(allowed)} tokens"
            )
        return claims

    return check


ServiceCaller = Annotated[Claims, Depends(_require("service"))]
_participant = _require("seeker", "provider")


async def _within_rest_limit(
    request: Request, claims: Annotated[Claims, Depends(_participant)]
) -> Claims:
    """PROTOCOL 7 (*1.1*): each participant's requests, over every worker, through one token
    bucket. With Redis the bucket lives there (a request already costs a database query;
    one script call more is small, and counting per worker would multiply the allowance by
    the number of workers); without, this process's own count is the whole count."""
    state = get_state(request)
    wait = await state.rest_budget.take(f"rest:{claims.user_type}:{claims.sub}")
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many requests; try again after Retry-After seconds",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return claims


ParticipantCaller = Annotated[Claims, Depends(_within_rest_limit)]


async def _metrics_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    # On a port of its own the network keeps the metrics private; on the public port of a
    # production deployment only another service may read them (PROTOCOL 7, *1.1*).
    settings = get_state(request).settings
    if settings.env != "production" or settings.internal_port is not None:
        return
    await _require("service")(await _authenticate(request, credentials))


MetricsCaller = Annotated[None, Depends(_metrics_caller)]
