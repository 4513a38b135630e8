"""REST error responses: one mapping from ``WorksessionError`` to HTTP, and validation
errors that never echo the request back."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from worksession.errors import WorksessionError

ECHOED_KEYS = frozenset({"input", "ctx", "url"})


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorksessionError)
    if exc.http_status == 422:
        # A rule a decider refused is still a 422 in the shape the OpenAPI documents for
        # every 422 (FastAPI's list of located errors), so one client parser serves both.
        located = exc.details or [{"loc": ["body"], "msg": exc.message}]
        detail = [{"type": "value_error", "loc": d["loc"], "msg": d["msg"]} for d in located]
        return JSONResponse({"detail": detail, "code": exc.code}, status_code=422)
    return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.http_status)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's default 422 echoes what the caller sent: a NaN there cannot even be
    encoded (a 500 instead of a 422), and a phone number or a 4 KiB body would come straight
    back, possibly into someone's logs. Location, message and type say enough."""
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k not in ECHOED_KEYS} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(WorksessionError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
