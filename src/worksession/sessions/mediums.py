"""Communication mediums: which channels a participant offers and the Indian mobile behind
each, and the two commands that share them.

Error messages here never contain the number that was sent: they end up in logs and in
``validation_error`` frames, and a phone number is exactly what the service keeps private.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from worksession.pipeline.commands import Actor, SelectMediums, ShareMediums
from worksession.pipeline.decision import ANSWERED_BY_EVENT, Decision, PutSession
from worksession.pipeline.world import World
from worksession.sessions.access import changed, live_session_of, logged
from worksession.sessions.states import SessionState

MEDIUM_KINDS: tuple[str, ...] = ("telegram", "whatsapp", "call")

# `[0-9]` rather than `\d`: `\d` (and str.isdigit) also match Devanagari, Arabic-Indic and
# fullwidth digits, which would be stored as-is and never dial.
_BARE_MOBILE = re.compile(r"[6-9][0-9]{9}")

_PHONE_MSG = (
    "must be an Indian mobile number: 10 digits starting with 6-9, "
    "optionally prefixed by +91, 91 or 0"
)


class InvalidMediums(ValueError):
    """A mediums object that breaks PROTOCOL 5, with pydantic-style ``details``."""

    def __init__(self, details: list[dict[str, Any]]) -> None:
        self.details = details
        super().__init__(details[0]["msg"] if details else "invalid mediums")


def _invalid(loc: list[str], msg: str) -> InvalidMediums:
    return InvalidMediums([{"loc": loc, "msg": msg}])


def normalise_phone(raw: str) -> str:
    """Return the bare 10-digit Indian mobile in ``raw`` or raise :class:`InvalidMediums`.

    Spaces and hyphens are dropped, then at most one prefix: ``+91``; ``91`` when 12 digits
    remain; ``0`` when 11 remain. The length conditions keep a genuine number that starts
    with 91 (``9198765432``) from losing its first two digits.
    """
    if not isinstance(raw, str):
        raise _invalid(["mediums"], "must be a string")
    compact = raw.replace(" ", "").replace("-", "")
    if compact.startswith("+91"):
        compact = compact[3:]
    elif compact.startswith("91") and len(compact) == 12:
        compact = compact[2:]
    elif compact.startswith("0") and len(compact) == 11:
        compact = compact[1:]
    if _BARE_MOBILE.fullmatch(compact) is None:
        raise _invalid(["mediums"], _PHONE_MSG)
    return compact


def normalise_mediums(value: object) -> dict[str, str]:
    """Validate a mediums object and return it with bare numbers, keys in MEDIUM_KINDS order.

    Every problem is reported at once in ``InvalidMediums.details`` so a client can fix its
    form in one round trip.
    """
    if not isinstance(value, dict):
        raise _invalid(["mediums"], "must be an object")
    details: list[dict[str, Any]] = []
    for key in value:
        if not isinstance(key, str) or key not in MEDIUM_KINDS:
            # A non-string key cannot come from JSON; it is reported without echoing it.
            loc = ["mediums", key] if isinstance(key, str) else ["mediums"]
            details.append({"loc": loc, "msg": f"unknown medium; use {', '.join(MEDIUM_KINDS)}"})
    if len(value) > len(MEDIUM_KINDS):
        details.append({"loc": ["mediums"], "msg": f"at most {len(MEDIUM_KINDS)} mediums"})
    normalised: dict[str, str] = {}
    for kind in MEDIUM_KINDS:
        if kind not in value:
            continue
        raw = value[kind]
        if not isinstance(raw, str):
            details.append({"loc": ["mediums", kind], "msg": "must be a string"})
            continue
        try:
            normalised[kind] = normalise_phone(raw)
        except InvalidMediums:
            details.append({"loc": ["mediums", kind], "msg": _PHONE_MSG})
    if details:
        raise InvalidMediums(details)
    return normalised


# --- deciding ----------------------------------------------------------------------------


def decide_select(world: World, command: SelectMediums, now: datetime) -> Decision:
    """The seeker's mediums (already normalised); the first selection, even an empty one,
    moves the session ``waiting -> active``. A later one replaces the earlier."""
    session = live_session_of(world.session(command.session_id), Actor(command.seeker_id, "seeker"))
    active = SessionState.ACTIVE.value
    session = changed(
        session,
        now,
        seeker_selected_mediums=dict(command.mediums),
        mediums_shared_at=now,
        connection_state=active,
    )
    data = {"mediums": dict(command.mediums), "connection_state": active}
    session, events = logged(session, now, [("mediums_selected", data)])
    return Decision(out=events, writes=(PutSession(session),), reply=ANSWERED_BY_EVENT)


def decide_share(world: World, command: ShareMediums, now: datetime) -> Decision:
    """The provider's mediums (already normalised), replacing any earlier share; the
    session's state does not change."""
    session = live_session_of(
        world.session(command.session_id), Actor(command.provider_id, "provider")
    )
    session = changed(session, now, provider_selected_mediums=dict(command.mediums))
    session, events = logged(session, now, [("mediums_shared", {"mediums": dict(command.mediums)})])
    return Decision(out=events, writes=(PutSession(session),), reply=ANSWERED_BY_EVENT)
