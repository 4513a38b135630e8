"""The AsyncAPI 3.0 document of the WebSocket contract, generated from the same Pydantic
models the gateway validates with (``worksession.protocol``).

Nothing here is written by hand twice: the payload schemas come from the models, the role
rules for client frames from ``protocol.ROLES_ALLOWED``, the error codes from the
``WorksessionError`` classes and the close codes from the constants the gateway closes
with. What the models cannot say (which role *receives* a server frame, what each close
code means) is stated once below and checked against the code by the tests.

Operations are written from the application's point of view, as AsyncAPI 3.0 asks: the
service *receives* the frames a client sends and *sends* the frames a client receives.
"""

from __future__ import annotations

import copy
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from worksession import __version__
from worksession.errors import WorksessionError
from worksession.protocol import inbound, outbound
from worksession.realtime.connections import (
    CLOSE_POLICY,
    CLOSE_RESTARTING,
    CLOSE_SESSION_ENDED,
    CLOSE_UNAUTHENTICATED,
)
from worksession.realtime.gateway import CLOSE_WRONG_ROLE

ASYNCAPI_VERSION = "3.0.0"
SCHEMA_REF = "#/components/schemas/{model}"

Role = Literal["seeker", "provider"]
Direction = Literal["client", "server"]
"""Who sends the frame: ``client`` frames the service receives, ``server`` frames it sends."""

ROLES: tuple[Role, ...] = ("seeker", "provider")
CHANNEL_ADDRESS: dict[Role, str] = {
    "seeker": "/ws/work/seeker/",
    "provider": "/ws/work/provider/",
}

RECEIVED_ONLY_BY: dict[str, Role] = {
    "work_request": "provider",
    "work_unavailable": "provider",
    "work_declined": "provider",
    "seeker_mediums_selected": "provider",
    "mediums_shared": "provider",
    "work_rejected": "seeker",
    "work_expired": "seeker",
    "work_withdrawn": "seeker",
    "mediums_selected": "seeker",
    "provider_mediums_shared": "seeker",
}
"""Server frames only one role ever receives; every other server frame can reach both.

Offers and their fate go to providers, the seeker learns that nobody took the work (or
that their own withdrawal of it, ``work_withdrawn``, went through); each
side's own mediums come back as ``mediums_selected``/``mediums_shared`` and the other
side's as ``seeker_mediums_selected``/``provider_mediums_shared`` (see
``eventlog.render``, which the tests check this table against)."""


@dataclass(frozen=True, slots=True)
class CloseCode:
    code: int
    name: str
    meaning: str
    client_should: str


CLOSE_CODES: tuple[CloseCode, ...] = (
    CloseCode(
        CLOSE_SESSION_ENDED,
        "session ended",
        "The session was cancelled or completed; the terminal event "
        "(connection_cancelled or session_completed) was sent just before.",
        "Reconnect when the user wants to start or wait for new work.",
    ),
    CloseCode(
        1007,
        "invalid frame data",
        "A text frame that is not valid UTF-8 (RFC 6455).",
        "Fix the client; reconnecting with the same frame fails again.",
    ),
    CloseCode(
        CLOSE_POLICY,
        "policy violation",
        "Frames were dropped by the rate limit for 10 s in a row, or the client read its "
        "frames too slowly and its queue filled up.",
        "Reconnect after a backoff, send less, read faster; then resume.",
    ),
    CloseCode(
        1009,
        "message too big",
        "A frame larger than the configured limit (16 KiB by default).",
        "Do not send that frame again; reconnect and resume.",
    ),
    CloseCode(
        1011,
        "internal error",
        "An unexpected server error.",
        "Reconnect with backoff and resume.",
    ),
    CloseCode(
        CLOSE_RESTARTING,
        "service restart",
        "The server is shutting down gracefully.",
        "Reconnect (another worker answers) and resume from your last seq.",
    ),
    CloseCode(
        CLOSE_UNAUTHENTICATED,
        "unauthenticated",
        "The token is missing, malformed, badly signed or expired (also when a connected "
        "socket's token expires without an auth_refresh).",
        "Get a fresh token, then reconnect; retrying with the same token fails again.",
    ),
    CloseCode(
        CLOSE_WRONG_ROLE,
        "wrong role",
        "The token's user_type does not match the endpoint.",
        "Connect to the endpoint of the token's role.",
    ),
)

ERROR_WHEN: dict[str, str] = {
    "invalid_json": "Not JSON, not an object, or a binary frame.",
    "unknown_type": "`type` missing or not a type of this protocol.",
    "validation_error": "Fields missing, of the wrong type or out of range (`details` says which).",
    "forbidden": "A type your role may not send, acking your own message, or a refused "
    "auth_refresh.",
    "session_not_found": "No such session, or you are not one of its two participants (the "
    "two cases are not told apart).",
    "invalid_state": "The session is not in a state that allows this (for example chatting "
    "after cancellation).",
    "work_not_found": "No such work order, or it was not offered to you.",
    "work_unavailable": "The work order is no longer pending (taken by another provider, "
    "cancelled, expired).",
    "provider_busy": "Accepting would give the provider a second live session.",
    "seeker_busy": "Accepting would give the seeker a second live session.",
    "message_not_found": "No such chat message in a session of yours.",
    "rate_limited": "Too many frames (20 a second with bursts of 40 by default, per "
    "connection, and 40 a second with bursts of 80 per user over all their sockets), or a "
    "`chat_message` in a session that holds its 5,000 messages already; the frame was "
    "dropped; `retry_after_ms` says when to try again.",
    "internal_error": "Anything unexpected; the connection stays usable.",
    "unauthenticated": "REST only (HTTP 401): a WebSocket closes with 4401 instead.",
}
"""When each error code is sent (PROTOCOL section 3); a code missing here falls back to
its class's default message."""


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    http_status: int
    when: str


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the contract: a model and the direction it travels."""

    key: str
    name: str
    """The ``type`` literal."""
    direction: Direction
    model: type[BaseModel]
    receivers: tuple[Role, ...]
    """The roles that send it (client frames) or receive it (server frames)."""

    @property
    def summary(self) -> str:
        return self.description.split("\n", 1)[0]

    @property
    def description(self) -> str:
        # Docstrings use reST literals; the document speaks Markdown.
        return inspect.cleandoc(self.model.__doc__ or "").replace("``", "`").strip()


INTRO: tuple[tuple[str, str], ...] = (
    (
        "Connecting",
        "Open `/ws/work/seeker/` or `/ws/work/provider/` (the path without the trailing "
        "slash works too) with a JWT in the `Authorization: Bearer <jwt>` header or, for "
        "browsers that cannot set headers, in the query string `?token=<jwt>`. A missing, "
        "malformed, badly signed or expired token is closed with 4401 right after the "
        "handshake, a token whose `user_type` does not match the endpoint with 4403; no "
        "frame is sent first. Otherwise the first frame is `connected`, with the live "
        "session's snapshot (or null) and, for providers, the work offers still open. A "
        "user holds at most 5 sockets: opening a sixth closes the oldest with 4409 (do not "
        "reconnect it automatically).",
    ),
    (
        "Frames",
        "Every frame either way is a JSON object in a text frame with a string `type`. "
        "Times are ISO 8601 in UTC with a `Z` suffix, from the server's clock. A frame "
        "larger than the configured limit (16 KiB by default) closes the socket with 1009.",
    ),
    (
        "request_id",
        "Any client frame may carry `request_id` (a string of 1 to 64 characters). The "
        "server copies it into its direct answer to that frame: the ack (for example "
        "`chat_message_ack`, `work_accepted`, `pong`) or the `error`. Frames that reach "
        "you because of someone else's action never carry your request_id.",
    ),
    (
        "seq",
        "Server events that are part of a session's history carry `session_id` and `seq`: "
        "a per-session counter that starts at 1 and grows by one with each persisted event "
        "of that session. Every persisted event reaches every socket of both "
        "participants, rendered for the receiver's role, so you receive every seq of your "
        "session, each once and in order: a jump by more than one means frames were "
        "missed, and you send `resume`. The renderings: `work_accepted`, `chat_ready`, "
        "`message_status_update`, `provider_nearby`, `provider_arrived`, "
        "`connection_cancelled` and `session_completed` are the same frame for both; the "
        "seeker's mediums are `mediums_selected` for the seeker and "
        "`seeker_mediums_selected` for the provider; the provider's are `mediums_shared` "
        "for the provider and `provider_mediums_shared` for the seeker; a chat message is "
        "`chat_message_ack` (with the text) for its sender's sockets and `chat_message` "
        "for the other participant's. `distance_update`, `typing_indicator` and "
        "`peer_presence` are ephemeral and carry no seq, and a repeated `start_chat` is "
        "answered with a `chat_ready` without seq. Keep the highest seq you have "
        "processed per session.",
    ),
    (
        "Reconnecting and resume",
        "A user may be connected from several devices; every event reaches all of them. "
        "After a disconnect, reconnect with backoff (see the close codes for when not to), "
        "and send "
        '`{"type": "resume", "session_id": ..., "last_seq": <yours>}` as your first frame: '
        "every event after it follows in order, as you would have received it live, then "
        "`resumed`, then what happened meanwhile, so the socket sees seq rise by exactly "
        "one. Until a socket's first frame has been handled (at most 2 seconds) the "
        "server holds back what it would send the socket, so a resume sent first is never "
        "overtaken; a resume from the seq you already have just answers `resumed`. "
        "Ended sessions can be resumed until their messages expire (24 hours after the "
        "end). Send `auth_refresh` with a new token for the same user before the current "
        "one expires, or the socket is closed with 4401. `ping` is answered with `pong`.",
    ),
    (
        "Errors",
        "A frame that cannot be processed is answered with an `error` frame (`code`, "
        "`message`, `request_id` when the frame had one, `details` for validation errors) "
        "and the connection stays open. The codes are listed below and in `x-error-codes`.",
    ),
)


# --- the message catalogue ---------------------------------------------------------------


def message_type(model: type[BaseModel]) -> str | None:
    """The ``type`` literal of a message model, or None for a building block."""
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = get_args(field.annotation)
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def receivers_of(type_: str, direction: Direction) -> tuple[Role, ...]:
    """The roles that may send this client frame, or that receive this server frame."""
    if direction == "client":
        allowed = inbound.ROLES_ALLOWED.get(type_, inbound.BOTH)
        return tuple(r for r in ROLES if r in allowed)
    only = RECEIVED_ONLY_BY.get(type_)
    return (only,) if only else ROLES


def _message(model: type[BaseModel], direction: Direction, both_ways: set[str]) -> Message:
    type_ = message_type(model)
    if type_ is None:
        raise ValueError(f"{model.__name__} has no `type` literal")
    # chat_message and typing_indicator exist both ways with different payloads.
    key = f"{type_}.{direction}" if type_ in both_ways else type_
    return Message(key, type_, direction, model, receivers_of(type_, direction))


@functools.cache
def messages() -> tuple[Message, ...]:
    """Every message of the contract: client frames first, then server frames."""
    inbound_types = {message_type(m) for m in inbound.INBOUND_MODELS}
    outbound_types = {message_type(m) for m in outbound.OUTBOUND_MODELS}
    both_ways = {t for t in inbound_types & outbound_types if t is not None}
    result = [_message(m, "client", both_ways) for m in inbound.INBOUND_MODELS] + [
        _message(m, "server", both_ways) for m in outbound.OUTBOUND_MODELS
    ]
    return tuple(result)


def error_codes() -> tuple[ErrorCode, ...]:
    """Every ``WorksessionError`` code, sorted; the base class is ``internal_error``."""
    found: dict[str, ErrorCode] = {}
    pending: list[type[WorksessionError]] = [WorksessionError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        found.setdefault(
            cls.code,
            ErrorCode(cls.code, cls.http_status, ERROR_WHEN.get(cls.code, cls.default_message)),
        )
    return tuple(sorted(found.values(), key=lambda e: e.code))


# --- the document ------------------------------------------------------------------------


def _schema_mode(message: Message) -> JsonSchemaMode:
    # What a client may send is what validation accepts; what it receives is what the
    # server serialises.
    return "validation" if message.direction == "client" else "serialization"


def _markdown_literals(value: Any) -> Any:
    """Docstrings become schema descriptions: reST double-backtick literals become Markdown."""
    if isinstance(value, dict):
        return {
            k: v.replace("``", "`")
            if k == "description" and isinstance(v, str)
            else _markdown_literals(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_markdown_literals(v) for v in value]
    return value


@functools.cache
def _schemas() -> dict[str, Any]:
    pairs = [(m.model, _schema_mode(m)) for m in messages()]
    _, top = models_json_schema(pairs, ref_template=SCHEMA_REF)
    schemas: dict[str, Any] = _markdown_literals(top["$defs"])
    # The error frame's code is a string on the model; the document names the possible ones.
    schemas["ErrorFrame"]["properties"]["code"]["enum"] = [e.code for e in error_codes()]
    return schemas


def _message_object(message: Message) -> dict[str, Any]:
    direction = "client -> server" if message.direction == "client" else "server -> client"
    roles = " and ".join(message.receivers)
    who = "sent by" if message.direction == "client" else "received by"
    body: dict[str, Any] = {
        "name": message.name,
        "title": message.name,
        "summary": message.summary,
        "description": f"{message.description}\n\n{direction}, {who} {roles}.".strip(),
        "contentType": "application/json",
        "payload": {"$ref": SCHEMA_REF.format(model=message.model.__name__)},
        "x-direction": message.direction,
        "x-roles": list(message.receivers),
    }
    if "request_id" in message.model.model_fields:
        body["correlationId"] = {"$ref": "#/components/correlationIds/requestId"}
    return body


def _channel(role: Role) -> dict[str, Any]:
    mine = [m for m in messages() if role in m.receivers]
    return {
        "address": CHANNEL_ADDRESS[role],
        "title": f"{role.capitalize()} socket",
        "description": (
            f"One WebSocket per {role} device. A {role} token only; the path without the "
            "trailing slash works too."
        ),
        "messages": {m.key: {"$ref": f"#/components/messages/{m.key}"} for m in mine},
        "bindings": {
            "ws": {
                "headers": {
                    "type": "object",
                    "properties": {
                        "Authorization": {
                            "type": "string",
                            "description": "Bearer <jwt>, unless the token is in the query.",
                        }
                    },
                },
                "query": {
                    "type": "object",
                    "properties": {
                        "token": {
                            "type": "string",
                            "description": "The JWT, for clients that cannot set headers.",
                        }
                    },
                },
                "bindingVersion": "0.1.0",
            }
        },
    }


def _operations(role: Role) -> dict[str, Any]:
    def refs(direction: Direction) -> list[dict[str, str]]:
        return [
            {"$ref": f"#/channels/{role}/messages/{m.key}"}
            for m in messages()
            if m.direction == direction and role in m.receivers
        ]

    return {
        f"receiveFrom{role.capitalize()}": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{role}"},
            "title": f"Frames a {role} sends",
            "summary": f"What the service accepts on the {role} socket.",
            "messages": refs("client"),
        },
        f"sendTo{role.capitalize()}": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{role}"},
            "title": f"Frames a {role} receives",
            "summary": f"What the service sends on the {role} socket.",
            "messages": refs("server"),
        },
    }


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def description() -> str:
    """The document's ``info.description``: the intro, the close and error code tables."""
    parts = [f"## {title}\n\n{text}" for title, text in INTRO]
    parts.append(
        "## Close codes\n\n"
        + _markdown_table(
            ("code", "name", "meaning", "what the client should do"),
            [(str(c.code), c.name, c.meaning, c.client_should) for c in CLOSE_CODES],
        )
    )
    parts.append(
        "## Error codes\n\n"
        + _markdown_table(("code", "when"), [(f"`{e.code}`", e.when) for e in error_codes()])
    )
    return "\n\n".join(parts)


@functools.cache
def _static_document() -> dict[str, Any]:
    channels = {role: _channel(role) for role in ROLES}
    operations: dict[str, Any] = {}
    for role in ROLES:
        operations.update(_operations(role))
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "worksession WebSocket API",
            "version": __version__,
            "description": description(),
            "x-close-codes": [
                {
                    "code": c.code,
                    "name": c.name,
                    "meaning": c.meaning,
                    "clientShould": c.client_should,
                }
                for c in CLOSE_CODES
            ],
            "x-error-codes": [
                {"code": e.code, "httpStatus": e.http_status, "when": e.when} for e in error_codes()
            ],
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _schemas(),
            "messages": {m.key: _message_object(m) for m in messages()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <jwt>` with sub, user_type, exp.",
                },
                "queryToken": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "The same JWT in `?token=`, for browsers.",
                },
            },
            "correlationIds": {
                "requestId": {
                    "description": "A client frame's request_id, echoed in the direct "
                    "answer to it (the ack or the error).",
                    "location": "$message.payload#/request_id",
                }
            },
        },
    }


def build_document(*, host: str, secure: bool = False) -> dict[str, Any]:
    """The AsyncAPI document, with the server this request reached as its one server."""
    document = copy.deepcopy(_static_document())
    document["servers"] = {
        "this": {
            "host": host,
            "protocol": "wss" if secure else "ws",
            "description": "The server that served this document.",
            "security": [
                {"$ref": "#/components/securitySchemes/bearer"},
                {"$ref": "#/components/securitySchemes/queryToken"},
            ],
        }
    }
    return document
