"""How ``worksession serve`` runs uvicorn: its listeners, its limits, and the one guard
uvicorn lacks.

Listeners. The public port always; with ``WORKSESSION_INTERNAL_PORT`` a second one, on the
same interface, for ``/internal/*`` and ``/metrics`` (``main.SocketsFirst`` sends each path
to its listener and answers 404 on the other). Both sockets are bound here, before any
worker starts, and every worker process serves both with one uvicorn server, one event
loop and one application: one lifespan, one graceful shutdown, and any worker can answer
an internal call (they share the database and the broker) or a scrape (the metrics of all
workers are summed). The internal listener is exempt from ``limit_concurrency``: a flood of
public connections must not lock the other back-end services out.

The guards. uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but not a
request header that never ends: a connection that sends half a header and then one byte a
minute holds its socket for as long as it likes (httptools has no such timer and uvicorn
arms none before the first request), and one that sends an endless header makes the
process buffer all of it (httptools has no size limit either; uvicorn's
``h11_max_incomplete_event_size`` is for h11 only). ``GuardedHttpToolsProtocol`` closes a
connection whose request header is not complete ``WORKSESSION_HEADER_TIMEOUT_S`` after the
connection opened (or, on a kept-alive connection, after the request's first byte), and
answers 431 to one whose header grows past ``WORKSESSION_MAX_HEADER_BYTES``. A slowly sent
request *body* is not bounded (the API's bodies are small JSON; a proxy in front should
bound them too).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from worksession.config import Settings

APP = "worksession.main:app_from_environment"


class ServeConfig(uvicorn.Config):
    """uvicorn's configuration plus what the guarded protocol reads. It travels to the
    worker processes by pickling, so the extra values are plain attributes."""

    def __init__(
        self,
        *args: Any,
        header_timeout_s: float | None = None,
        max_header_bytes: int | None = None,
        unlimited_ports: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.unlimited_ports = unlimited_ports


_HEADER_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with a deadline and a size limit for a request header, and no concurrency
    limit on the internal listener."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timeout_s: float | None = None
        self._max_header_bytes: int | None = None
        self._unlimited_ports: frozenset[int] = frozenset()
        if isinstance(config, ServeConfig):
            self._header_timeout_s = config.header_timeout_s
            self._max_header_bytes = config.max_header_bytes
            self._unlimited_ports = config.unlimited_ports
        self._header_deadline: asyncio.TimerHandle | None = None
        self._reading_header = False
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.server is not None and self.server[1] in self._unlimited_ports:
            self.limit_concurrency = None
        self._start_reading_header()

    def data_received(self, data: bytes) -> None:
        reading_header = self._reading_header
        if reading_header and self._header_deadline is None:
            # The first byte of a further request on a kept-alive connection.
            self._arm_header_deadline()
        super().data_received(data)
        # Counted after parsing, and only while the header is still incomplete: the chunk
        # that ends a header (and may carry a body) is not held against it.
        if reading_header and self._reading_header and self._max_header_bytes is not None:
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes and not self.transport.is_closing():
                self._stop_reading_header()
                self.transport.write(_HEADER_TOO_LARGE)
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reading_header()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._stop_reading_header()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: the connection waits for a further request.
        # Its idle time is the keep-alive timer's (which may rightly be long, above a load
        # balancer's idle timeout); the header deadline starts at the request's first byte,
        # where the keep-alive timer stops.
        if self.timeout_keep_alive_task is not None:
            self._start_reading_header(deadline_now=False)

    def _start_reading_header(self, *, deadline_now: bool = True) -> None:
        self._stop_reading_header()
        self._reading_header = True
        self._header_bytes = 0
        if deadline_now:
            self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        if self._header_timeout_s is not None:
            self._header_deadline = self.loop.call_later(
                self._header_timeout_s, self._header_deadline_passed
            )

    def _stop_reading_header(self) -> None:
        self._reading_header = False
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._stop_reading_header()
        if not self.transport.is_closing():
            self.transport.close()


def build_config(settings: Settings, *, host: str, port: int, workers: int) -> ServeConfig:
    unlimited = frozenset({settings.internal_port}) if settings.internal_port else frozenset()
    return ServeConfig(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        ws="websockets-sansio",
        ws_max_size=settings.max_frame_bytes,
        # permessage-deflate more than doubles the memory each socket holds.
        ws_per_message_deflate=False,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.timeout_keep_alive_s,
        header_timeout_s=settings.header_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        unlimited_ports=unlimited,
    )


def run(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Bind the listeners, then serve them in this process or in ``workers`` children."""
    config = build_config(settings, host=host, port=port, workers=workers)
    sockets = [config.bind_socket()]
    if settings.internal_port is not None:
        # log_config=None: uvicorn's default would reconfigure this process's logging.
        internal = uvicorn.Config(APP, host=host, port=settings.internal_port, log_config=None)
        sockets.append(internal.bind_socket())
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
    if workers == 1 and not server.started:
        sys.exit(STARTUP_FAILURE)
