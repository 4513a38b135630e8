"""Chat that keeps flowing through a fault, and what the database holds afterwards.

A :class:`ChatFlow` sends numbered messages on one socket at a steady pace (below the
per-connection rate limit), each with ``request_id`` = ``client_msg_id``, and notes what
came back for each: its ``chat_message_ack`` or its ``error``. A real client resends a
message that got an error (or no answer) with the same ``client_msg_id``;
:meth:`ChatFlow.resend_unacked` does that, on whatever socket it is given.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from websockets.exceptions import ConnectionClosed

from tests.realtime.conftest import Client

SEND_INTERVAL_S = 0.07
"""About 14 messages a second: under the contract's 20 a second per connection."""


@dataclass
class ChatFlow:
    session_id: str
    sent: list[str] = field(default_factory=list)
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    """The codes of the errors each message got while it flowed (not while resent)."""
    extra_acks: list[dict[str, Any]] = field(default_factory=list)
    """An ack for a ``client_msg_id`` that had one already (a resend): same message_id."""
    seen: list[int] = field(default_factory=list)
    """The seq of every frame that carried one, in arrival order."""

    def frame(self, client_msg_id: str) -> dict[str, Any]:
        return {
            "type": "chat_message",
            "session_id": self.session_id,
            "message": f"text {client_msg_id}",
            "client_msg_id": client_msg_id,
            "request_id": client_msg_id,
        }

    def note(self, frame: dict[str, Any], *, resending: bool = False) -> None:
        if "seq" in frame:
            self.seen.append(frame["seq"])
        if frame.get("type") == "chat_message_ack":
            key = frame["client_msg_id"]
            if key in self.acks:
                self.extra_acks.append(frame)
            else:
                self.acks[key] = frame
        elif frame.get("type") == "error" and frame.get("request_id") in self.sent:
            if resending:
                return
            self.errors.setdefault(frame["request_id"], []).append(frame["code"])

    async def send_until(self, client: Client, stop: asyncio.Event, prefix: str) -> None:
        """Send ``prefix-0``, ``prefix-1``, ... until ``stop`` is set or the socket closes."""
        n = 0
        while not stop.is_set():
            key = f"{prefix}-{n}"
            n += 1
            self.sent.append(key)
            try:
                await client.send(self.frame(key))
            except ConnectionClosed:
                return
            await asyncio.sleep(SEND_INTERVAL_S)

    async def read(self, client: Client) -> None:
        """Note every frame until the socket closes (cancel to stop)."""
        try:
            while True:
                self.note(json.loads(await client.ws.recv()))
        except ConnectionClosed:
            return

    async def resend_unacked(self, client: Client, timeout: float = 15) -> None:
        """Resend, one at a time, every sent message without an ack until it has one (after
        a refusal, such as the rate limit's, as soon as the refusal allows)."""
        for key in [k for k in self.sent if k not in self.acks]:
            while key not in self.acks:
                await client.send(self.frame(key))
                while True:
                    frame = await client.recv(timeout)
                    self.note(frame, resending=True)
                    if key in self.acks:
                        break
                    if frame.get("type") == "error" and frame.get("request_id") == key:
                        await asyncio.sleep(frame.get("retry_after_ms", 200) / 1000)
                        break


async def stored_messages(database_url: str, session_id: str) -> list[asyncpg.Record]:
    """The session's chat messages as the database holds them, in seq order."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(
            "SELECT m.client_msg_id, m.message_id, m.seq FROM chat_messages m"
            " JOIN work_sessions s ON s.id = m.session_id WHERE s.session_id = $1"
            " ORDER BY m.seq",
            uuid.UUID(session_id),
        )
    finally:
        await connection.close()


async def stored_seqs(database_url: str, session_id: str) -> list[int]:
    """The seqs of the session's event log, in order."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT e.seq FROM session_events e JOIN work_sessions s ON s.id = e.session_id"
            " WHERE s.session_id = $1 ORDER BY e.seq",
            uuid.UUID(session_id),
        )
    finally:
        await connection.close()
    return [r["seq"] for r in rows]


def check_against_database(flows: list[ChatFlow], stored: list[asyncpg.Record]) -> None:
    """Nothing acked is missing, nothing is stored twice, every ack names the stored row.
    ``flows``: every sender of the session (their ``client_msg_id`` prefixes differ)."""
    by_key = {r["client_msg_id"]: r for r in stored}
    assert len(by_key) == len(stored), "a client_msg_id stored twice"
    for flow in flows:
        missing = [k for k in flow.acks if k not in by_key]
        assert not missing, f"acked but not in the database: {missing}"
        for key, ack in flow.acks.items():
            assert (ack["message_id"], ack["seq"]) == (
                str(by_key[key]["message_id"]),
                by_key[key]["seq"],
            ), key
        for again in flow.extra_acks:
            assert again["message_id"] == flow.acks[again["client_msg_id"]]["message_id"]
    sent = {key for flow in flows for key in flow.sent}
    assert set(by_key) <= sent, "a message nobody sent"
