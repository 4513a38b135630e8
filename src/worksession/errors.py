"""One error family with stable codes, mapped once to HTTP and once to WebSocket frames."""

from __future__ import annotations

from typing import Any, ClassVar


class WorksessionError(Exception):
    """Base of every error a client may be told about. ``code`` is part of the contract."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Unexpected server error"

    def __init__(self, message: str | None = None, *, details: list[Any] | None = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)


class InvalidJson(WorksessionError):
    code = "invalid_json"
    http_status = 400
    default_message = "Frame is not a JSON object"


class UnknownType(WorksessionError):
    code = "unknown_type"
    http_status = 400
    default_message = "Unknown message type"


class ValidationFailed(WorksessionError):
    code = "validation_error"
    http_status = 422
    default_message = "Invalid message"


class Forbidden(WorksessionError):
    code = "forbidden"
    http_status = 403
    default_message = "Not allowed"


class SessionNotFound(WorksessionError):
    code = "session_not_found"
    http_status = 404
    default_message = "Session not found"


class InvalidState(WorksessionError):
    code = "invalid_state"
    http_status = 409
    default_message = "The session does not allow this in its current state"


class WorkNotFound(WorksessionError):
    code = "work_not_found"
    http_status = 404
    default_message = "Work order not found"


class WorkUnavailable(WorksessionError):
    code = "work_unavailable"
    http_status = 409
    default_message = "The work order is no longer pending"


class ProviderBusy(WorksessionError):
    code = "provider_busy"
    http_status = 409
    default_message = "The provider already has a live session"


class SeekerBusy(WorksessionError):
    code = "seeker_busy"
    http_status = 409
    default_message = "The seeker already has a live session"


class NoProviderAvailable(WorksessionError):
    code = "no_provider_available"
    http_status = 409
    default_message = "None of the providers is active and free; nothing was stored"


class MessageNotFound(WorksessionError):
    code = "message_not_found"
    http_status = 404
    default_message = "Message not found"


class RateLimited(WorksessionError):
    """A frame dropped by the rate limit; the error frame says when to try again."""

    code = "rate_limited"
    http_status = 429
    default_message = "Too many frames; this one was dropped"

    def __init__(self, message: str | None = None, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
