"""The distance ticker: the tick over 1,000 and over 10,000 live sessions.

Two measurements per size, on one fresh PostgreSQL database:

- **In process** (as the leader worker runs it, on uvloop, in a process of its own):
  ``Jobs.distance_tick()`` reads the live sessions in keyset batches of 500, computes each
  distance and publishes a ``distance_update`` per participant through the real
  ``RedisBroker`` (one pipelined publish per batch). CPU per session is the process's CPU
  time (``time.process_time``) of a whole tick over the sessions; the longest event-loop
  hold is how late a 1 ms timer fired meanwhile (what other sockets of that worker wait at
  most); the bare batched read of the same rows is the same-run baseline. Medians of
  several rounds. One extra, unmeasured round first checks, with a Redis subscriber, that
  every one of the 2 x N frames was published.
- **Live**: ``worksession serve``, 2 workers, the tick at a short interval, which it runs
  as it always does, a slice of the sessions (``id % slices``) about every second; the
  sockets of the sessions connected (of a fifth of them at 10,000: see ``FULL``), as many
  in every slice, plus open-loop chat on some of the connected pairs (the seeker sends
  ``chat_message`` with its intended send time in the text; the provider answers each with
  ``message_delivered`` and ``message_read``). Two phases at the same chat rate: *quiet*,
  the sessions' positions hidden so that the tick sends nothing, then *ticking*. The
  ``distance_update`` frames, grouped by the slice run that sent them (its
  ``updated_at``), must reach exactly the sockets of one slice, once each. Chat latency
  (intended send -> the provider's socket has the message) is compared between the
  phases, and so is the servers' CPU (from /proc, sampled every 100 ms).

The analysis is in ``bench/notes/ticker.md``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench import report, servers
from bench.clients import ClientPool
from bench.latency import Histogram
from bench.machine import measured_at
from bench.processes import ProcessGroup
from bench.seeding import LiveSession, seed_live_sessions
from bench.wsclient import open_socket
from worksession.config import Settings
from worksession.eventlog.outbox import dumps
from worksession.kit.db import Database
from worksession.kit.leader import SoleLeader
from worksession.kit.redis_broker import RedisBroker
from worksession.lifespan import build_pipeline
from worksession.scheduler import TICK_BATCH, Jobs, tick_slices
from worksession.sessions import repository

WORKERS = 2
SAMPLE_CPU_S = 0.1
QUIET_FRACTION = 0.5
"""The quiet phase (the tick sends nothing) lasts this fraction of the ticking one."""
PHASE_GRACE_S = 3.0
"""After a phase's last chat message: for the slice runs begun in it to reach their
sockets."""
SOCKETS_PER_GENERATOR = 5_000
SETTLE_S = 10.0

FULL = {
    # "sockets_of": the sessions whose two sockets are connected. All 20,000 sockets of
    # 10,000 sessions take minutes to connect on the shared 2 cores (about 10 ms each under
    # the neighbours' load), past the time a scenario may take: the 10,000-session tick
    # publishes to all of them and is delivered to the sockets of 2,000. The interval
    # leaves the tick of 10,000 time to finish before the next one is due.
    "sizes": [
        {"sessions": 1_000, "sockets_of": 1_000, "interval_s": 5.0, "duration_s": 30.0},
        {"sessions": 10_000, "sockets_of": 2_000, "interval_s": 10.0, "duration_s": 40.0},
    ],
    "rounds": 5,
    # Moderate: at 200 and at 100 messages/s (each with its two receipts: three
    # transactions, every frame crossing workers) the chat alone took 0.5 to 0.7 of a core,
    # about what the shared machine gave the two workers, and the quiet latency measured
    # the servers' backlog rather than the tick. Spread thin over many pairs because the
    # server handles one socket's frames one at a time.
    "pairs": 100,
    "chat_rate": 50.0,
    "concurrency": 64,
    "chat_apart": True,
}
SMOKE = {
    "sizes": [{"sessions": 50, "sockets_of": 50, "interval_s": 2.0, "duration_s": 4.0}],
    "rounds": 2,
    "pairs": 10,
    "chat_rate": 20.0,
    "concurrency": 16,
    "chat_apart": False,
}

TARGET_US_PER_SESSION = 50.0
TARGET_P99_RATIO = 2.0


# --- in process -------------------------------------------------------------------------


class _Warnings(logging.Handler):
    """Counts what the service logs at WARNING or above (a failed publish, for one)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def _loop_lag_monitor(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 1 ms timer fires: the time the event loop was held by someone else."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - before - 0.001)


async def _measure(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """CPU seconds of ``work`` and the longest event-loop hold while it ran."""
    stop, lags = asyncio.Event(), list[float]()
    monitor = asyncio.create_task(_loop_lag_monitor(stop, lags))
    await asyncio.sleep(0.01)
    started = time.process_time()
    await work()
    cpu = time.process_time() - started
    stop.set()
    await monitor
    return cpu, max(lags, default=0.0)


class InProcessTick:
    """The leader's tick in a generator process (uvloop, as the server runs) while no
    server runs, publishing through the real RedisBroker."""

    def __init__(self) -> None:
        self.db: Database | None = None
        self.broker: RedisBroker | None = None
        self.jobs: Jobs | None = None
        self.warnings = _Warnings()

    async def setup(self, config: dict[str, Any]) -> dict[str, Any]:
        url, redis_url = config["url"], config["redis_url"]
        self.db = Database(url)
        # Publishing needs no subscription of its own: the listener is not started, so the
        # process does nothing but the tick.
        self.broker = RedisBroker(redis_url, prefix=config["prefix"])
        settings = Settings(database_url=url, redis_url=redis_url)
        pipeline = build_pipeline(settings, self.db, self.broker)
        self.jobs = Jobs(settings, self.db, pipeline, self.broker, SoleLeader())
        logging.getLogger("worksession").addHandler(self.warnings)
        return {}

    async def phase(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self.jobs is not None
        expected = int(params["sessions"])
        ticked: list[int] = []

        async def tick() -> None:
            # A whole interval: every slice of it, one after the other.
            assert self.jobs is not None
            sent = 0
            for _ in range(self.jobs.slices):
                sent += await self.jobs.distance_tick()
            ticked.append(sent)

        if params["op"] == "check":
            await tick()
            return {"ticked": ticked, "warnings": self.warnings.count}
        read_cpu, read_lag, tick_cpu, tick_lag = [], [], [], []
        for _ in range(int(params["rounds"])):
            cpu, lag = await _measure(self._read_only)
            read_cpu.append(cpu)
            read_lag.append(lag)
            cpu, lag = await _measure(tick)
            tick_cpu.append(cpu)
            tick_lag.append(lag)
        return {
            "read_cpu": read_cpu,
            "read_lag": read_lag,
            "tick_cpu": tick_cpu,
            "tick_lag": tick_lag,
            "ticked": ticked,
            "expected": expected,
            "warnings": self.warnings.count,
        }

    async def _read_only(self) -> None:
        """The baseline: the same keyset pages the tick reads, and nothing else."""
        assert self.db is not None
        assert self.jobs is not None
        for part in range(self.jobs.slices):
            after = 0
            while True:
                async with self.db.transaction() as s:
                    page = await repository.live_sessions_with_positions(
                        s, after_id=after, limit=TICK_BATCH, slices=self.jobs.slices, part=part
                    )
                if len(page) < TICK_BATCH:
                    break
                after = page[-1].id
                await asyncio.sleep(0)

    async def teardown(self) -> None:
        if self.broker is not None:
            await self.broker.close()
        if self.db is not None:
            await self.db.dispose()


class _PublishedCounter:
    """A Redis subscriber to every user channel under a prefix: counts what was published."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.client = redis.asyncio.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pattern = f"{prefix}:ws:*"
        self.received = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _PublishedCounter:
        await self.pubsub.psubscribe(self.pattern)
        self._task = asyncio.create_task(self._count())
        return self

    async def _count(self) -> None:
        while True:
            message = await self.pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "pmessage":
                self.received += 1

    async def wait_for(self, expected: int, timeout_s: float) -> int:
        """The count once it reaches ``expected`` (the subscriber reads behind the
        publisher) or stops growing for ``timeout_s``."""
        last, deadline = -1, time.monotonic() + timeout_s
        while self.received < expected and time.monotonic() < deadline:
            if self.received != last:
                last, deadline = self.received, time.monotonic() + timeout_s
            await asyncio.sleep(0.1)
        return self.received

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()


async def _in_process(
    context: report.Context, pool: ClientPool, prefix: str, sessions: int, rounds: int
) -> dict[str, Any]:
    """Runs in the pool's first process; the others idle meanwhile."""
    idle = [{"op": "none"}] * (len(pool.processes) - 1)
    # One unmeasured round with a subscriber listening: every frame was published. The
    # measured rounds run without it, so that it takes no CPU from the tick.
    async with _PublishedCounter(context.redis_url, prefix) as counter:
        checked, *_ = await pool.phase([{"op": "check", "sessions": sessions}, *idle])
        published = await counter.wait_for(2 * sessions, timeout_s=5.0)
    measured, *_ = await pool.phase(
        [{"op": "measure", "sessions": sessions, "rounds": rounds}, *idle]
    )
    measured["check_ticked"] = checked["ticked"]
    measured["check_published"] = published
    return measured


# --- live -------------------------------------------------------------------------------


@dataclass
class _Pair:
    session_id: str
    seeker: ClientConnection
    provider: ClientConnection


class TickerClient:
    """One generator process: its share of the sessions' sockets, reading all the time;
    the chat process also holds the chat pairs and sends their load. The first process
    runs the in-process tick before the server starts."""

    def __init__(self) -> None:
        self.tick: InProcessTick | None = None
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.pairs: list[_Pair] = []
        self._reset()
        self.closed: Counter[str] = Counter()

    def _reset(self) -> None:
        self.ticks: dict[str, list[Any]] = {}
        """A slice run's ``updated_at`` -> [first arrival, last arrival, {session_id:
        frames}]."""
        self.other: Counter[str] = Counter()
        self.samples: list[tuple[float, float]] = []
        """(intended send time, latency) of every chat message a provider received."""
        self.sent = 0
        self.acks = 0
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    async def setup(self, config: dict[str, Any]) -> dict[str, Any]:
        if config:
            self.tick = InProcessTick()
            await self.tick.setup(config)
        return {}

    async def phase(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["op"] == "none":
            return {}
        if params["op"] in ("check", "measure"):
            assert self.tick is not None
            return await self.tick.phase(params)
        if params["op"] == "connect":
            return await self._connect_all(params)
        if params["op"] == "reset":
            self._reset()
            return {}
        if params["op"] == "disconnect":
            await self._disconnect()
            return {}
        return await self._run(params)

    async def _connect_all(self, params: dict[str, Any]) -> dict[str, Any]:
        ws_urls: list[str] = params["ws_urls"]
        specs = [
            (index, worker, role, servers.token(sub, role), session_id, pair)
            for index, worker, role, sub, session_id, pair in params["sockets"]
        ]
        limit = asyncio.Semaphore(params["concurrency"])
        failures: Counter[str] = Counter()
        wrong_session = 0
        halves: dict[int, dict[str, ClientConnection]] = {}
        started = time.monotonic()

        async def one(
            index: int, worker: int, role: str, jwt: str, session_id: str, pair: int
        ) -> None:
            nonlocal wrong_session
            async with limit:
                try:
                    ws, connected = await open_socket(ws_urls[worker], role, jwt, index)
                except Exception as exc:
                    failures[type(exc).__name__] += 1
                    return
            if (connected.get("session") or {}).get("session_id") != session_id:
                wrong_session += 1
            self.sockets.append(ws)
            self.readers.append(asyncio.create_task(self._read(ws, role)))
            if pair >= 0:
                halves.setdefault(pair, {})[role] = ws

        await asyncio.gather(*(one(*spec) for spec in specs))
        sessions_of = {pair: sid for _i, _w, _r, _t, sid, pair in specs if pair >= 0}
        for pair, sockets in sorted(halves.items()):
            if "seeker" in sockets and "provider" in sockets:
                self.pairs.append(_Pair(sessions_of[pair], sockets["seeker"], sockets["provider"]))
        return {
            "connected": len(self.sockets),
            "pairs": len(self.pairs),
            "failures": dict(failures),
            "wrong_session": wrong_session,
            "seconds": time.monotonic() - started,
        }

    async def _read(self, ws: ClientConnection, role: str) -> None:
        try:
            async for raw in ws:
                now = time.monotonic()
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "distance_update":
                    tick = self.ticks.get(frame["updated_at"])
                    if tick is None:
                        tick = self.ticks[frame["updated_at"]] = [now, now, {}]
                    tick[1] = now
                    sid = frame["session_id"]
                    tick[2][sid] = tick[2].get(sid, 0) + 1
                elif kind == "chat_message" and role == "provider":
                    intended = float(frame["message"])
                    self.samples.append((intended, now - intended))
                    receipt = {"type": "message_delivered", "message_id": frame["message_id"]}
                    await ws.send(dumps(receipt))
                    await ws.send(dumps({**receipt, "type": "message_read"}))
                elif kind == "chat_message_ack":
                    self.acks += 1
                elif kind == "message_status_update":
                    # Both participants get each receipt (contract 1.1); the seeker's
                    # copy is the one the sender waits for.
                    if role == "seeker":
                        self.statuses[frame["status"]] += 1
                elif kind == "error":
                    self.errors[str(frame.get("code"))] += 1
                else:
                    self.other[str(kind)] += 1
        except ConnectionClosed:
            pass
        self.closed[str(ws.close_code)] += 1

    async def _run(self, params: dict[str, Any]) -> dict[str, Any]:
        start_at, duration = float(params["start_at"]), float(params["duration_s"])
        if self.pairs:
            await self._chat(start_at, duration, float(params["rate"]))
        await asyncio.sleep(max(0.0, start_at + duration + params["grace_s"] - time.monotonic()))
        # A loaded server may still be answering: wait for every answer, or until nothing
        # has moved for SETTLE_S.
        progress, quiet_since = -1, time.monotonic()
        while self.pairs and time.monotonic() - quiet_since < SETTLE_S:
            done = len(self.samples) + self.acks + sum(self.statuses.values())
            if done == 4 * self.sent:
                break
            if done != progress:
                progress, quiet_since = done, time.monotonic()
            await asyncio.sleep(0.05)
        return {
            "ticks": self.ticks,
            "other": dict(self.other),
            "samples": self.samples,
            "sent": self.sent,
            "acks": self.acks,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "open": sum(1 for ws in self.sockets if ws.close_code is None),
            "closed": dict(self.closed),
        }

    async def _chat(self, start_at: float, duration: float, rate: float) -> None:
        """Open loop: message j is due at ``start_at + j / rate`` whatever happened to the
        ones before it, on the pairs in turn; its text is that intended time."""
        # Unique across runs: the pairs chat again at the next size, and a client_msg_id
        # seen before in a session is answered with the original ack and stores nothing.
        run = uuid.uuid4().hex[:8]
        j = 0
        while (intended := start_at + j / rate) < start_at + duration:
            delay = intended - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pair = self.pairs[j % len(self.pairs)]
            frame = {
                "type": "chat_message",
                "session_id": pair.session_id,
                "message": f"{intended:.6f}",
                "client_msg_id": f"{run}-{j}",
            }
            await pair.seeker.send(dumps(frame))
            self.sent += 1
            j += 1

    async def _disconnect(self) -> None:
        """Close the sockets before the server stops, as clients leaving (rather than the
        server closing them all with 1012 on its way down)."""
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        for reader in self.readers:
            reader.cancel()
        self.sockets, self.readers, self.pairs = [], [], []

    async def teardown(self) -> None:
        await self._disconnect()
        if self.tick is not None:
            await self.tick.teardown()


def _socket_specs(sessions: list[LiveSession], first_index: int, pairs: bool) -> list[list[Any]]:
    """[index, worker, role, sub, session_id, pair] per socket. Session k's seeker is on
    worker k % 2 and its provider on the other: every frame of a chat pair crosses workers,
    so every chat message passes through the leader, whichever worker leads."""
    specs: list[list[Any]] = []
    for k, live in enumerate(sessions):
        pair = k if pairs else -1
        index = first_index + 2 * k
        specs.append([index, k % WORKERS, "seeker", live.seeker_id, live.session_id, pair])
        specs.append(
            [index + 1, (k + 1) % WORKERS, "provider", live.provider_id, live.session_id, pair]
        )
    return specs


async def _sample_cpu(
    groups: list[ProcessGroup], until: float, every: float = SAMPLE_CPU_S
) -> list[list[float]]:
    """[time, CPU seconds of each group...] every ``every`` seconds until ``until``."""
    samples = []
    while True:
        now = time.monotonic()
        samples.append([now, *(group.cpu() for group in groups)])
        if now >= until:
            return samples
        await asyncio.sleep(every)


def _cpu_between(samples: list[list[float]], column: int, a: float, b: float) -> float:
    """CPU seconds of one column between two times, interpolated between samples."""
    times = [s[0] for s in samples]

    def at(t: float) -> float:
        i = bisect.bisect_left(times, t)
        if i <= 0:
            return samples[0][column]
        if i >= len(samples):
            return samples[-1][column]
        (t0, c0), (t1, c1) = (times[i - 1], samples[i - 1][column]), (times[i], samples[i][column])
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1

    return at(b) - at(a)


@dataclass
class _Window:
    """One slice run of the tick as the clients saw it."""

    first: float
    last: float
    sessions: Counter[str]
    """session_id -> frames received."""


def _fmt_pair(a: float, b: float) -> str:
    """Two figures in one cell; "-" for one that has no samples (NaN)."""
    return " / ".join("-" if x != x else f"{x:.1f}" for x in (a, b))


# The seeded provider latitudes, kept aside while the tick must not see the sessions.
HIDE = (
    "CREATE TABLE bench_hidden_positions AS SELECT id, provider_latitude FROM work_sessions"
    " WHERE provider_latitude IS NOT NULL",
    "UPDATE work_sessions SET provider_latitude = NULL"
    " WHERE id IN (SELECT id FROM bench_hidden_positions)",
)
SHOW = (
    "UPDATE work_sessions AS w SET provider_latitude = h.provider_latitude"
    " FROM bench_hidden_positions AS h WHERE h.id = w.id",
    "DROP TABLE bench_hidden_positions",
)


async def _in_one_transaction(url: str, statements: tuple[str, ...]) -> None:
    connection = await asyncpg.connect(servers.asyncpg_dsn(url))
    try:
        async with connection.transaction():
            for statement in statements:
                await connection.execute(statement)
    finally:
        await connection.close()


async def _hide_positions(url: str) -> None:
    """Take the sessions out of the tick while the sockets connect (the tick reads only
    sessions with both positions): at a short interval, ticks to the sockets already
    connected would slow the connection of the others down, more with every one."""
    await _in_one_transaction(url, HIDE)


async def _show_positions(url: str) -> None:
    await _in_one_transaction(url, SHOW)


def _generators(step: dict[str, Any], size: dict[str, Any]) -> int:
    """Processes for the sockets of the ticked sessions, plus one for the chat pairs when
    they are kept apart (so that their latency does not include a generator busy reading
    thousands of tick frames)."""
    tick_sockets = 2 * (int(step["sockets_of"]) - int(size["pairs"]))
    return max(1, -(-tick_sockets // SOCKETS_PER_GENERATOR)) + int(size["chat_apart"])


async def _session_ids(url: str) -> dict[str, int]:
    """session_id -> the row's id, which decides the session's slice of the tick."""
    connection = await asyncpg.connect(servers.asyncpg_dsn(url))
    try:
        rows = await connection.fetch("SELECT session_id::text AS sid, id FROM work_sessions")
    finally:
        await connection.close()
    return {row["sid"]: row["id"] for row in rows}


def _spread(
    sessions: list[LiveSession], ids: dict[str, int], slices: int, online: int
) -> list[LiveSession]:
    """``online`` of the sessions, as many in every slice of the tick (``id % slices``) and
    spread over each slice's id range, so over the batches the tick reads it in."""
    chosen: list[LiveSession] = []
    for part in range(slices):
        members = sorted(
            (live for live in sessions if ids[live.session_id] % slices == part),
            key=lambda live: ids[live.session_id],
        )
        wanted = online // slices + (1 if part < online % slices else 0)
        if wanted:
            chosen += members[:: max(1, len(members) // wanted)][:wanted]
    return sorted(chosen, key=lambda live: ids[live.session_id])


async def _phase(
    pool: ClientPool, dep: servers.Deployment, size: dict[str, Any], lead_s: float, seconds: float
) -> dict[str, Any]:
    """Chat for ``seconds`` from ``lead_s`` on, with the servers' CPU sampled meanwhile."""
    grace = PHASE_GRACE_S
    start_at = time.monotonic() + lead_s
    end_at = start_at + seconds
    workers = [ProcessGroup.under([p.popen.pid]) for p in dep.processes]
    sampler = asyncio.create_task(_sample_cpu([*workers, pool.group], until=end_at + grace))
    runs = await pool.phase(
        {
            "op": "run",
            "start_at": start_at,
            "duration_s": seconds,
            "grace_s": grace,
            "rate": size["chat_rate"],
        }
    )
    cpu = await sampler
    cores = [_cpu_between(cpu, c, start_at, end_at) / seconds for c in range(1, WORKERS + 2)]
    return {"runs": runs, "start_at": start_at, "end_at": end_at, "cores": cores}


def _chat_problems(phase: str, runs: list[dict[str, Any]]) -> list[str]:
    problems = []
    sent = sum(r["sent"] for r in runs)
    received = sum(len(r["samples"]) for r in runs)
    acks = sum(r["acks"] for r in runs)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in runs:
        statuses.update(r["statuses"])
        errors.update(r["errors"])
    if not sent or {sent, received, acks, statuses["delivered"], statuses["read"]} != {sent}:
        problems.append(
            f"{phase} chat: sent {sent}, received {received}, acks {acks}, "
            f"statuses {dict(statuses)}"
        )
    if errors:
        problems.append(f"{phase}: error frames {dict(errors)}")
    return problems


def _latencies(runs: list[dict[str, Any]], start: float, end: float) -> Histogram:
    latencies = Histogram()
    for intended, latency in (s for r in runs for s in r["samples"]):
        if start <= intended < end:
            latencies.record(latency)
    return latencies


def _windows(runs: list[dict[str, Any]]) -> list[_Window]:
    merged: dict[str, _Window] = {}
    for r in runs:
        for key, (first, last, sessions) in r["ticks"].items():
            w = merged.get(key)
            if w is None:
                merged[key] = _Window(first, last, Counter(sessions))
            else:
                w.first, w.last = min(w.first, first), max(w.last, last)
                w.sessions.update(sessions)
    return sorted(merged.values(), key=lambda w: w.first)


async def _live(
    context: report.Context,
    url: str,
    sessions: list[LiveSession],
    size: dict[str, Any],
    step: dict[str, Any],
    pool: ClientPool,
) -> dict[str, Any]:
    n, pairs, online = len(sessions), int(size["pairs"]), int(step["sockets_of"])
    interval = float(step["interval_s"])
    slices = tick_slices(interval)
    slice_s = interval / slices
    ids = await _session_ids(url)
    connected_sessions = _spread(sessions, ids, slices, online)
    online = len(connected_sessions)
    chat_sessions, tick_sessions = connected_sessions[:pairs], connected_sessions[pairs:]
    tick_specs = _socket_specs(tick_sessions, 0, pairs=False)
    chat_specs = _socket_specs(chat_sessions, len(tick_specs), pairs=True)
    generators = len(pool.processes) - int(size["chat_apart"])
    share = -(-len(tick_specs) // generators)
    duration = float(step["duration_s"])
    quiet_s = duration * QUIET_FRACTION
    part_of = {live.session_id: ids[live.session_id] % slices for live in connected_sessions}
    per_part = Counter(part_of.values())
    await _hide_positions(url)
    with servers.worksession(
        url,
        context.redis_url,
        context.log_dir,
        workers=WORKERS,
        distance_interval_s=str(interval),
    ) as dep:
        ws_urls = [dep.ws_url(w) for w in range(WORKERS)]
        shares = [tick_specs[g * share : (g + 1) * share] for g in range(generators)]
        if size["chat_apart"]:
            shares.append(chat_specs)
        else:
            shares[-1] = shares[-1] + chat_specs
        connects = await pool.phase(
            [
                {
                    "op": "connect",
                    "ws_urls": ws_urls,
                    "sockets": own,
                    "concurrency": size["concurrency"],
                }
                for own in shares
            ]
        )
        _progress(
            f"{sum(c['connected'] for c in connects):,} sockets connected in "
            f"{max(c['seconds'] for c in connects):.0f} s"
        )
        # Quiet: the tick runs, but no session has both positions, so it sends nothing.
        await pool.phase({"op": "reset"})
        quiet = await _phase(pool, dep, size, 0.5, quiet_s)
        # Ticking: the positions back, the tick sends a slice every slice_s; chat starts
        # once the first slice has had the time to run.
        await pool.phase({"op": "reset"})
        await _show_positions(url)
        ticking = await _phase(pool, dep, size, slice_s + 0.5, duration)
        # Read before the clients leave: a client that goes while a frame is being sent to
        # it makes the server log a traceback (see bench/notes/ticker.md).
        tracebacks = dep.tracebacks()
        await pool.phase({"op": "disconnect"})

    problems: list[str] = []
    connected = sum(c["connected"] for c in connects)
    failures: Counter[str] = Counter()
    for c in connects:
        failures.update(c["failures"])
    if connected != 2 * online or failures:
        problems.append(f"connected {connected} of {2 * online} sockets ({dict(failures)})")
    if wrong := sum(c["wrong_session"] for c in connects):
        problems.append(f"{wrong} sockets got another session in their connected frame")
    if connects[-1]["pairs"] != pairs:
        problems.append(f"only {connects[-1]['pairs']} of {pairs} chat pairs connected")

    if stray := _windows(quiet["runs"]):
        problems.append(f"the tick sent {len(stray)} slices while no session had positions")
    start_at, end_at = ticking["start_at"], ticking["end_at"]
    windows = [w for w in _windows(ticking["runs"]) if start_at <= w.first <= end_at]
    if not windows:
        problems.append("no slice of the tick ran in the measured window")
    wrong_windows = []
    for w in windows:
        parts = {part_of.get(sid, -1) for sid in w.sessions}
        part = next(iter(parts)) if len(parts) == 1 else -1
        if part < 0 or set(w.sessions.values()) != {2} or len(w.sessions) != per_part[part]:
            wrong_windows.append(
                f"{len(w.sessions)} sessions of slices {sorted(parts)[:3]}, "
                f"frames per session {sorted(set(w.sessions.values()))}"
            )
    if wrong_windows:
        problems.append(
            f"{len(wrong_windows)} slice runs did not reach exactly the sockets of one slice "
            f"once each: {wrong_windows[:3]}"
        )
    seen_parts = {part_of.get(sid, -1) for w in windows for sid in w.sessions}
    if duration >= interval + slice_s and seen_parts != set(per_part):
        problems.append(f"slices {sorted(set(per_part) - seen_parts)} never ticked")
    problems += _chat_problems("quiet", quiet["runs"])
    problems += _chat_problems("ticking", ticking["runs"])
    closed: Counter[str] = Counter()
    for r in quiet["runs"] + ticking["runs"]:
        closed.update(r["closed"])
    if closed:
        problems.append(f"sockets closed during the run: {dict(closed)}")
    if tracebacks:
        problems.append(f"server tracebacks: {tracebacks[0][-2000:]}")

    runs = ticking["runs"]
    during = _latencies(runs, start_at, end_at)
    in_slices, between = Histogram(), Histogram()
    for intended, latency in (s for r in runs for s in r["samples"]):
        if start_at <= intended < end_at:
            inside = any(w.first <= intended <= w.last for w in windows)
            (in_slices if inside else between).record(latency)
    # Server CPU: the ticking phase's rate over the quiet one's, per session ticked (each
    # session once per interval).
    by_worker = [
        (t - q) * interval / n * 1e6
        for t, q in zip(ticking["cores"][:WORKERS], quiet["cores"][:WORKERS], strict=True)
    ]
    return {
        "problems": problems,
        "ticks": len(windows),
        "slices": slices,
        "tick_ms": (
            statistics.median((w.last - w.first) * 1000 for w in windows)
            if windows
            else float("nan")
        ),
        "tick_cores": sum(ticking["cores"][:WORKERS]),
        "quiet_cores": sum(quiet["cores"][:WORKERS]),
        "excess_us_per_session": sum(by_worker),
        "excess_us_per_session_by_worker": by_worker,
        "generator_cores": ticking["cores"][WORKERS],
        "during": during,
        "quiet": _latencies(quiet["runs"], quiet["start_at"], quiet["end_at"]),
        "in_slices": in_slices,
        "between_slices": between,
        "chat_sent": sum(r["sent"] for r in quiet["runs"] + runs),
        "connect_s": max(c["seconds"] for c in connects),
        "sockets_of": online,
        "generators": len(shares),
    }


# --- the scenario -----------------------------------------------------------------------


def _describe(size: dict[str, Any]) -> str:
    steps = "; ".join(
        f"{step['sessions']:,} sessions ticked every {step['interval_s']:g} s for "
        f"{step['duration_s']:g} s, the sockets of {step['sockets_of']:,} of them connected "
        "(spread evenly over the order the tick reads them in)"
        for step in size["sizes"]
    )
    return " ".join(
        [
            "One distance tick over N live sessions (both positions known, all ticked).",
            "**In process**: `Jobs.distance_tick()` as the leader runs it (uvloop, batches",
            f"of {TICK_BATCH}, publishing 2 x N `distance_update` frames through the real",
            "`RedisBroker`); CPU per session is the process's CPU time for a whole tick / N;",
            "'loop hold' is the longest a 1 ms timer was late meanwhile; the baseline is the",
            f"bare batched read of the same rows (medians of {size['rounds']} rounds; one",
            "more, unmeasured, round checks with a Redis subscriber that all 2 x N frames",
            f"were published). **Live**: `worksession serve` with {WORKERS} workers, the",
            f"tick at a short interval ({steps}), run as the service runs it: a slice of the",
            "sessions (`id % slices`, one slice per second of the interval) at a time.",
            "Seeker and provider are on different workers; the sessions' positions are",
            "hidden from the tick while the sockets connect (about 10 ms a socket on the",
            f"shared machine). {size['pairs']} of the connected sessions carry open-loop chat",
            f"at {size['chat_rate']:g} messages/s in all (the seeker sends `chat_message`, the",
            "provider answers `message_delivered` + `message_read`; every message crosses",
            "workers, so it passes through the leader), in two phases: *quiet* (for",
            f"{QUIET_FRACTION:g} of the ticking phase's time; the positions still hidden, so",
            "the tick finds no session to send to) then *ticking* (the positions back). A",
            "slice run is seen at the clients from its first to its last `distance_update`",
            "arrival ('slice ms'); each must reach exactly the connected sockets of one slice,",
            "once each. 'CPU us/session' live is the servers' CPU rate (both workers, /proc)",
            "in the ticking phase minus the quiet phase's, per session ticked (N per",
            "interval): the tick plus the delivery of its frames to the connected sockets.",
            "'server cores': CPU seconds per second in each phase (both carry the chat).",
            "Chat latency is intended send -> the provider's socket has the message, by the",
            "phase it was sent in.",
        ]
    )


COLUMNS = [
    "sessions",
    "measure",
    "CPU us/session",
    "baseline us/session",
    "ratio",
    "loop hold ms",
    "slice ms",
    "server cores tick / quiet",
    "chat p50 quiet / tick ms",
    "chat p99 quiet / tick ms",
    "p99 tick/quiet",
]


async def run(context: report.Context) -> report.Scenario:
    size = SMOKE if context.smoke else FULL
    scenario = report.Scenario(
        name="ticker",
        title="Distance ticker",
        description=_describe(size),
        columns=COLUMNS,
    )
    # The checkout is shared with people changing the service: say which code was measured.
    scenario.extra["measured_at"] = measured_at()
    url = await servers.create_database(context.postgres_url)
    try:
        await asyncio.to_thread(servers.migrate_database, url)
        sessions: list[LiveSession] = []
        problems: list[str] = []
        results: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        for step in size["sizes"]:
            n = int(step["sessions"])
            sessions += await seed_live_sessions(url, n - len(sessions), f"t{len(sessions)}")
            prefix = f"bench-tick-{uuid.uuid4().hex[:8]}"
            tick = {"url": url, "redis_url": context.redis_url, "prefix": prefix}
            configs = [tick] + [{}] * (_generators(step, size) - 1)
            async with ClientPool("bench.scenarios.ticker:TickerClient", configs) as pool:
                inproc = await _in_process(context, pool, prefix, n, int(size["rounds"]))
                _progress(
                    f"{n:,} sessions in process: "
                    f"{statistics.median(inproc['tick_cpu']) * 1e6 / n:.1f} us CPU per session"
                )
                problems += _check_in_process(inproc, n)
                live = await _live(context, url, sessions, size, step, pool)
            problems += [f"{n} sessions: {p}" for p in live["problems"]]
            results[n] = (inproc, live)
            _add_rows(scenario, n, inproc, live)
    finally:
        await servers.drop_database(context.postgres_url, url)
    if problems:
        raise RuntimeError("; ".join(problems))
    _add_targets(scenario, results, context.smoke)
    return scenario


def _progress(text: str) -> None:
    """A line on stderr: the full run takes minutes, most of them connecting sockets."""
    print(f"ticker: {text}", file=sys.stderr, flush=True)


def _check_in_process(inproc: dict[str, Any], n: int) -> list[str]:
    problems = []
    if inproc["check_ticked"] != [n] or inproc["ticked"] != [n] * len(inproc["tick_cpu"]):
        problems.append(f"in-process tick covered {inproc['ticked']} sessions, not {n}")
    if inproc["check_published"] != 2 * n:
        problems.append(f"in-process tick published {inproc['check_published']} of {2 * n}")
    if inproc["warnings"]:
        problems.append(f"in-process tick logged {inproc['warnings']} warnings")
    return problems


def _add_rows(
    scenario: report.Scenario, n: int, inproc: dict[str, Any], live: dict[str, Any]
) -> None:
    tick_cpu = statistics.median(inproc["tick_cpu"])
    read_cpu = statistics.median(inproc["read_cpu"])
    scenario.add(
        **{
            "sessions": f"{n:,}",
            "measure": "in process",
            "CPU us/session": tick_cpu * 1e6 / n,
            "baseline us/session": read_cpu * 1e6 / n,
            "ratio": tick_cpu / read_cpu if read_cpu else float("nan"),
            "loop hold ms": statistics.median(inproc["tick_lag"]) * 1000,
        }
    )
    during, quiet = live["during"], live["quiet"]
    q50, q99 = quiet.percentile(0.5) / 1000, quiet.percentile(0.99) / 1000
    d50, d99 = during.percentile(0.5) / 1000, during.percentile(0.99) / 1000
    scenario.add(
        **{
            "sessions": f"{n:,}",
            "measure": (
                f"live, {live['ticks']} runs of {live['slices']} slices to "
                f"{2 * live['sockets_of']:,} sockets"
            ),
            "CPU us/session": live["excess_us_per_session"],
            "slice ms": live["tick_ms"],
            "server cores tick / quiet": f"{live['tick_cores']:.2f} / {live['quiet_cores']:.2f}",
            "chat p50 quiet / tick ms": _fmt_pair(q50, d50),
            "chat p99 quiet / tick ms": _fmt_pair(q99, d99),
            "p99 tick/quiet": d99 / q99 if q99 else float("nan"),
        }
    )
    scenario.extra[str(n)] = {
        "in_process": {k: inproc[k] for k in ("tick_cpu", "read_cpu", "tick_lag", "read_lag")},
        "read_lag_ms": statistics.median(inproc["read_lag"]) * 1000,
        "live": {
            "slice_runs": live["ticks"],
            "slices": live["slices"],
            "excess_us_per_session_by_worker": live["excess_us_per_session_by_worker"],
            "generator_cores": live["generator_cores"],
            "chat_sent": live["chat_sent"],
            "chat_quiet": quiet.summary_ms(),
            "chat_during_tick": during.summary_ms(),
            "chat_ticking_sent_in_a_slice_run": live["in_slices"].summary_ms(),
            "chat_ticking_sent_between_slice_runs": live["between_slices"].summary_ms(),
            "connect_s": live["connect_s"],
            "generator_processes": live["generators"],
        },
    }


def _add_targets(
    scenario: report.Scenario,
    results: dict[int, tuple[dict[str, Any], dict[str, Any]]],
    smoke: bool,
) -> None:
    n = max(results)
    inproc, live = results[n]
    us = statistics.median(inproc["tick_cpu"]) * 1e6 / n
    q99, d99 = live["quiet"].percentile(0.99), live["during"].percentile(0.99)
    ratio = d99 / q99 if q99 else float("nan")
    scenario.targets += [
        report.Target(
            "CPU per session",
            f"<= {TARGET_US_PER_SESSION:g} us at 10,000 sessions: the leader's tick in process, "
            "CPU of a whole interval's slices / N (median of the rounds)",
            f"{us:.1f} us at {n:,} sessions",
            None if smoke else us <= TARGET_US_PER_SESSION and n >= 10_000,
        ),
        report.Target(
            "chat p99 during a distance tick",
            f"<= {TARGET_P99_RATIO:g}x the quiet p99 ({WORKERS} workers): chat delivery p99 "
            "while the tick runs / at the same chat rate while the tick sends nothing, same "
            "deployment, at the largest size",
            f"{ratio:.2f}x ({d99 / 1000:.1f} ms ticking / {q99 / 1000:.1f} ms quiet) at "
            f"{n:,} sessions",
            None if smoke else ratio <= TARGET_P99_RATIO,
        ),
    ]
