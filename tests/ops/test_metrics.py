"""``GET /metrics`` on a real server: the counters move with the traffic, and several
workers report one set of numbers (prometheus-client's multi-process mode)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REDIS_URL, discard_database_url, fresh_database_url
from tests.realtime.conftest import (
    Server,
    dedicated_server,
    live_session,
    open_client,
    start_server,
    stop_server,
    uid,
)
from worksession import migrate
from worksession.ops import metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(server: Server) -> Samples:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def settled(server: Server, name: str, expected: float, **labels: str) -> Samples:
    """Scrape until ``name`` reaches ``expected`` (a socket closes after its last frame)."""
    deadline = time.monotonic() + 5
    while True:
        samples = await scrape(server)
        if value(samples, name, **labels) == expected or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_the_counters_move_during_a_chat_scenario(server: Server) -> None:
    before = await scrape(server)
    async with live_session(server) as pair:
        seeker, provider, sid = pair.seeker, pair.provider, pair.session_id
        during = await scrape(server)
        acks = [
            await seeker.request(
                {"type": "chat_message", "session_id": sid, "message": f"hello {i}"},
                "chat_message_ack",
            )
            for i in range(3)
        ]
        for _ in acks:
            await provider.expect("chat_message")
        await provider.send({"type": "message_delivered", "message_id": acks[0]["message_id"]})
        await seeker.expect("message_status_update", status="delivered")
        here = {"type": "location_update", "session_id": sid, "lat": 12.9716, "lng": 77.5946}
        await seeker.send(here)
        await provider.send({**here, "lat": 12.99})
        await seeker.expect("distance_update")
        await seeker.send({**here, "accuracy": 5000.0})  # dropped as noise, silently
        await seeker.request({"type": "ping"}, "pong")
        await seeker.request({"type": "no_such_type"}, "error", code="unknown_type")
        await provider.request({"type": "complete_session", "session_id": sid}, "session_completed")
        await seeker.expect("session_completed")
    after = await settled(
        server,
        "worksession_open_sockets",
        value(before, "worksession_open_sockets", role="seeker"),
        role="seeker",
    )

    for role in ("seeker", "provider"):
        assert delta(before, during, "worksession_open_sockets", role=role) == 1
        assert delta(before, after, "worksession_open_sockets", role=role) == 0
    frames_in = "worksession_frames_in_total"
    assert delta(before, after, frames_in, type="chat_message") == 3
    assert delta(before, after, frames_in, type="location_update") == 3
    assert delta(before, after, frames_in, type="work_response") == 1
    assert delta(before, after, frames_in, type="no_such_type") == 0  # never a client's label
    frames_out = "worksession_frames_out_total"
    assert delta(before, after, frames_out, type="connected") == 2
    assert delta(before, after, frames_out, type="chat_message_ack") == 3
    assert delta(before, after, frames_out, type="chat_message") == 3
    assert delta(before, after, frames_out, type="session_completed") == 2
    assert delta(before, after, "worksession_errors_total", code="unknown_type") == 1
    assert delta(before, after, "worksession_message_delivery_seconds_count") == 1
    assert delta(before, after, "worksession_distance_updates_total", trigger="move") == 1
    dropped = "worksession_location_fixes_dropped_total"
    assert delta(before, after, dropped, verdict="inaccurate") == 1
    assert delta(before, after, "worksession_offer_outcomes_total", outcome="accepted") == 1
    assert delta(before, after, "worksession_session_outcomes_total", outcome="completed") == 1
    duration = "worksession_session_duration_seconds_count"
    assert delta(before, after, duration, outcome="completed") == 1
    assert ("worksession_broker_reconnects_total", frozenset()) in after


@pytest.fixture
def ticking_server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    with dedicated_server(db_url, tmp_path, distance_interval_s="0.3") as running:
        yield running


async def test_the_ticker_is_timed_and_its_updates_counted(ticking_server: Server) -> None:
    before = await scrape(ticking_server)
    async with live_session(ticking_server) as pair:
        here = {
            "type": "location_update",
            "session_id": pair.session_id,
            "lat": 12.97,
            "lng": 77.59,
        }
        await pair.seeker.send(here)
        await pair.provider.send({**here, "lat": 12.98})
        await pair.seeker.expect("distance_update")  # the move
        await pair.seeker.expect("distance_update")  # a tick
        after = await scrape(ticking_server)
    assert delta(before, after, "worksession_distance_tick_seconds_count") >= 1
    assert delta(before, after, "worksession_distance_updates_total", trigger="tick") >= 1


def test_broker_reconnects_follow_the_brokers_own_count() -> None:
    counter = "worksession_broker_reconnects_total"
    start = metrics.REGISTRY.get_sample_value(counter) or 0.0
    seen = metrics._reconnects_seen
    metrics.sync_broker_reconnects(seen + 2)
    metrics.sync_broker_reconnects(seen + 2)  # the same count again adds nothing
    metrics.sync_broker_reconnects(seen + 3)
    assert metrics.REGISTRY.get_sample_value(counter) == start + 3


def test_frame_types_are_read_from_the_servers_own_encoding() -> None:
    assert metrics.frame_type('{"type":"pong","server_time":"x"}') == "pong"
    # Nested objects never decide the label; neither does a runaway string.
    assert metrics.frame_type('{"details":{"type":"x"},"type":"work_request"}') == "other"
    assert metrics.frame_type('{"type":"' + "a" * 100 + '"}') == "other"


# --- several workers ---------------------------------------------------------------------


@pytest.fixture
def two_workers(db_url: str, tmp_path: Path) -> Iterator[Server]:
    """``worksession serve --workers 2`` as an operator runs it (several workers need
    Redis), on a database of its own, with its temporary files (the metrics directory) in
    ``tmp_path/tmp``."""
    if not REDIS_URL:
        pytest.skip("several workers need Redis: set WORKSESSION_TEST_REDIS_URL (CI does)")
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    url = fresh_database_url(backend, tmp_path)
    migrate.upgrade(url)
    try:
        with _serve_workers(url, tmp_path, workers=2) as server:
            yield server
    finally:
        discard_database_url(url)


@contextmanager
def _serve_workers(db_url: str, log_dir: Path, workers: int) -> Iterator[Server]:
    tmp = log_dir / "tmp"
    tmp.mkdir()
    server = start_server(
        db_url,
        log_dir,
        workers=str(workers),
        extra_env={"TMPDIR": str(tmp)},
        redis_url=REDIS_URL or "",
        redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
    )
    try:
        deadline = time.monotonic() + 60
        while server.log().count("worksession ready") < workers:
            assert server.process.poll() is None, server.log()
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        (metrics_dir,) = tmp.iterdir()
        assert metrics_dir.name.startswith("worksession-metrics-")
        yield server
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()
    assert list(tmp.iterdir()) == [], "the metrics directory outlived the server"


async def test_every_worker_reports_the_sum_of_all_workers(two_workers: Server) -> None:
    sockets, pings, server = 6, 2, two_workers
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_client(server, "seeker", uid("seeker")))
            for _ in range(sockets)
        ]
        for client in clients:
            for _ in range(pings):
                await client.request({"type": "ping"}, "pong")
        # Each scrape is a new connection, served by whichever worker accepts it.
        for _ in range(12):
            samples = await scrape(server)
            assert value(samples, "worksession_open_sockets", role="seeker") == sockets
            assert value(samples, "worksession_frames_in_total", type="ping") == sockets * pings
            assert value(samples, "worksession_frames_out_total", type="connected") == sockets
    samples = await settled(server, "worksession_open_sockets", 0, role="seeker")
    assert value(samples, "worksession_open_sockets", role="seeker") == 0
