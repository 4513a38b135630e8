"""The application factory."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket
from starlette.types import Message, Receive, Scope, Send

from worksession import __version__
from worksession.availability import rest as availability_rest
from worksession.config import Settings
from worksession.http_errors import install_error_handlers
from worksession.lifespan import lifespan
from worksession.ops import docs, health, playground
from worksession.ops.logs import route_template_var
from worksession.orders import rest as orders_rest
from worksession.realtime import gateway
from worksession.sessions import rest as sessions_rest
from worksession.webhooks import rest as webhooks_rest


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
    app.include_router(playground.client_router)
    if app.state.settings.playground_enabled:
        # Not mounted at all otherwise: its token mint must not exist (404) in production.
        app.include_router(playground.router)
    app.include_router(orders_rest.router)
    app.include_router(orders_rest.participant_router)
    app.include_router(sessions_rest.participant_router)
    app.include_router(sessions_rest.internal_router)
    app.include_router(availability_rest.router)
    app.include_router(webhooks_rest.router)
    app.include_router(gateway.router)
    return app


def is_private_path(path: str) -> bool:
    """What ``WORKSESSION_INTERNAL_PORT`` serves alone (PROTOCOL 7, *1.1*)."""
    return path == "/metrics" or path == "/internal" or path.startswith("/internal/")


class SocketsFirst:
    """The ASGI application ``serve`` runs: a WebSocket upgrade on one of the gateway's
    paths goes straight to the gateway; everything else (REST, docs, metrics, lifespan)
    to the FastAPI application.

    A socket lives for hours and holds its whole call chain for as long: through FastAPI
    that is the exception middlewares, the router and the dependency machinery, several
    kilobytes of frames per idle socket, for nothing a socket uses.

    With an internal port, every worker listens on both ports (``serving``) and the port a
    connection arrived on decides what it may reach: the internal API and the metrics
    there only, everything else on the public port only. The local port is the socket's
    own, which no header can change."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        settings: Settings = app.state.settings
        self.internal_port = settings.internal_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.internal_port is not None and scope["type"] in ("http", "websocket"):
            server = scope.get("server")
            on_internal = server is not None and server[1] == self.internal_port
            if on_internal != is_private_path(scope.get("path", "")):
                await _not_found(scope, send)
                return
        role = (
            gateway.SOCKET_PATHS.get(scope.get("path", ""))
            if scope["type"] == "websocket"
            else None
        )
        if role is None:
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            else:
                await self.app(scope, receive, _naming_the_route(scope, send))
            return
        # The gateway's paths carry no id: they are their own template.
        route_template_var.set(scope["path"])
        scope["app"] = self.app
        await gateway.serve_socket(WebSocket(scope, receive, send), role)


_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.close"})


def _naming_the_route(scope: Scope, send: Send) -> Send:
    """``send``, which first records the template of the route the request matched (the
    router put it in the scope): uvicorn logs the request in the call that starts the
    response, and ``ops.logs.PathsAsRoutes`` writes that template instead of the path."""

    async def naming_send(message: Message) -> None:
        if message["type"] in _STARTS:
            template = getattr(scope.get("route"), "path_format", None)
            route_template_var.set(template if isinstance(template, str) else None)
        await send(message)

    return naming_send


async def _not_found(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting makes uvicorn refuse the handshake (HTTP 403).
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    body = b'{"detail":"Not Found"}'
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def app_from_environment() -> SocketsFirst:
    """Entry point for uvicorn's factory mode: every worker process reads the environment."""
    from worksession.ops.logs import configure_logging

    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return SocketsFirst(create_app(settings))
