"""Communication mediums: which channels a participant offers and the Indian mobile behind each.

Error messages here never contain the number that was sent: they end up in logs and in
``validation_error`` frames, and a phone number is exactly what the service keeps private.
"""

from __future__ import annotations

import re
from typing import Any

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
