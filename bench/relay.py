"""The baseline: a bare relay, as cheap as a WebSocket service on this stack can be.

A raw ASGI app (no framework, no database, no broker) run by uvicorn with the same flags as
``worksession serve``. Two sockets that connect with the same ``?pair=`` are paired, and
every text frame one of them sends is forwarded as is to the other. What the service does
per message on top of this (authentication, validation, persistence, the event log,
fan-out through Redis) is what the ratios to it measure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# pair id -> the send callables of its (at most two) sockets
_pairs: dict[str, list[Send]] = {}


async def _http(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"relay"})


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    pair = parse_qs(scope["query_string"].decode()).get("pair", [""])[0]
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    members = _pairs.setdefault(pair, [])
    members.append(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            for peer in members:
                if peer is not send:
                    await peer({"type": "websocket.send", "text": message.get("text")})
    finally:
        members.remove(send)
        if not members:
            _pairs.pop(pair, None)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await _http(send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
