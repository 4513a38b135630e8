"""Opaque pagination cursors: a token a client hands back unchanged to get the next page.

Format: the URL-safe base64 (no padding) of a compact JSON array whose first item is the
cursor's *kind*, a short tag naming the listing and the format's version (``"m1"`` for chat
history, ``"s1"`` for the session lookup), followed by the keyset values of the last item
of the page, all non-negative integers. The tag makes a cursor of one listing useless to
another, and lets a later format (``"m2"``) be told apart from, and read alongside, the old
one. Integers keep it exact: a timestamp travels as microseconds since the epoch, so it
compares equal to the stored value on every backend, which a formatted string might not.

Clients must treat a cursor as opaque. It is not signed: a forged one only moves the
caller's own page boundary, because every listing still applies its access checks. A
forged one must still never reach the database with a value its column cannot hold (on
PostgreSQL an int4 compared with 2**31 is an error, a 500 rather than the contract's 422),
so each listing states the largest value of each position when it decodes.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Final

MAX_CURSOR_CHARS: Final = 200
"""Far above any cursor issued here; a longer one is refused before it is decoded."""

_MAX_VALUE: Final = 2**63 - 1

MAX_INT4: Final = 2**31 - 1
"""The largest PostgreSQL ``integer``: the type of every row id a cursor carries."""


class InvalidCursor(ValueError):
    """The text is not a cursor this service issued for this listing."""


def encode(kind: str, *values: int) -> str:
    """The cursor of ``kind`` carrying ``values``."""
    if any(isinstance(v, bool) or not 0 <= v <= _MAX_VALUE for v in values):
        raise ValueError("cursor values are non-negative 64-bit integers")
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(
    kind: str, cursor: str, *, arity: int, maxima: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """The ``arity`` integers of a cursor of ``kind``; ``InvalidCursor`` for anything else.

    ``maxima`` bounds each value (by default a signed 64-bit integer); a larger one was not
    issued by this service, whatever it decodes to.
    """
    limits = maxima if maxima is not None else (_MAX_VALUE,) * arity
    if len(limits) != arity:
        raise ValueError("one maximum per cursor value")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidCursor("the cursor is too long")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        parsed = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):  # bad base64, not UTF-8, not JSON
        raise InvalidCursor("the cursor is not one this API issued") from None
    if (
        not isinstance(parsed, list)
        or len(parsed) != arity + 1
        or parsed[0] != kind
        or not all(_is_value(v, limit) for v, limit in zip(parsed[1:], limits, strict=True))
    ):
        raise InvalidCursor("the cursor is not one this API issued for this listing")
    return tuple(parsed[1:])


def _is_value(value: object, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
