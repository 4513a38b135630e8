"""The application factory."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket
from starlette.types import Receive, Scope, Send

from worksession import __version__
from worksession.availability import rest as availability_rest
from worksession.config import Settings
from worksession.http_errors import install_error_handlers
from worksession.lifespan import lifespan
from worksession.ops import docs, health
from worksession.orders import rest as orders_rest
from worksession.realtime import gateway
from worksession.sessions import rest as sessions_rest


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="worksession",
        version=__version__,
        summary="Live work sessions between a seeker and a provider.",
        lifespan=lifespan,
        # ops.docs serves both pages from vendored assets: FastAPI's load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings or Settings()
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(orders_rest.router)
    app.include_router(sessions_rest.participant_router)
    app.include_router(sessions_rest.internal_router)
    app.include_router(availability_rest.router)
    app.include_router(gateway.router)
    return app


class SocketsFirst:
    """The ASGI application ``serve`` runs: a WebSocket upgrade on one of the gateway's
    paths goes straight to the gateway; everything else (REST, docs, metrics, lifespan)
    to the FastAPI application.

    A socket lives for hours and holds its whole call chain for as long: through FastAPI
    that is the exception middlewares, the router and the dependency machinery, several
    kilobytes of frames per idle socket, for nothing a socket uses."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        role = (
            gateway.SOCKET_PATHS.get(scope.get("path", ""))
            if scope["type"] == "websocket"
            else None
        )
        if role is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        await gateway.serve_socket(WebSocket(scope, receive, send), role)


def app_from_environment() -> SocketsFirst:
    """Entry point for uvicorn's factory mode: every worker process reads the environment."""
    from worksession.ops.logs import configure_logging

    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return SocketsFirst(create_app(settings))
