"""Distances between participants, how they are shown, and which location fixes to trust.

Pure functions only: the gateway and the distance ticker feed them positions and settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

# The contract fixes the radius so that every server (and the clients' own estimates)
# agree on the same number to the metre.
EARTH_RADIUS_M = 6_371_000.0

# Below this the text switches from metres to kilometres. It is 999.5 rather than 1000 so
# that a distance never reads "1000 meters away": anything that rounds to 1000 m is 1.0 km.
KM_FORMAT_FROM_M = 999.5

# A device reporting the same timestamp twice may still wobble by GPS noise; only a jump
# larger than this with no time elapsed counts as impossible speed.
SAME_INSTANT_JITTER_M = 1.0

# Devices and the server disagree on the time by a few seconds; a fix from further ahead
# than this is a broken clock or a forged value, not drift.
FUTURE_FIX_TOLERANCE = timedelta(seconds=60)

_METRES = Decimal(1)
_TENTH = Decimal("0.1")


class InvalidCoordinates(ValueError):
    """A latitude or longitude that is not a finite number in range."""


@dataclass(frozen=True, slots=True)
class Position:
    lat: float
    lng: float


@dataclass(frozen=True, slots=True)
class Fix:
    """A location fix as a participant reported it."""

    lat: float
    lng: float
    accuracy_m: float | None
    recorded_at: datetime | None


@dataclass(frozen=True, slots=True)
class LastFix:
    """The participant's last accepted fix, the reference a new one is judged against."""

    lat: float
    lng: float
    recorded_at: datetime | None


class FixVerdict(StrEnum):
    ACCEPT = "accept"
    INACCURATE = "inaccurate"
    OUT_OF_ORDER = "out_of_order"
    TOO_FAST = "too_fast"


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two points given in degrees."""
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    d_phi = math.radians(lat2 - lat1)
    d_lambda = math.radians(lng2 - lng1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    # Rounding can push `a` a hair past 1 for near-antipodal points, which would make
    # sqrt/asin fail; the true value is never outside [0, 1].
    a = min(1.0, max(0.0, a))
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def distance_between(a: Position, b: Position) -> float:
    """Haversine distance in metres between two positions."""
    return haversine_m(a.lat, a.lng, b.lat, b.lng)


def format_distance(meters: float) -> str:
    """Human text for a distance: ``"350 meters away"`` below 999.5 m, else ``"1.2 km away"``.

    Rounding is half up on the decimal reading of the float (``Decimal(repr(x))``), not
    ``round()``: the built-in rounds half to even and works on the binary value, so
    ``round(2.5)`` is 2 and ``round(1.25, 1)`` is 1.2, while people (and the contract's
    examples) expect 3 and 1.3.
    """
    if not math.isfinite(meters) or meters < 0:
        raise ValueError("distance must be a finite, non-negative number of metres")
    # abs() folds -0.0 into 0.0, which would otherwise print as "-0 meters away".
    exact = Decimal(repr(abs(meters)))
    if meters < KM_FORMAT_FROM_M:
        whole = exact.quantize(_METRES, rounding=ROUND_HALF_UP)
        return f"{whole} meters away"
    km = (exact / 1000).quantize(_TENTH, rounding=ROUND_HALF_UP)
    return f"{km} km away"


def moved_enough(previous: Position | None, current: Position, threshold_m: float) -> bool:
    """True when there is no previous position or ``current`` is ``threshold_m`` or more away."""
    if previous is None:
        return True
    return distance_between(previous, current) >= threshold_m


def needs_distance_update(
    *,
    seeker: Position | None,
    provider: Position | None,
    last_seeker: Position | None,
    last_provider: Position | None,
    threshold_m: float,
) -> bool:
    """Whether a movement-triggered ``distance_update`` is due (PROTOCOL 5).

    ``last_seeker``/``last_provider`` are the positions the previous update was computed
    from; either being ``None`` means no update has been sent yet.
    """
    if seeker is None or provider is None:
        return False
    return moved_enough(last_seeker, seeker, threshold_m) or moved_enough(
        last_provider, provider, threshold_m
    )


def validate_coordinates(lat: float, lng: float) -> None:
    """Raise :class:`InvalidCoordinates` unless lat is in [-90, 90] and lng in [-180, 180]."""
    # bool is an int subclass; True as a latitude is a client bug, not 1 degree.
    if isinstance(lat, bool) or not isinstance(lat, int | float):
        raise InvalidCoordinates("lat must be a number")
    if isinstance(lng, bool) or not isinstance(lng, int | float):
        raise InvalidCoordinates("lng must be a number")
    if not math.isfinite(lat) or not -90.0 <= lat <= 90.0:
        raise InvalidCoordinates("lat must be a finite number between -90 and 90")
    if not math.isfinite(lng) or not -180.0 <= lng <= 180.0:
        raise InvalidCoordinates("lng must be a finite number between -180 and 180")


def _require_aware(moment: datetime, name: str) -> None:
    # Mixing naive and aware values raises TypeError deep inside a comparison; the project
    # keeps every stored time aware UTC, so a naive one here is a bug worth naming.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def recorded_at_too_far_in_future(recorded_at: datetime, now: datetime) -> bool:
    """True when ``recorded_at`` is more than :data:`FUTURE_FIX_TOLERANCE` ahead of ``now``."""
    _require_aware(recorded_at, "recorded_at")
    _require_aware(now, "now")
    return recorded_at - now > FUTURE_FIX_TOLERANCE


def judge_fix(
    fix: Fix,
    last: LastFix | None,
    *,
    max_accuracy_m: float,
    max_speed_kmh: float,
) -> FixVerdict:
    """Decide whether a fix is kept or silently dropped as noise (PROTOCOL 5 "Noisy fixes").

    Checks, in order: accuracy worse than ``max_accuracy_m`` (equal is fine); a
    ``recorded_at`` strictly before the last accepted one; and, when both carry
    ``recorded_at``, an implied speed above ``max_speed_kmh`` (equal is fine). Datetimes
    must be timezone-aware.
    """
    # NaN compares false with everything and would slip past `>`; an accuracy the device
    # cannot state is no better than a bad one.
    if fix.accuracy_m is not None and (
        math.isnan(fix.accuracy_m) or fix.accuracy_m > max_accuracy_m
    ):
        return FixVerdict.INACCURATE
    if last is None or fix.recorded_at is None or last.recorded_at is None:
        # Without both times there is no ordering or speed to check, so the fix stands.
        return FixVerdict.ACCEPT
    _require_aware(fix.recorded_at, "fix.recorded_at")
    _require_aware(last.recorded_at, "last.recorded_at")
    if fix.recorded_at < last.recorded_at:
        return FixVerdict.OUT_OF_ORDER
    distance_m = haversine_m(last.lat, last.lng, fix.lat, fix.lng)
    elapsed_s = (fix.recorded_at - last.recorded_at).total_seconds()
    if elapsed_s <= 0:
        return FixVerdict.TOO_FAST if distance_m > SAME_INSTANT_JITTER_M else FixVerdict.ACCEPT
    implied_kmh = distance_m / elapsed_s * 3.6
    return FixVerdict.TOO_FAST if implied_kmh > max_speed_kmh else FixVerdict.ACCEPT
