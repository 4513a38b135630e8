"""Every default PROTOCOL.md names, pinned in one place: the ``Settings`` default, and where
it is cheap, the rule running on a policy built from the defaults.

A default the contract states is part of the wire contract: clients are written against
"50 m", "20 a second with bursts of 40". Tests elsewhere mostly pass explicit values (a
1 s typing timeout, 30 m and 60 m moves), so a changed default went unseen there.

What needs a server is pinned next to the rule it exercises, with a window tight enough to
tell the default from its double: the typing stop (``tests/realtime/test_chat.py``), the
close at the token's ``exp`` (``tests/realtime/test_auth_refresh.py``), the per-socket burst
and the 16 KiB frame limit (``tests/realtime/test_bad_input.py``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.test_decide import (
    AS_PROVIDER,
    BASE_LNG,
    SEEKER,
    SID,
    at,
    distance_of,
    fix_at,
    kinds,
    north,
    session_row,
    step,
)
from worksession.config import Settings
from worksession.decide import decide
from worksession.kit.broker import MemoryBroker
from worksession.kit.db import Database
from worksession.kit.leader import SoleLeader
from worksession.lifespan import build_pipeline
from worksession.pipeline import commands as c
from worksession.pipeline.decision import ExpireChat, PutOrder, Sweep
from worksession.pipeline.rows import Policy, SessionRow
from worksession.pipeline.world import World
from worksession.realtime.ratelimit import TokenBucket
from worksession.scheduler import Jobs, build_scheduler

ROOT = Path(__file__).resolve().parents[2]

CONTRACT = {
    "distance_interval_s": 30.0,  # "every 30 seconds ... a fresh distance_update"
    "move_threshold_m": 50.0,  # "moved 50 m or more since the last one sent"
    "nearby_m": 300.0,  # "falls to 300 m or less": provider_nearby
    "arrived_m": 50.0,  # "to 50 m or less": provider_arrived
    "max_accuracy_m": 100.0,  # "accuracy above the configured limit (default 100 m)"
    "max_speed_kmh": 200.0,  # "a speed above the configured limit (default 200 km/h)"
    "typing_timeout_s": 6.0,  # "not repeated within 6 seconds"
    "offer_ttl_s": 120.0,  # "not answered within the configured time (default 120 s)"
    "message_retention_hours": 24.0,  # "24 hours after the session ended"
    "abandon_after_s": 43200.0,  # "WORKSESSION_ABANDON_AFTER_S (default 43200, 12 hours)"
    "max_frame_bytes": 16 * 1024,  # "default 16 KiB" -> 1009
    "rate_limit_per_s": 20.0,  # "default 20 a second with bursts of 40, per connection"
    "rate_limit_burst": 40,
}


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings of a process started with no configuration at all."""
    for name in list(os.environ):
        if name.startswith("WORKSESSION_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT / "tests")  # no stray .env file is read
    return Settings()


def default_world(defaults: Settings, *sessions: SessionRow) -> World:
    return World.of(Policy.from_settings(defaults), sessions=list(sessions))


def test_every_default_the_contract_names(defaults: Settings) -> None:
    assert {name: getattr(defaults, name) for name in CONTRACT} == CONTRACT


def located(seeker_m: float, provider_m: float, **columns: object) -> SessionRow:
    """A live session with both sides on one meridian, the last distance sent from there."""
    return session_row(
        seeker_latitude=north(seeker_m),
        seeker_longitude=BASE_LNG,
        provider_latitude=north(provider_m),
        provider_longitude=BASE_LNG,
        distance_seeker_latitude=north(seeker_m),
        distance_seeker_longitude=BASE_LNG,
        distance_provider_latitude=north(provider_m),
        distance_provider_longitude=BASE_LNG,
        current_distance_meters=provider_m - seeker_m,
        last_distance_update=at(0),
        **columns,
    )


@pytest.mark.parametrize(("moved_m", "sent"), [(49.0, False), (50.5, True)])
def test_a_distance_update_after_a_move_of_50_m(
    defaults: Settings, moved_m: float, sent: bool
) -> None:
    world = default_world(defaults, located(0, 2000))
    fix = c.ReportLocation(SID, AS_PROVIDER, fix_at(2000 - moved_m))
    decision = step(world, fix, at(1))
    assert (distance_of(decision) is not None) is sent


@pytest.mark.parametrize(
    ("provider_m", "expected"),
    [
        (301.0, []),
        (299.0, ["provider_nearby"]),
        (51.0, ["provider_nearby"]),
        (49.0, ["provider_nearby", "provider_arrived"]),
    ],
)
def test_nearby_at_300_m_and_arrived_at_50_m(
    defaults: Settings, provider_m: float, expected: list[str]
) -> None:
    world = default_world(defaults, located(0, 2000))
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix_at(provider_m)), at(1))
    assert [kind for _, kind in kinds(decision)] == expected


@pytest.mark.parametrize(("accuracy_m", "kept"), [(100.0, True), (100.5, False)])
def test_a_fix_less_accurate_than_100_m_is_dropped(
    defaults: Settings, accuracy_m: float, kept: bool
) -> None:
    world = default_world(defaults, session_row())
    fix = fix_at(0, accuracy=accuracy_m)
    decision = step(world, c.ReportLocation(SID, AS_PROVIDER, fix), at(1))
    assert (world.sessions[SID].provider_latitude is not None) is kept
    assert bool(decision.writes) is kept


@pytest.mark.parametrize(("kmh", "kept"), [(190.0, True), (210.0, False)])
def test_a_fix_faster_than_200_km_h_is_dropped(defaults: Settings, kmh: float, kept: bool) -> None:
    world = default_world(
        defaults,
        session_row(
            provider_latitude=north(0),
            provider_longitude=BASE_LNG,
            provider_fix_recorded_at=at(0),
        ),
    )
    seconds = 60.0
    metres = kmh / 3.6 * seconds
    fix = fix_at(metres, recorded_at=at(seconds))
    step(world, c.ReportLocation(SID, AS_PROVIDER, fix), at(seconds))
    assert (world.sessions[SID].provider_latitude == north(metres)) is kept


def test_an_offer_expires_120_s_after_it_was_made(defaults: Settings) -> None:
    world = World.of(Policy.from_settings(defaults))
    command = c.CreateWorkOrder(SEEKER, ("provider-a",), {}, None, work_id=1)
    decision = step(world, command, at(0))
    (order,) = [w.row for w in decision.writes if isinstance(w, PutOrder)]
    assert order.offer_expires_at == at(0) + timedelta(seconds=120)


def test_chat_and_history_outlive_the_end_by_24_hours(defaults: Settings) -> None:
    world = default_world(defaults, session_row())
    ended = step(world, c.CancelSession(SID, None), at(10))
    assert ExpireChat(SID, at(10) + timedelta(hours=24)) in ended.writes

    sweep = decide(world, c.SweepExpired(), at(99))
    assert sweep.writes == (Sweep(now=at(99), ended_before=at(99) - timedelta(hours=24)),)


def test_a_socket_gets_bursts_of_40_and_20_frames_a_second(defaults: Settings) -> None:
    now = [0.0]
    bucket = TokenBucket(
        rate=defaults.rate_limit_per_s, burst=defaults.rate_limit_burst, clock=lambda: now[0]
    )
    assert [bucket.take() for _ in range(40)] == [0.0] * 40
    assert bucket.take() == pytest.approx(0.05)  # the 41st waits for one token: 1/20 s
    now[0] = 1.0
    passed = sum(bucket.take() == 0.0 for _ in range(40))
    assert passed == 20
    now[0] = 60.0  # a long quiet spell refills the burst, never more
    assert sum(bucket.take() == 0.0 for _ in range(60)) == 40


async def test_every_live_session_gets_the_distance_every_30_s(
    defaults: Settings, tmp_path: Path
) -> None:
    """The tick runs once a second over one thirtieth of the sessions (``id % 30``)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")  # never connected to
    broker = MemoryBroker()
    pipeline = build_pipeline(defaults, db, broker)
    try:
        jobs = Jobs(defaults, db, pipeline, broker, SoleLeader())
        scheduler = build_scheduler(jobs, defaults)
        tick = scheduler.get_job("distance_tick")
        assert tick is not None
        assert jobs.slices * tick.trigger.interval == timedelta(seconds=30)
        assert jobs.slices == 30
    finally:
        await pipeline.store.dispose()
        await db.dispose()
