"""Every frame a client may send, as a Pydantic model, and the one way to read it.

Inbound frames are decoded once by :func:`parse_frame` (a hardened ``json.loads``) and
validated once against the discriminated union :data:`INBOUND`; the same models feed the
AsyncAPI document. Field names are fixed by the contract.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from worksession.chat.text import MAX_MESSAGE_CHARS, validate_message_text
from worksession.errors import (
    Forbidden,
    InvalidJson,
    UnknownType,
    ValidationFailed,
    WorksessionError,
)
from worksession.geo import recorded_at_too_far_in_future
from worksession.kit.clock import utcnow
from worksession.sessions.mediums import InvalidMediums, normalise_mediums

MAX_REQUEST_ID_CHARS = 64
"""Also the limit of ``client_msg_id``: both are the client's own labels (PROTOCOL 3)."""
MAX_JSON_DEPTH = 32
"""No frame of the protocol nests deeper than 3; a deeper one is refused before decoding,
at a depth that does not depend on how deep the decoder's caller already is in the stack
(Python's recursion limit would otherwise decide, somewhere near 1,000 levels)."""
MAX_NUMBER_DIGITS = 32
"""Longer integer literals are refused without being converted (a 5,000-digit number
would otherwise cost quadratic time, or trip Python's 4,300-digit guard)."""


# --- field types -------------------------------------------------------------------------


def _require_str(value: object) -> object:
    # Lax datetime parsing would take a bare number as a Unix timestamp; the contract says
    # ISO 8601, so anything but a string is refused before pydantic converts it.
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string")
    return value


def is_client_label(value: object) -> bool:
    """Whether ``value`` may be a ``request_id`` or a ``client_msg_id``: 1 to 64 printable
    characters (PROTOCOL 3, *1.1*).

    ``str.isprintable`` refuses control and format characters (a NUL, which PostgreSQL
    cannot store in text; bidi overrides), lone surrogates (which UTF-8 cannot carry, so
    echoing one would break the answer frame), private-use and unassigned code points, and
    every space but U+0020. A label is echoed back verbatim, so it must be safe to show.
    """
    return isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_CHARS and value.isprintable()


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable characters only (no control characters)")
    return value


ClientLabel = Annotated[
    str,
    Strict(),
    Field(min_length=1, max_length=MAX_REQUEST_ID_CHARS),
    AfterValidator(_printable),
]
RequestId = ClientLabel
SessionId = Annotated[uuid.UUID, Field(description="The session's UUID.")]
WorkId = Annotated[int, Strict(), Field(ge=1, le=2**63 - 1)]
# Strict: a JSON number only (an integer is fine), never a string or a boolean.
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Latitude = Annotated[Finite, Field(ge=-90, le=90)]
Longitude = Annotated[Finite, Field(ge=-180, le=180)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_require_str)]
Mediums = Annotated[
    dict[str, str],
    BeforeValidator(normalise_mediums),
    Field(
        description=(
            "0 to 3 of telegram, whatsapp, call; each an Indian mobile number. A +91, 91 or "
            "0 prefix, spaces and hyphens are stripped; stored and sent as 10 digits."
        ),
        examples=[{"whatsapp": "9876543210", "call": "9876543210"}],
    ),
]
MessageText = Annotated[
    str,
    Strict(),
    BeforeValidator(validate_message_text),
    Field(min_length=1, max_length=MAX_MESSAGE_CHARS),
]
ClientMsgId = ClientLabel


# --- inbound -----------------------------------------------------------------------------


class Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: RequestId | None = None


class WorkResponse(Inbound):
    """Provider: accept or decline a work offer."""

    type: Literal["work_response"]
    work_id: WorkId
    accepted: Annotated[bool, Strict()]


class CancelWork(Inbound):
    """*1.1* Seeker: withdraw a pending work order; every device of the seeker gets
    ``work_withdrawn``, every provider still offered ``work_unavailable``."""

    type: Literal["cancel_work"]
    work_id: WorkId


class MediumSelection(Inbound):
    """Seeker: choose how the provider may contact them (replaces an earlier choice)."""

    type: Literal["medium_selection"]
    session_id: SessionId
    mediums: Mediums


class MediumShare(Inbound):
    """Provider: share their own contact numbers."""

    type: Literal["medium_share"]
    session_id: SessionId
    mediums: Mediums


class LocationUpdate(Inbound):
    """Either: a new position fix. Noisy fixes are dropped silently."""

    type: Literal["location_update"]
    session_id: SessionId
    lat: Latitude
    lng: Longitude
    accuracy: Annotated[Finite, Field(ge=0)] | None = None
    recorded_at: Timestamp | None = None

    @field_validator("recorded_at")
    @classmethod
    def _not_in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and recorded_at_too_far_in_future(value, utcnow()):
            raise ValueError("recorded_at is more than 60 s ahead of the server's clock")
        return value


class StartChat(Inbound):
    """Either: open the session's anonymous chat (``chat_ready`` to both); repeating it
    answers the caller alone with the same ``chat_room_id``."""

    type: Literal["start_chat"]
    session_id: SessionId


class ChatMessageIn(Inbound):
    """Either: send a chat message; ``client_msg_id`` makes a retry safe."""

    type: Literal["chat_message"]
    session_id: SessionId
    message: MessageText
    client_msg_id: ClientMsgId | None = None


class MessageDelivered(Inbound):
    """Recipient: a chat message reached this device; its sender gets
    ``message_status_update``."""

    type: Literal["message_delivered"]
    message_id: uuid.UUID


class MessageRead(Inbound):
    """Recipient: a chat message was read (implies delivered); status never moves back."""

    type: Literal["message_read"]
    message_id: uuid.UUID


class TypingIndicatorIn(Inbound):
    """Either: typing started or stopped; a ``true`` not repeated within 6 s becomes
    ``false``."""

    type: Literal["typing_indicator"]
    session_id: SessionId
    is_typing: Annotated[bool, Strict()]


class CancelConnection(Inbound):
    """Either: cancel the live session; both sides get ``connection_cancelled``, then 1000."""

    type: Literal["cancel_connection"]
    session_id: SessionId


class CompleteSession(Inbound):
    """Provider: the job is done."""

    type: Literal["complete_session"]
    session_id: SessionId


class Resume(Inbound):
    """Replay every event of the session after ``last_seq``, then ``resumed``."""

    type: Literal["resume"]
    session_id: SessionId
    last_seq: Annotated[int, Strict(), Field(ge=0, le=2**31 - 1)]


class AuthRefresh(Inbound):
    """A fresh token for the same user, before the current one expires."""

    type: Literal["auth_refresh"]
    token: Annotated[str, Strict(), Field(min_length=1, max_length=8192)]


class Ping(Inbound):
    """Either: a keep-alive, answered with ``pong``."""

    type: Literal["ping"]


InboundMessage = Annotated[
    WorkResponse
    | CancelWork
    | MediumSelection
    | MediumShare
    | LocationUpdate
    | StartChat
    | ChatMessageIn
    | MessageDelivered
    | MessageRead
    | TypingIndicatorIn
    | CancelConnection
    | CompleteSession
    | Resume
    | AuthRefresh
    | Ping,
    Field(discriminator="type"),
]
INBOUND: TypeAdapter[InboundMessage] = TypeAdapter(InboundMessage)

INBOUND_MODELS: tuple[type[Inbound], ...] = (
    WorkResponse,
    CancelWork,
    MediumSelection,
    MediumShare,
    LocationUpdate,
    StartChat,
    ChatMessageIn,
    MessageDelivered,
    MessageRead,
    TypingIndicatorIn,
    CancelConnection,
    CompleteSession,
    Resume,
    AuthRefresh,
    Ping,
)

BOTH = frozenset({"seeker", "provider"})
ROLES_ALLOWED: dict[str, frozenset[str]] = {
    "work_response": frozenset({"provider"}),
    "cancel_work": frozenset({"seeker"}),
    "medium_selection": frozenset({"seeker"}),
    "medium_share": frozenset({"provider"}),
    "complete_session": frozenset({"provider"}),
}
"""Types only one role may send; every other inbound type is open to both."""

INBOUND_TYPES = frozenset(get_args(m.model_fields["type"].annotation)[0] for m in INBOUND_MODELS)


# --- decoding ----------------------------------------------------------------------------


class _OversizedNumber:
    """Stands in for a number too long to convert; validation refuses it by type."""

    def __repr__(self) -> str:
        return "<number too long>"


def _parse_int(literal: str) -> object:
    if len(literal.lstrip("-")) > MAX_NUMBER_DIGITS:
        return _OversizedNumber()
    return int(literal)


def _parse_float(literal: str) -> object:
    if len(literal) > MAX_NUMBER_DIGITS * 4:
        return _OversizedNumber()
    return float(literal)


# A string runs to its closing quote or, unterminated, to the end of the text (a lone
# trailing backslash included), so every match attempt succeeds and one pass is linear.
# The plain '"(?:[^"\\]|\\.)*"' failed on an unterminated string and was retried from every
# escaped quote after it: 8,000 of them took a second of the event loop.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\[\s\S]?)*(?:"|\Z)')
_BRACKET = re.compile(r"[\[\]{}]")


def _nests_deeper_than(text: str, limit: int) -> bool:
    # Fast path: a frame with few brackets cannot nest deeply (nearly every frame).
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in object")
    return result


@dataclass(frozen=True, slots=True)
class BadFrame(Exception):
    """A frame that cannot be processed, with the error to answer and the request id
    (when one could be read from it)."""

    error: WorksessionError
    request_id: str | None = None


def parse_frame(raw: str | bytes, *, role: str) -> InboundMessage:
    """Decode, check the type and the role, and validate one frame, or raise ``BadFrame``.

    The checks run cheapest first and none touches the database.
    """
    if not isinstance(raw, str):
        raise BadFrame(InvalidJson("Binary frames are not accepted; send JSON text"))
    if _nests_deeper_than(raw, MAX_JSON_DEPTH):
        raise BadFrame(InvalidJson("JSON nested too deeply"))
    try:
        value = json.loads(
            raw,
            object_pairs_hook=_no_duplicate_keys,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise BadFrame(InvalidJson("JSON nested too deeply")) from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise BadFrame(InvalidJson(f"Not valid JSON: {_first_line(exc)}")) from None
    if not isinstance(value, dict):
        raise BadFrame(InvalidJson("A frame must be a JSON object"))

    # A bad request_id is never echoed: the model refuses it below, and the error that
    # says so carries no request_id.
    request_id = value.get("request_id")
    if not is_client_label(request_id):
        request_id = None
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in INBOUND_TYPES:
        raise BadFrame(UnknownType("Missing or unknown message type"), request_id)
    allowed = ROLES_ALLOWED.get(kind, BOTH)
    if role not in allowed:
        raise BadFrame(Forbidden(f"A {role} may not send {kind}"), request_id)
    try:
        return INBOUND.validate_python(value)
    except ValidationError as exc:
        raise BadFrame(
            ValidationFailed("Invalid message", details=validation_details(exc)), request_id
        ) from None


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without the offending input (it may be a phone number or text).

    A ``loc`` can still name a key the client invented (an unknown field, an unknown
    medium) and a ``msg`` can quote a character of the input (pydantic's UUID errors do):
    both pass through :func:`_shown` so that no detail can carry what the frame that
    answers cannot encode.
    """
    details: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=True):
        loc = list(error["loc"])
        if loc and loc[0] in INBOUND_TYPES:  # the discriminator's tag adds nothing
            loc = loc[1:]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, InvalidMediums):
            # One entry per bad medium, as the mediums check reported them.
            details.extend(
                {"loc": _shown_loc(d["loc"]), "msg": _shown(d["msg"]), "type": "value_error"}
                for d in cause.details
            )
            continue
        details.append({"loc": _shown_loc(loc), "msg": _shown(error["msg"]), "type": error["type"]})
    return details


_MAX_SHOWN_CHARS = 64
_UNSHOWABLE = "\ufffd"


def _shown(text: str) -> str:
    """``text`` fit to echo: unprintable characters (lone surrogates, controls) become
    U+FFFD and anything past 64 characters is cut, so a key of 16 KiB is not sent back."""
    shown = "".join(c if c.isprintable() else _UNSHOWABLE for c in text[:_MAX_SHOWN_CHARS])
    return shown if len(text) <= _MAX_SHOWN_CHARS else shown + "..."


def _shown_loc(loc: list[Any]) -> list[Any]:
    return [_shown(part) if isinstance(part, str) else part for part in loc]


def _first_line(exc: ValueError) -> str:
    return str(exc).splitlines()[0][:120]
