"""A TCP proxy a test puts between the service and PostgreSQL or Redis, to take the
dependency away without touching the machine's server, which other tests share.

``down()`` does what a restarting server does to its clients: every open connection is
reset, and new ones are refused (the listening socket is closed, so a connect gets
ECONNREFUSED, not a hang) until ``up()`` listens again on the same port. ``hold()``
keeps the server's replies back (what the client sends still arrives) until
``release()``: a statement in flight is then done on the server while its client waits.
``hold_after(marker, tag=...)`` does the same from the moment a connection whose traffic
carried ``tag`` (PostgreSQL's startup packet names the ``application_name``) sends
``marker``: for example right after a ``COMMIT`` reached the server and before its client
heard that it committed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import make_url


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``, on an event loop of its own thread: the
    tests block (starting a server waits in ``time.sleep``) and the proxy must go on."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._replies = asyncio.Event()
        self._replies.set()
        self._trigger: tuple[bytes, bytes, int] | None = None
        self.held = threading.Event()
        """Set when ``hold_after`` engaged."""
        self.connections = 0
        """Connections accepted so far (a test can tell a client reconnected)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]

    def start(self) -> TcpProxy:
        self._thread.start()
        self.up()
        return self

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    def up(self) -> None:
        self._call(self._listen())

    def down(self) -> None:
        self._call(self._cut())

    def hold(self) -> None:
        self._loop.call_soon_threadsafe(self._replies.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._replies.set)

    def hold_after(self, marker: bytes, *, tag: bytes, skip: int = 0) -> threading.Event:
        """Hold the replies once a connection tagged ``tag`` sent ``marker``, the first
        ``skip`` times excepted; returns :attr:`held`."""
        self.held.clear()

        def arm() -> None:
            self._trigger = (marker, tag, skip)

        self._loop.call_soon_threadsafe(arm)
        return self.held

    @contextmanager
    def outage(self) -> Iterator[None]:
        self.down()
        try:
            yield
        finally:
            self.up()

    def close(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def url_for(self, url: str) -> str:
        """``url`` (a database or Redis URL on the target) pointed at this proxy."""
        return (
            make_url(url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as from a server that went away
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted in the instant the proxy went down
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._forward(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer, self._replies)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _forward(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Client to server, watching for the trigger of ``hold_after``."""
        opening = b""  # the startup packet, where a tag is looked for
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
                if len(opening) < 4096:
                    opening += data[:4096]
                if self._trigger is None:
                    continue
                marker, tag, skip = self._trigger
                if tag in opening and marker in data:
                    if skip:
                        self._trigger = (marker, tag, skip - 1)
                        continue
                    self._trigger = None
                    self._replies.clear()
                    self.held.set()
        except OSError:
            pass


async def _pump(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event | None = None
) -> None:
    try:
        while data := await source.read(65536):
            if gate is not None:
                await gate.wait()
            sink.write(data)
            await sink.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
