"""The edges of the rules that a mutation run over the deciding functions found unpinned:
"300 m or less" and "50 m or less" at exactly the threshold, distances sent to 0.1 m, a
session's history replayable until exactly ``retention`` after its end, offer expiry going
on past an order settled earlier in the batch, the seeker's location in a work request, and
a fix under a second after the last judged by its speed, not as a same-instant jump.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.unit.test_decide import (
    AS_PROVIDER,
    BASE_LNG,
    P1,
    POLICY,
    RULES,
    S1,
    SEEKER,
    SID,
    at,
    distance_of,
    fix_at,
    kinds,
    north,
    offer_row,
    order_row,
    session_row,
    step,
)
from worksession import geo
from worksession.errors import InvalidState
from worksession.pipeline import commands as c
from worksession.pipeline.decision import Notice, PutOrder
from worksession.pipeline.world import World
from worksession.protocol import outbound as out
from worksession.sessions.lifecycle import check_replay_allowed

RETENTION = timedelta(hours=24)


def both_placed(seeker_m: float, provider_m: float) -> World:
    """Both sides known, no distance sent yet, neither nearby nor arrived announced."""
    row = session_row(
        seeker_latitude=north(seeker_m),
        seeker_longitude=BASE_LNG,
        provider_latitude=north(provider_m),
        provider_longitude=BASE_LNG,
    )
    distance = row.distance_m
    assert distance is not None
    # Thresholds equal to the very distance the rule will compute, to the last bit.
    rules = replace(RULES, nearby_m=distance, arrived_m=distance)
    return World.of(replace(POLICY, location=rules), sessions=[row])


def test_nearby_and_arrived_fire_at_exactly_their_threshold() -> None:
    world = both_placed(0, 123.456)
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix_at(123.456)), at(1))
    assert [kind for _, kind in kinds(decision)] == ["provider_nearby", "provider_arrived"]


@pytest.mark.parametrize(("metres", "announced"), [(1234.56, []), (290.04, ["provider_nearby"])])
def test_distances_are_sent_to_a_tenth_of_a_metre(metres: float, announced: list[str]) -> None:
    world = World.of(
        POLICY, sessions=[session_row(seeker_latitude=north(0), seeker_longitude=BASE_LNG)]
    )
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix_at(metres)), at(1))
    expected = round(metres, 1)
    assert distance_of(decision) == expected
    assert [kind for _, kind in kinds(decision)] == announced
    assert all(event.data["distance_meters"] == expected for event in decision.events)


@pytest.mark.parametrize(
    ("live", "ended_at", "allowed"),
    [
        (True, None, True),
        (False, at(0) - RETENTION + timedelta(microseconds=1), True),
        (False, at(0) - RETENTION, False),  # exactly the retention: swept, so gone
        (False, None, False),  # ended with no end time: nothing says it is recent
    ],
)
def test_replay_until_the_retention_has_passed(
    live: bool, ended_at: datetime | None, allowed: bool
) -> None:
    def check() -> None:
        check_replay_allowed(live=live, ended_at=ended_at, retention=RETENTION, now=at(0))

    if allowed:
        check()
    else:
        with pytest.raises(InvalidState):
            check()


def test_expiry_goes_on_past_an_order_settled_earlier_in_the_batch() -> None:
    world = World.of(
        POLICY,
        orders=[order_row(1, expires_at=at(5)), order_row(2, expires_at=at(5))],
        offers=[offer_row(P1, 1), offer_row(P1, 2)],
    )
    world.due_orders = (1, 2)
    step(world, c.AcceptWork(1, P1, session_id=S1), at(1))  # order 1 is settled first

    decision = step(world, c.ExpireOffers(), at(6))

    assert [w.row.id for w in decision.writes if isinstance(w, PutOrder)] == [2]
    assert (world.orders[1].status, world.orders[2].status) == ("accepted", "expired")


@pytest.mark.parametrize(
    ("location", "expected"),
    [((12.9, 77.6), {"lat": 12.9, "lng": 77.6}), (None, None)],
    ids=["located", "unlocated"],
)
def test_a_work_request_carries_the_seekers_location_when_known(
    location: tuple[float, float] | None, expected: dict[str, float] | None
) -> None:
    world = World.of(POLICY)
    command = c.CreateWorkOrder(SEEKER, (P1,), {}, location, work_id=9)
    (notice,) = step(world, command, at(0)).out
    assert isinstance(notice, Notice)
    assert isinstance(notice.frame, out.WorkRequest)
    assert notice.frame.seeker_location == expected


@pytest.mark.parametrize(
    ("moved_m", "expected"),
    [(20.0, geo.FixVerdict.ACCEPT), (30.0, geo.FixVerdict.TOO_FAST)],  # 144 and 216 km/h
)
def test_a_fix_half_a_second_later_is_judged_by_its_speed(
    moved_m: float, expected: geo.FixVerdict
) -> None:
    last = geo.LastFix(north(0), BASE_LNG, at(0))
    fix = geo.Fix(north(moved_m), BASE_LNG, 5.0, at(0.5))
    assert geo.judge_fix(fix, last, max_accuracy_m=100.0, max_speed_kmh=200.0) is expected
