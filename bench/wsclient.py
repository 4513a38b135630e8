"""Opening a load-generator socket to the service."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.clients import source_address


async def open_socket(
    ws_url: str, role: str, token: str, index: int
) -> tuple[ClientConnection, dict[str, Any]]:
    """A socket of ``role`` authenticated with ``token``, and its ``connected`` frame.

    The client sends no pings of its own (the server pings every socket; the library
    answers), and reads without a queue limit so that a slow generator shows up as
    latency rather than as the server closing a slow consumer."""
    ws = await connect(
        f"{ws_url}/ws/work/{role}",
        additional_headers={"Authorization": f"Bearer {token}"},
        local_addr=source_address(index),
        ping_interval=None,
        open_timeout=120,
        max_queue=None,
        compression=None,
    )
    connected: dict[str, Any] = json.loads(await ws.recv())
    if connected.get("type") != "connected":
        raise RuntimeError(f"expected connected, got {connected.get('type')}")
    return ws, connected


async def open_relay(ws_url: str, pair: str, index: int) -> ClientConnection:
    """A socket on the bare relay, paired with the other one that names ``pair`` (the
    relay sends no frame of its own, so there is no ``connected`` frame to wait for)."""
    return await connect(
        f"{ws_url}/?pair={pair}",
        local_addr=source_address(index),
        ping_interval=None,
        open_timeout=120,
        max_queue=None,
        compression=None,
    )
