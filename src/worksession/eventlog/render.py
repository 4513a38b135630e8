"""The one pure function that turns a logged event into the frame a role receives.

The live path (a socket handed an event by the broker) and the replay path (``resume``,
gap filling) both call :func:`render`, so a replayed frame is byte for byte the frame the
client would have received live. No I/O, no clock: everything comes from the event. The
result is an outbound model of ``protocol.outbound``, the classes the AsyncAPI document is
generated from.
"""

from __future__ import annotations

from worksession.eventlog.events import LoggedEvent
from worksession.protocol import outbound as out

TERMINAL_KINDS = frozenset({"connection_cancelled", "session_completed"})
"""After delivering one of these live, the gateway closes the socket with 1000."""


def render(event: LoggedEvent, role: str) -> out.SessionFrame:
    """The frame ``role`` ("seeker" or "provider") receives for ``event``.

    Every event has a frame for both roles (PROTOCOL 3, *1.1*): a participant sees every
    ``seq`` of its session, so a jump by more than one always means frames were missed.
    """
    sid = str(event.session_id)
    data = event.data
    seq = event.seq
    match event.kind:
        case "work_accepted":
            return out.WorkAccepted(
                type="work_accepted",
                work_id=data["work_id"],
                session_id=sid,
                connection_state=data["connection_state"],
                seq=seq,
            )
        case "mediums_selected" if role == "seeker":
            return out.MediumsSelected(
                type="mediums_selected",
                session_id=sid,
                mediums=data["mediums"],
                connection_state=data["connection_state"],
                seq=seq,
            )
        case "mediums_selected":
            return out.SeekerMediumsSelected(
                type="seeker_mediums_selected", session_id=sid, mediums=data["mediums"], seq=seq
            )
        case "mediums_shared" if role == "provider":
            return out.MediumsShared(
                type="mediums_shared", session_id=sid, mediums=data["mediums"], seq=seq
            )
        case "mediums_shared":
            return out.ProviderMediumsShared(
                type="provider_mediums_shared", session_id=sid, mediums=data["mediums"], seq=seq
            )
        case "chat_ready":
            return out.ChatReady(
                type="chat_ready", session_id=sid, chat_room_id=data["chat_room_id"], seq=seq
            )
        case "chat_message" if role == data["sender_type"]:
            return chat_message_ack(event)
        case "chat_message":
            return out.ChatMessageOut(
                type="chat_message",
                session_id=sid,
                message_id=data["message_id"],
                sender_type=data["sender_type"],
                message=data["message"],
                created_at=event.created_at,
                seq=seq,
            )
        case "message_status":
            # 1.1: both participants get the same frame, so the recipient's other devices
            # see the message read too, and neither side's seq stream has a hole.
            return out.MessageStatusUpdate(
                type="message_status_update",
                session_id=sid,
                message_id=data["message_id"],
                status=data["status"],
                at=event.created_at,
                seq=seq,
            )
        case "provider_nearby":
            return out.ProviderNearby(
                type="provider_nearby",
                session_id=sid,
                distance_meters=data["distance_meters"],
                seq=seq,
            )
        case "provider_arrived":
            return out.ProviderArrived(
                type="provider_arrived",
                session_id=sid,
                distance_meters=data["distance_meters"],
                seq=seq,
            )
        case "connection_cancelled":
            return out.ConnectionCancelled(
                type="connection_cancelled",
                session_id=sid,
                cancelled_by=data["cancelled_by"],
                seq=seq,
            )
        case "session_completed":
            return out.SessionCompleted(type="session_completed", session_id=sid, seq=seq)
    raise ValueError(f"unknown event kind {event.kind!r}")


def chat_message_ack(event: LoggedEvent) -> out.ChatMessageAck:
    """The sender's view of its own ``chat_message`` event (also the answer to a retry)."""
    data = event.data
    return out.ChatMessageAck(
        type="chat_message_ack",
        session_id=str(event.session_id),
        message_id=data["message_id"],
        client_msg_id=data.get("client_msg_id"),
        status="sent",
        sender_type=data["sender_type"],
        message=data["message"],
        created_at=event.created_at,
        seq=event.seq,
    )
