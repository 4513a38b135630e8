"""Every WebSocket message of the contract as a Pydantic model.

Inbound frames are decoded once by :func:`parse_frame` (a hardened ``json.loads``) and
validated once against the discriminated union :data:`INBOUND`; the outbound models
describe what the server sends and feed the AsyncAPI document. Field names are fixed by
PROTOCOL.md.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
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


RequestId = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_REQUEST_ID_CHARS)]
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
ClientMsgId = Annotated[str, Strict(), Field(min_length=1, max_length=64)]


# --- inbound -----------------------------------------------------------------------------


class Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: RequestId | None = None


class WorkResponse(Inbound):
    """Provider: accept or decline a work offer."""

    type: Literal["work_response"]
    work_id: WorkId
    accepted: Annotated[bool, Strict()]


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

    request_id = value.get("request_id")
    if not (isinstance(request_id, str) and 0 < len(request_id) <= MAX_REQUEST_ID_CHARS):
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
    """Pydantic's errors without the offending input (it may be a phone number or text)."""
    details: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=True):
        loc = list(error["loc"])
        if loc and loc[0] in INBOUND_TYPES:  # the discriminator's tag adds nothing
            loc = loc[1:]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, InvalidMediums):
            # One entry per bad medium, as the mediums check reported them.
            details.extend({**d, "type": "value_error"} for d in cause.details)
            continue
        details.append({"loc": loc, "msg": error["msg"], "type": error["type"]})
    return details


def _first_line(exc: ValueError) -> str:
    return str(exc).splitlines()[0][:120]


# --- outbound ----------------------------------------------------------------------------


class Outbound(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionEventFrame(Outbound):
    session_id: str
    seq: int = Field(ge=1, description="Position in the session's history; 1, 2, 3, ...")


class Snapshot(Outbound):
    session_id: str
    work_id: int
    connection_state: Literal["waiting", "active"]
    your_role: Literal["seeker", "provider"]
    chat_room_id: str | None
    mediums: dict[Literal["seeker", "provider"], dict[str, str] | None]
    distance_meters: float | None
    distance_formatted: str | None
    last_seq: int


class PendingWork(Outbound):
    work_id: int
    details: dict[str, Any]
    seeker_location: dict[str, float] | None
    created_at: datetime
    expires_at: datetime


class Connected(Outbound):
    """The first frame after a good handshake: the live session's snapshot (or null) and,
    for providers, the open work offers."""

    type: Literal["connected"]
    user_type: Literal["seeker", "provider"]
    server_time: datetime
    session: Snapshot | None
    pending_work: list[PendingWork]


class ErrorFrame(Outbound):
    """The frame could not be processed; the connection stays open. ``code`` is one of the
    error codes."""

    type: Literal["error"]
    code: str
    message: str
    request_id: str | None = None
    details: list[dict[str, Any]] | None = None
    retry_after_ms: int | None = None


class Pong(Outbound):
    """The answer to ``ping``."""

    type: Literal["pong"]
    server_time: datetime
    request_id: str | None = None


class WorkRequest(PendingWork):
    """A work offer for this provider; answer with ``work_response`` before ``expires_at``."""

    type: Literal["work_request"]


class WorkAccepted(SessionEventFrame):
    """A provider accepted: the session exists, in state ``waiting`` (seq 1), for both
    participants."""

    type: Literal["work_accepted"]
    work_id: int
    connection_state: Literal["waiting"]
    request_id: str | None = None


class WorkUnavailable(Outbound):
    """An offer of this provider is gone: another provider took it, or it expired."""

    type: Literal["work_unavailable"]
    work_id: int


class WorkDeclined(Outbound):
    """This provider's decline was recorded (to every device of the provider)."""

    type: Literal["work_declined"]
    work_id: int
    request_id: str | None = None


class WorkRejected(Outbound):
    """Every offered provider declined the seeker's work order."""

    type: Literal["work_rejected"]
    work_id: int


class WorkExpired(Outbound):
    """Nobody answered the seeker's work order in time."""

    type: Literal["work_expired"]
    work_id: int


class MediumsSelected(SessionEventFrame):
    """The seeker's own medium selection, as stored; the session is ``active``."""

    type: Literal["mediums_selected"]
    mediums: dict[str, str]
    connection_state: Literal["active"]
    request_id: str | None = None


class SeekerMediumsSelected(SessionEventFrame):
    """The seeker's selected mediums, for the provider."""

    type: Literal["seeker_mediums_selected"]
    mediums: dict[str, str]


class MediumsShared(SessionEventFrame):
    """The provider's own shared mediums, as stored."""

    type: Literal["mediums_shared"]
    mediums: dict[str, str]
    request_id: str | None = None


class ProviderMediumsShared(SessionEventFrame):
    """The provider's shared mediums, for the seeker."""

    type: Literal["provider_mediums_shared"]
    mediums: dict[str, str]


class DistanceUpdate(Outbound):
    """Ephemeral (no seq): the distance between the two, on a 50 m move and every 30 s."""

    type: Literal["distance_update"]
    session_id: str
    distance_meters: float
    distance_formatted: str
    updated_at: datetime


class ProviderNearby(SessionEventFrame):
    """The distance fell to 300 m or less for the first time in this session."""

    type: Literal["provider_nearby"]
    distance_meters: float


class ProviderArrived(SessionEventFrame):
    """The distance fell to 50 m or less for the first time in this session."""

    type: Literal["provider_arrived"]
    distance_meters: float


class ChatReady(Outbound):
    """The session's chat room is open."""

    type: Literal["chat_ready"]
    session_id: str
    chat_room_id: str
    seq: int | None = Field(
        default=None, description="Absent when answering a repeated start_chat."
    )
    request_id: str | None = None


class ChatMessageAck(SessionEventFrame):
    """The sender's own message was stored (or, for a repeated ``client_msg_id``, the
    original ack again)."""

    type: Literal["chat_message_ack"]
    message_id: str
    client_msg_id: str | None
    status: Literal["sent"]
    created_at: datetime
    request_id: str | None = None


class ChatMessageOut(SessionEventFrame):
    """A chat message from the other participant; only ``sender_type`` says who."""

    type: Literal["chat_message"]
    message_id: str
    sender_type: Literal["seeker", "provider"]
    message: str
    created_at: datetime


class MessageStatusUpdate(SessionEventFrame):
    """One step of your message's status: ``delivered``, then ``read``."""

    type: Literal["message_status_update"]
    message_id: str
    status: Literal["delivered", "read"]
    at: datetime


class TypingIndicatorOut(Outbound):
    """Ephemeral (no seq): the other participant started or stopped typing."""

    type: Literal["typing_indicator"]
    session_id: str
    sender_type: Literal["seeker", "provider"]
    is_typing: bool


class ConnectionCancelled(SessionEventFrame):
    """The session was cancelled; every socket of both participants closes with 1000 next."""

    type: Literal["connection_cancelled"]
    cancelled_by: Literal["seeker", "provider", "system"]
    request_id: str | None = None


class SessionCompleted(SessionEventFrame):
    """The provider completed the session; every socket of both closes with 1000 next."""

    type: Literal["session_completed"]
    request_id: str | None = None


class Resumed(Outbound):
    """The replay asked for by ``resume`` is complete; ``last_seq`` is the newest seq sent."""

    type: Literal["resumed"]
    session_id: str
    last_seq: int
    request_id: str | None = None


class AuthRefreshed(Outbound):
    """The new token was accepted; the socket now lives until ``exp``."""

    type: Literal["auth_refreshed"]
    exp: datetime
    request_id: str | None = None


OUTBOUND_MODELS: tuple[type[Outbound], ...] = (
    Connected,
    ErrorFrame,
    Pong,
    WorkRequest,
    WorkAccepted,
    WorkUnavailable,
    WorkDeclined,
    WorkRejected,
    WorkExpired,
    MediumsSelected,
    SeekerMediumsSelected,
    MediumsShared,
    ProviderMediumsShared,
    DistanceUpdate,
    ProviderNearby,
    ProviderArrived,
    ChatReady,
    ChatMessageAck,
    ChatMessageOut,
    MessageStatusUpdate,
    TypingIndicatorOut,
    ConnectionCancelled,
    SessionCompleted,
    Resumed,
    AuthRefreshed,
)
