from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from worksession.geo import (
    EARTH_RADIUS_M,
    FUTURE_FIX_TOLERANCE,
    Fix,
    FixVerdict,
    InvalidCoordinates,
    LastFix,
    Position,
    distance_between,
    format_distance,
    haversine_m,
    judge_fix,
    moved_enough,
    needs_distance_update,
    recorded_at_too_far_in_future,
    validate_coordinates,
)

MG_ROAD = Position(12.9756, 77.6066)
KORAMANGALA = Position(12.9352, 77.6245)
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
MAX_ACCURACY_M = 100.0
MAX_SPEED_KMH = 200.0


def _metres_north(position: Position, metres: float) -> Position:
    return Position(position.lat + math.degrees(metres / EARTH_RADIUS_M), position.lng)


# --- haversine --------------------------------------------------------------------------


def test_earth_radius_is_the_contract_value() -> None:
    assert EARTH_RADIUS_M == 6_371_000.0


def test_mg_road_to_koramangala_is_about_4_9_km() -> None:
    distance = haversine_m(MG_ROAD.lat, MG_ROAD.lng, KORAMANGALA.lat, KORAMANGALA.lng)
    assert distance == pytest.approx(4893.16, abs=0.5)
    assert format_distance(distance) == "4.9 km away"


def test_one_degree_of_latitude() -> None:
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(111_194.93, abs=0.01)
    assert haversine_m(45.0, 10.0, 46.0, 10.0) == pytest.approx(111_194.93, abs=0.01)


@pytest.mark.parametrize(
    ("lat1", "lng1", "lat2", "lng2"),
    [
        (0.0, 0.0, 0.0, 180.0),
        (12.9716, 77.5946, -12.9716, -102.4054),
        (90.0, 0.0, -90.0, 0.0),
    ],
)
def test_antipodes_are_half_the_circumference(
    lat1: float, lng1: float, lat2: float, lng2: float
) -> None:
    assert haversine_m(lat1, lng1, lat2, lng2) == pytest.approx(math.pi * EARTH_RADIUS_M)


def test_zero_distance() -> None:
    assert haversine_m(12.9716, 77.5946, 12.9716, 77.5946) == 0.0


def test_symmetric_and_across_the_antimeridian() -> None:
    there = haversine_m(MG_ROAD.lat, MG_ROAD.lng, KORAMANGALA.lat, KORAMANGALA.lng)
    back = haversine_m(KORAMANGALA.lat, KORAMANGALA.lng, MG_ROAD.lat, MG_ROAD.lng)
    assert there == pytest.approx(back)
    # 0.2 degrees of longitude at the equator, not 359.8.
    assert haversine_m(0.0, 179.9, 0.0, -179.9) == pytest.approx(22_239.0, abs=1.0)


def test_distance_between_positions() -> None:
    assert distance_between(MG_ROAD, KORAMANGALA) == haversine_m(
        MG_ROAD.lat, MG_ROAD.lng, KORAMANGALA.lat, KORAMANGALA.lng
    )


# --- formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meters", "text"),
    [
        (0, "0 meters away"),
        (0.0, "0 meters away"),
        (-0.0, "0 meters away"),
        (0.4, "0 meters away"),
        (0.5, "1 meters away"),
        (2.5, "3 meters away"),
        (349.6, "350 meters away"),
        (350, "350 meters away"),
        (999.4, "999 meters away"),
        (999.49, "999 meters away"),
        (999.5, "1.0 km away"),
        (1000, "1.0 km away"),
        (1049.9, "1.0 km away"),
        (1050, "1.1 km away"),
        (1234.5, "1.2 km away"),
        (1250, "1.3 km away"),
        (12345, "12.3 km away"),
        (20_015_086.8, "20015.1 km away"),
    ],
)
def test_format_distance(meters: float, text: str) -> None:
    assert format_distance(meters) == text


def test_format_distance_rounds_half_up_where_round_would_not() -> None:
    # The reason for Decimal: the built-in disagrees on exactly these values.
    assert round(2.5) == 2
    assert round(1.25, 1) == 1.2
    assert format_distance(2.5) == "3 meters away"
    assert format_distance(1250.0) == "1.3 km away"


@pytest.mark.parametrize("meters", [-1.0, -0.001, math.nan, math.inf, -math.inf])
def test_format_distance_refuses_nonsense(meters: float) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        format_distance(meters)


# --- movement ---------------------------------------------------------------------------


def test_moved_enough_without_a_previous_position() -> None:
    assert moved_enough(None, MG_ROAD, 50.0)


def test_moved_enough_threshold_is_inclusive() -> None:
    just_under = _metres_north(MG_ROAD, 49.9)
    just_over = _metres_north(MG_ROAD, 50.1)
    assert not moved_enough(MG_ROAD, MG_ROAD, 50.0)
    assert not moved_enough(MG_ROAD, just_under, 50.0)
    assert moved_enough(MG_ROAD, just_over, 50.0)
    exact = distance_between(MG_ROAD, just_over)
    assert moved_enough(MG_ROAD, just_over, exact)
    assert not moved_enough(MG_ROAD, just_over, math.nextafter(exact, math.inf))


def test_needs_distance_update_requires_both_positions() -> None:
    for seeker, provider in [(None, None), (MG_ROAD, None), (None, KORAMANGALA)]:
        assert not needs_distance_update(
            seeker=seeker,
            provider=provider,
            last_seeker=None,
            last_provider=None,
            threshold_m=50.0,
        )


def test_needs_distance_update_when_none_sent_yet() -> None:
    assert needs_distance_update(
        seeker=MG_ROAD,
        provider=KORAMANGALA,
        last_seeker=None,
        last_provider=None,
        threshold_m=50.0,
    )


@pytest.mark.parametrize(
    ("seeker_moved_m", "provider_moved_m", "expected"),
    [
        (0.0, 0.0, False),
        (49.0, 49.0, False),
        (51.0, 0.0, True),
        (0.0, 51.0, True),
        (51.0, 51.0, True),
    ],
)
def test_needs_distance_update_after_movement(
    seeker_moved_m: float, provider_moved_m: float, expected: bool
) -> None:
    assert (
        needs_distance_update(
            seeker=_metres_north(MG_ROAD, seeker_moved_m),
            provider=_metres_north(KORAMANGALA, provider_moved_m),
            last_seeker=MG_ROAD,
            last_provider=KORAMANGALA,
            threshold_m=50.0,
        )
        is expected
    )


def test_needs_distance_update_compares_with_positions_last_used_not_latest() -> None:
    # Two 30 m steps are each below the threshold but together exceed it.
    two_steps = _metres_north(MG_ROAD, 60.0)
    assert needs_distance_update(
        seeker=two_steps,
        provider=KORAMANGALA,
        last_seeker=MG_ROAD,
        last_provider=KORAMANGALA,
        threshold_m=50.0,
    )


# --- coordinates and clocks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lng"),
    [(0.0, 0.0), (90.0, 180.0), (-90.0, -180.0), (12.9716, 77.5946), (0, 0)],
)
def test_validate_coordinates_accepts(lat: float, lng: float) -> None:
    validate_coordinates(lat, lng)


@pytest.mark.parametrize(
    ("lat", "lng", "field"),
    [
        (90.0001, 0.0, "lat"),
        (-90.0001, 0.0, "lat"),
        (0.0, 180.0001, "lng"),
        (0.0, -180.0001, "lng"),
        (math.nan, 0.0, "lat"),
        (0.0, math.nan, "lng"),
        (math.inf, 0.0, "lat"),
        (0.0, -math.inf, "lng"),
        (True, 0.0, "lat"),
        (0.0, False, "lng"),
        ("12.9", 0.0, "lat"),
        (0.0, None, "lng"),
    ],
)
def test_validate_coordinates_refuses(lat: object, lng: object, field: str) -> None:
    with pytest.raises(InvalidCoordinates, match=field):
        validate_coordinates(lat, lng)  # type: ignore[arg-type]


def test_invalid_coordinates_is_a_value_error() -> None:
    assert issubclass(InvalidCoordinates, ValueError)


def test_future_tolerance_is_sixty_seconds() -> None:
    assert timedelta(seconds=60) == FUTURE_FIX_TOLERANCE


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(hours=-1), False),
        (timedelta(0), False),
        (timedelta(seconds=60), False),
        (timedelta(seconds=60, microseconds=1), True),
        (timedelta(minutes=5), True),
    ],
)
def test_recorded_at_too_far_in_future(offset: timedelta, expected: bool) -> None:
    assert recorded_at_too_far_in_future(T0 + offset, T0) is expected


def test_recorded_at_in_another_zone_compares_as_instants() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    same_instant = T0.astimezone(ist)
    assert not recorded_at_too_far_in_future(same_instant, T0)


def test_recorded_at_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        recorded_at_too_far_in_future(T0.replace(tzinfo=None), T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        recorded_at_too_far_in_future(T0, T0.replace(tzinfo=None))


# --- fix filter -------------------------------------------------------------------------


def _judge(fix: Fix, last: LastFix | None) -> FixVerdict:
    return judge_fix(fix, last, max_accuracy_m=MAX_ACCURACY_M, max_speed_kmh=MAX_SPEED_KMH)


def _fix(
    position: Position = MG_ROAD,
    *,
    accuracy_m: float | None = 10.0,
    recorded_at: datetime | None = T0,
) -> Fix:
    return Fix(position.lat, position.lng, accuracy_m, recorded_at)


def _last(position: Position = MG_ROAD, *, recorded_at: datetime | None = T0) -> LastFix:
    return LastFix(position.lat, position.lng, recorded_at)


def test_fix_verdict_values() -> None:
    assert [v.value for v in FixVerdict] == ["accept", "inaccurate", "out_of_order", "too_fast"]


def test_first_fix_is_accepted() -> None:
    assert _judge(_fix(), None) is FixVerdict.ACCEPT
    assert _judge(_fix(accuracy_m=None, recorded_at=None), None) is FixVerdict.ACCEPT


@pytest.mark.parametrize(
    ("accuracy_m", "expected"),
    [
        (None, FixVerdict.ACCEPT),
        (0.0, FixVerdict.ACCEPT),
        (MAX_ACCURACY_M, FixVerdict.ACCEPT),
        (math.nextafter(MAX_ACCURACY_M, math.inf), FixVerdict.INACCURATE),
        (100.5, FixVerdict.INACCURATE),
        (math.inf, FixVerdict.INACCURATE),
        (math.nan, FixVerdict.INACCURATE),
    ],
)
def test_accuracy_limit(accuracy_m: float | None, expected: FixVerdict) -> None:
    assert _judge(_fix(accuracy_m=accuracy_m), None) is expected
    assert _judge(_fix(accuracy_m=accuracy_m), _last()) is expected


def test_inaccurate_wins_over_other_verdicts() -> None:
    fix = _fix(KORAMANGALA, accuracy_m=500.0, recorded_at=T0 - timedelta(seconds=1))
    assert _judge(fix, _last()) is FixVerdict.INACCURATE


def test_older_fix_is_out_of_order() -> None:
    fix = _fix(recorded_at=T0 - timedelta(microseconds=1))
    assert _judge(fix, _last()) is FixVerdict.OUT_OF_ORDER


def test_out_of_order_wins_over_speed() -> None:
    fix = _fix(KORAMANGALA, recorded_at=T0 - timedelta(seconds=1))
    assert _judge(fix, _last()) is FixVerdict.OUT_OF_ORDER


@pytest.mark.parametrize(
    ("fix_time", "last_time"),
    [(None, T0), (T0, None), (None, None)],
)
def test_without_both_times_order_and_speed_are_not_checked(
    fix_time: datetime | None, last_time: datetime | None
) -> None:
    far_jump = _fix(KORAMANGALA, recorded_at=fix_time)
    assert _judge(far_jump, _last(recorded_at=last_time)) is FixVerdict.ACCEPT


def test_plausible_movement_is_accepted() -> None:
    # ~4.9 km in 10 minutes is ~29 km/h: a scooter in traffic.
    fix = _fix(KORAMANGALA, recorded_at=T0 + timedelta(minutes=10))
    assert _judge(fix, _last()) is FixVerdict.ACCEPT


def test_teleport_is_too_fast() -> None:
    # ~4.9 km in 10 seconds is ~1760 km/h.
    fix = _fix(KORAMANGALA, recorded_at=T0 + timedelta(seconds=10))
    assert _judge(fix, _last()) is FixVerdict.TOO_FAST


def test_speed_exactly_at_limit_is_accepted_and_just_above_is_not() -> None:
    elapsed = timedelta(seconds=90)
    fix = _fix(KORAMANGALA, recorded_at=T0 + elapsed)
    # Derive the limit the same way the filter derives the speed so equality is exact.
    speed_kmh = distance_between(MG_ROAD, KORAMANGALA) / elapsed.total_seconds() * 3.6
    at_limit = judge_fix(fix, _last(), max_accuracy_m=MAX_ACCURACY_M, max_speed_kmh=speed_kmh)
    below_limit = judge_fix(
        fix,
        _last(),
        max_accuracy_m=MAX_ACCURACY_M,
        max_speed_kmh=math.nextafter(speed_kmh, 0.0),
    )
    assert at_limit is FixVerdict.ACCEPT
    assert below_limit is FixVerdict.TOO_FAST


def test_speed_limit_with_round_numbers() -> None:
    # 500 m in 10 s is 180 km/h, in 8 s 225 km/h.
    north = _metres_north(MG_ROAD, 500.0)
    assert _judge(_fix(north, recorded_at=T0 + timedelta(seconds=10)), _last()) is (
        FixVerdict.ACCEPT
    )
    assert _judge(_fix(north, recorded_at=T0 + timedelta(seconds=8)), _last()) is (
        FixVerdict.TOO_FAST
    )


@pytest.mark.parametrize(
    ("moved_m", "expected"),
    [
        (0.0, FixVerdict.ACCEPT),
        (0.9, FixVerdict.ACCEPT),
        (1.1, FixVerdict.TOO_FAST),
        (100.0, FixVerdict.TOO_FAST),
    ],
)
def test_same_timestamp(moved_m: float, expected: FixVerdict) -> None:
    fix = _fix(_metres_north(MG_ROAD, moved_m), recorded_at=T0)
    assert _judge(fix, _last()) is expected


def test_tiny_time_delta_with_real_movement_is_too_fast() -> None:
    fix = _fix(_metres_north(MG_ROAD, 5.0), recorded_at=T0 + timedelta(microseconds=1))
    assert _judge(fix, _last()) is FixVerdict.TOO_FAST


def test_standing_still_is_accepted_whatever_the_gap() -> None:
    for gap in (timedelta(microseconds=1), timedelta(seconds=1), timedelta(days=2)):
        assert _judge(_fix(recorded_at=T0 + gap), _last()) is FixVerdict.ACCEPT


def test_times_in_different_zones_compare_as_instants() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    later_in_ist = (T0 + timedelta(minutes=10)).astimezone(ist)
    assert _judge(_fix(KORAMANGALA, recorded_at=later_in_ist), _last()) is FixVerdict.ACCEPT


def test_naive_times_are_refused() -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        _judge(_fix(recorded_at=naive), _last())
    with pytest.raises(ValueError, match="timezone-aware"):
        _judge(_fix(), _last(recorded_at=naive))


def test_value_objects_are_frozen() -> None:
    with pytest.raises(AttributeError):
        MG_ROAD.lat = 0.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        _fix().lat = 0.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        _last().lat = 0.0  # type: ignore[misc]
