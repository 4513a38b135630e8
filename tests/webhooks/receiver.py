"""A webhook receiver for the tests: a bare asyncio HTTP/1.1 server that records every
request and answers what the test scripted (a status, or no answer at all)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

HANG = 0
"""An answer that never comes."""


@dataclass
class Received:
    at: float
    """time.monotonic() when the request had arrived."""
    headers: dict[str, str]
    body: bytes
    peer_port: int = 0
    """The sender's local port."""

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    answers: list[int] = field(default_factory=list)
    """Statuses for the first requests, in order; then ``default``. ``HANG``: no answer."""
    default: int = 200
    choose: Callable[[dict[str, Any]], int | None] | None = None
    """A status chosen from the body (None: the scripted one)."""
    received: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    url: str = ""

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                peer = writer.get_extra_info("peername")
                received = Received(time.monotonic(), headers, body, int(peer[1]))
                self.received.append(received)
                status = self.choose(received.json) if self.choose is not None else None
                if status is None:
                    status = self.answers.pop(0) if self.answers else self.default
                if status == HANG:
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        # Closing the receiver: asyncio would log a cancelled handler.
                        return
                writer.write(f"HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        finally:
            self._handlers.discard(task)
            writer.close()

    def of_type(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.json["type"] == kind]

    async def wait_for(
        self,
        count: int,
        *,
        kind: str | None = None,
        user_id: str | None = None,
        timeout: float = 10.0,
    ) -> list[Received]:
        """At least ``count`` requests (of ``kind``, for ``user_id``) have arrived; returns
        them all."""
        deadline = time.monotonic() + timeout
        while True:
            got = [
                r
                for r in self.received
                if kind in (None, r.json["type"]) and user_id in (None, r.json["user_id"])
            ]
            if len(got) >= count:
                return list(got)
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} of {count} webhooks within {timeout}s: {got}")
            await asyncio.sleep(0.02)


@contextmanager
def in_thread(receiver: Receiver) -> Iterator[Receiver]:
    """``receiver`` serving from a thread of its own, for tests whose servers start
    synchronously (``dedicated_server`` migrates with ``asyncio.run``)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(receiver.__aenter__())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(receiver.__aexit__())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "the receiver did not start"
    try:
        yield receiver
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
