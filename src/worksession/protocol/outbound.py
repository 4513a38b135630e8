"""Every frame the server sends, as a Pydantic model: what is sent is what is documented.

The event log's ``render``, the gateway and the pipeline's notices build these models and
:func:`encode` turns them into the text of a frame, so the AsyncAPI document, generated
from the same classes, describes the frames actually sent (a test compares them field by
field). Fields are declared in wire order, ``type`` first.

``request_id`` is declared on the frames that can answer a client frame. Models are built
without it and the socket that owes the answer adds it with :func:`with_request_id`: the
same rendered event goes to every device of a user, and only one of them asked.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

from worksession.kit.clock import UtcTimestamp
from worksession.sessions.schemas import SessionSnapshot

logger = logging.getLogger(__name__)

Role = Literal["seeker", "provider"]
RequestId = str | None


class Outbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def encode(frame: Outbound) -> str:
    """The text of ``frame``: compact UTF-8 JSON with the fields that were set, in order.

    ``exclude_unset`` rather than ``exclude_none``: a field given as None on purpose (a
    chat ack's ``client_msg_id``) is sent as null, one never given (``request_id``, the seq
    of a repeated ``chat_ready``) is left out.

    Never raises on a string UTF-8 cannot carry (a lone surrogate, which JSON's ``\\ud800``
    escape lets a client send): the inbound checks keep them out, and if one slips through
    anyway the frame goes out ASCII-escaped, still valid JSON, rather than failing in the
    writer and closing the socket with 1011 because of what a client sent.
    """
    try:
        return frame.model_dump_json(exclude_unset=True)
    except PydanticSerializationError:
        logger.warning(
            "a %s frame held an unpaired surrogate; sent escaped", frame.__class__.__name__
        )
        fields = frame.model_dump(mode="json", exclude_unset=True)
        return json.dumps(fields, ensure_ascii=True, separators=(",", ":"))


def with_request_id(text: str, request_id: str | None) -> str:
    """``text`` (an encoded frame) with ``request_id`` as its last field, if there is one.

    Like :func:`encode`, the result is always encodable as UTF-8.
    """
    if request_id is None:
        return text
    try:
        request_id.encode("utf-8")
        shown = json.dumps(request_id, ensure_ascii=False)
    except UnicodeEncodeError:
        shown = json.dumps(request_id, ensure_ascii=True)
    return f'{text[:-1]},"request_id":{shown}}}'


# --- connecting, errors, keep-alive ---------------------------------------------------


class PendingWork(Outbound):
    """An open work offer as ``connected.pending_work`` lists it."""

    work_id: int
    details: dict[str, Any]
    seeker_location: dict[str, float] | None
    created_at: UtcTimestamp
    expires_at: UtcTimestamp = Field(description="When the offer lapses; answer before it.")


class OpenOrder(Outbound):
    """*1.1* A seeker's work order still waiting for a provider, as
    ``connected.open_orders`` lists it."""

    work_id: int
    details: dict[str, Any]
    created_at: UtcTimestamp
    expires_at: UtcTimestamp = Field(description="When the offers lapse if nobody accepts.")


class Connected(Outbound):
    """The first frame after a good handshake: the live session's snapshot (or null), for
    providers the open work offers, and (*1.1*) for seekers their pending work orders."""

    type: Literal["connected"]
    user_type: Role
    server_time: UtcTimestamp
    session: SessionSnapshot | None
    pending_work: list[PendingWork]
    open_orders: list[OpenOrder] = Field(
        description="1.1: the seeker's work orders still pending, oldest first; [] for "
        "providers. An order that ended while the seeker was away is not here: "
        "GET /v1/me/work-orders tells how it ended."
    )


class ErrorFrame(Outbound):
    """The frame could not be processed; the connection stays open. ``code`` is one of the
    error codes."""

    type: Literal["error"]
    code: str
    message: str
    retry_after_ms: int | None = None
    request_id: RequestId = None
    details: list[dict[str, Any]] | None = None


class Pong(Outbound):
    """The answer to ``ping``."""

    type: Literal["pong"]
    server_time: UtcTimestamp
    request_id: RequestId = None


class Resumed(Outbound):
    """The replay asked for by ``resume`` is complete; ``last_seq`` is the newest seq sent."""

    type: Literal["resumed"]
    session_id: str
    last_seq: int
    request_id: RequestId = None


class AuthRefreshed(Outbound):
    """The new token was accepted; the socket now lives until ``exp``."""

    type: Literal["auth_refreshed"]
    exp: UtcTimestamp
    request_id: RequestId = None


# --- work offers (not part of a session's history) --------------------------------------


class WorkRequest(Outbound):
    """A work offer for this provider; answer with ``work_response`` before ``expires_at``."""

    type: Literal["work_request"]
    work_id: int
    details: dict[str, Any]
    seeker_location: dict[str, float] | None
    created_at: UtcTimestamp
    expires_at: UtcTimestamp

    @classmethod
    def of(cls, offer: PendingWork) -> WorkRequest:
        return cls(type="work_request", **dict(offer))


class WorkUnavailable(Outbound):
    """An offer of this provider is gone: another provider took it, or it expired."""

    type: Literal["work_unavailable"]
    work_id: int


class WorkDeclined(Outbound):
    """This provider's decline was recorded (to every device of the provider)."""

    type: Literal["work_declined"]
    work_id: int
    request_id: RequestId = None


class WorkRejected(Outbound):
    """Every offered provider declined the seeker's work order."""

    type: Literal["work_rejected"]
    work_id: int


class WorkExpired(Outbound):
    """Nobody answered the seeker's work order in time."""

    type: Literal["work_expired"]
    work_id: int


class WorkWithdrawn(Outbound):
    """*1.1* The seeker's work order was withdrawn (``cancel_work``, or the internal API),
    to every device of the seeker; the offered providers get ``work_unavailable``."""

    type: Literal["work_withdrawn"]
    work_id: int
    request_id: RequestId = None


# --- the session's history (rendered from the event log; each carries its seq) ---------


class WorkAccepted(Outbound):
    """A provider accepted: the session exists, in state ``waiting`` (seq 1), for both
    participants."""

    type: Literal["work_accepted"]
    work_id: int
    session_id: str
    connection_state: Literal["waiting"]
    seq: int = Field(ge=1, description="Position in the session's history; 1, 2, 3, ...")
    request_id: RequestId = None


class MediumsSelected(Outbound):
    """The seeker's own medium selection, as stored; the session is ``active``."""

    type: Literal["mediums_selected"]
    session_id: str
    mediums: dict[str, str]
    connection_state: Literal["active"]
    seq: int = Field(ge=1)
    request_id: RequestId = None


class SeekerMediumsSelected(Outbound):
    """The seeker's selected mediums, for the provider."""

    type: Literal["seeker_mediums_selected"]
    session_id: str
    mediums: dict[str, str]
    seq: int = Field(ge=1)


class MediumsShared(Outbound):
    """The provider's own shared mediums, as stored."""

    type: Literal["mediums_shared"]
    session_id: str
    mediums: dict[str, str]
    seq: int = Field(ge=1)
    request_id: RequestId = None


class ProviderMediumsShared(Outbound):
    """The provider's shared mediums, for the seeker."""

    type: Literal["provider_mediums_shared"]
    session_id: str
    mediums: dict[str, str]
    seq: int = Field(ge=1)


class ProviderNearby(Outbound):
    """The distance fell to 300 m or less for the first time in this session."""

    type: Literal["provider_nearby"]
    session_id: str
    distance_meters: float
    seq: int = Field(ge=1)


class ProviderArrived(Outbound):
    """The distance fell to 50 m or less for the first time in this session."""

    type: Literal["provider_arrived"]
    session_id: str
    distance_meters: float
    seq: int = Field(ge=1)


class ChatReady(Outbound):
    """The session's chat room is open."""

    type: Literal["chat_ready"]
    session_id: str
    chat_room_id: str
    seq: int | None = Field(
        default=None, ge=1, description="Absent when answering a repeated start_chat."
    )
    request_id: RequestId = None


class ChatMessageAck(Outbound):
    """Your own message was stored: the answer to the socket that sent it, and (*1.1*) the
    same frame on every other socket of yours and in a ``resume``, which is why it carries
    the text. For a repeated ``client_msg_id``, the original ack again. Like
    ``chat_message``, only ``sender_type`` says who sent it, never a user id."""

    type: Literal["chat_message_ack"]
    session_id: str
    message_id: str
    client_msg_id: str | None
    status: Literal["sent"]
    sender_type: Role = Field(description="Your own role (1.1).")
    message: str = Field(description="The text as stored (1.1), for your other devices.")
    created_at: UtcTimestamp
    seq: int = Field(ge=1)
    request_id: RequestId = None


class ChatMessageOut(Outbound):
    """A chat message from the other participant; only ``sender_type`` says who."""

    type: Literal["chat_message"]
    session_id: str
    message_id: str
    sender_type: Role
    message: str
    created_at: UtcTimestamp
    seq: int = Field(ge=1)


class MessageStatusUpdate(Outbound):
    """One step of a chat message's status: ``delivered``, then ``read``. *1.1* Both
    participants receive the same frame on every socket: the sender learns its message
    arrived, the recipient's other devices that it was read here."""

    type: Literal["message_status_update"]
    session_id: str
    message_id: str
    status: Literal["delivered", "read"]
    at: UtcTimestamp
    seq: int = Field(ge=1)


class ConnectionCancelled(Outbound):
    """The session was cancelled; every socket of both participants closes with 1000 next."""

    type: Literal["connection_cancelled"]
    session_id: str
    cancelled_by: Literal["seeker", "provider", "system"] = Field(
        description=(
            '"system": the internal API, or nobody sent a frame for the session for'
            " WORKSESSION_ABANDON_AFTER_S (default 12 hours)"
        )
    )
    seq: int = Field(ge=1)
    request_id: RequestId = None


class SessionCompleted(Outbound):
    """The provider completed the session; every socket of both closes with 1000 next."""

    type: Literal["session_completed"]
    session_id: str
    seq: int = Field(ge=1)
    request_id: RequestId = None


# --- ephemeral (no seq) -------------------------------------------------------------------


class DistanceUpdate(Outbound):
    """Ephemeral (no seq): the distance between the two, on a 50 m move and every 30 s."""

    type: Literal["distance_update"]
    session_id: str
    distance_meters: float
    distance_formatted: str
    updated_at: UtcTimestamp


class TypingIndicatorOut(Outbound):
    """Ephemeral (no seq): the other participant started or stopped typing."""

    type: Literal["typing_indicator"]
    session_id: str
    sender_type: Role
    is_typing: bool


class PeerPresence(Outbound):
    """Ephemeral (no seq, *1.1*): the other participant's first socket opened (``online``
    true), or their last one has been closed for 5 seconds (false; a reconnect within
    those 5 s sends nothing). Sent to every socket of yours; the state when you connect is
    ``connected.session.peer_online``."""

    type: Literal["peer_presence"]
    session_id: str
    online: bool


SessionFrame = (
    WorkAccepted
    | MediumsSelected
    | SeekerMediumsSelected
    | MediumsShared
    | ProviderMediumsShared
    | ProviderNearby
    | ProviderArrived
    | ChatReady
    | ChatMessageAck
    | ChatMessageOut
    | MessageStatusUpdate
    | ConnectionCancelled
    | SessionCompleted
)
"""What ``render`` turns a logged event into."""

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
    WorkWithdrawn,
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
    PeerPresence,
    ConnectionCancelled,
    SessionCompleted,
    Resumed,
    AuthRefreshed,
)
