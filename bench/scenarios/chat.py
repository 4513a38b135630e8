"""Chat relay: persisted chat messages with delivered/read receipts, against a bare relay.

Two halves, measured in one run on one machine:

* the baseline, :mod:`bench.relay` (1 and 2 worker processes): one operation is a round
  trip, a frame that one socket of a pair sends, the relay forwards to its peer and the
  peer echoes back;
* ``worksession`` on PostgreSQL + Redis (1 worker; 2 workers with both sockets of a pair on
  one worker; 2 workers with the seeker on worker 0 and the provider on worker 1): one
  operation is one chat message with both receipts.

Both are driven open loop: message ``k`` of a step is due at ``start + k / rate`` and
carries that intended time, so a server (or generator) that falls behind shows up as
latency instead of slowing the arrivals down. Every message is checked: a run that lost,
duplicated or reordered anything raises instead of reporting numbers.

The generator classes below run in load-generator processes (:mod:`bench.client`); ``run``
runs in the benchmark process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import case, func, select
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench import report, servers
from bench.clients import ClientPool
from bench.latency import Histogram
from bench.processes import CpuWindow, ProcessGroup, cpu_seconds
from bench.seeding import seed_live_sessions
from bench.wsclient import open_relay, open_socket
from worksession.kit.db import Database
from worksession.models import ChatMessage, WorkSession

CONNECT_CONCURRENCY = 50
MAX_ERRORS_KEPT = 20
START_DELAY_S = 0.3
"""Between the parent's go and the first message: every generator gets its phase first."""
ROOM_TIMEOUT_S = 60.0
BURST = 64
"""Most sends a late generator makes before it lets its readers run."""

T = TypeVar("T")

STATE_FRAMES = ("distance_update", "peer_presence")
"""Ephemeral frames (no seq) a participant may get at any time: the latest state, not part
of what this scenario counts."""


# --- the open-loop schedule (generator side) ---------------------------------------------


class Step:
    """What one generator process counts during one load step."""

    def __init__(self, expected: int, record: bool) -> None:
        self.expected = expected
        self.record = record
        self.completed = 0
        self.latency = Histogram()
        self.receipt = Histogram()
        self.last_done = 0.0
        self.done = asyncio.Event()
        if expected == 0:
            self.done.set()

    def complete(self, now: float) -> None:
        self.completed += 1
        self.last_done = now
        if self.completed >= self.expected:
            self.done.set()


async def open_loop(
    start_at: float, rate: float, count: int, send: Callable[[int, float], Awaitable[None]]
) -> None:
    """Call ``await send(k, intended)`` for k in 0..count-1 at ``start_at + k / rate``;
    late sends go out at once with their original intended time."""
    k = 0
    while k < count:
        delay = start_at + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        burst = 0
        while k < count and start_at + k / rate <= now and burst < BURST:
            await send(k, start_at + k / rate)
            k += 1
            burst += 1
        if burst == BURST:
            await asyncio.sleep(0)  # a late generator still reads its sockets meanwhile


class Checks:
    """Anomalies seen by a generator: any one of them fails the scenario."""

    def __init__(self) -> None:
        self.count = 0
        self.kept: list[str] = []

    def fail(self, what: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_ERRORS_KEPT:
            self.kept.append(what)


async def _map_limited(
    call: Callable[[dict[str, Any]], Awaitable[T]], items: list[dict[str, Any]]
) -> list[T]:
    """``call`` on every item, at most CONNECT_CONCURRENCY at a time, results in order."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(item: dict[str, Any]) -> T:
        async with gate:
            return await call(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


# --- the bare relay's generator ----------------------------------------------------------


SYNC = "sync"


class RelayClient:
    """Pairs of sockets on the relay: ``a`` sends ``"<k> <intended>"``, ``b`` echoes it."""

    def __init__(self) -> None:
        self.pairs: list[tuple[ClientConnection, ClientConnection]] = []
        self.readers: list[asyncio.Task[None]] = []
        self.outstanding: set[int] = set()
        self.synced: dict[ClientConnection, asyncio.Event] = {}
        self.checks = Checks()
        self.step = Step(0, False)
        self.closing = False

    async def setup(self, config: dict[str, Any]) -> dict[str, Any]:
        async def pair(entry: dict[str, Any]) -> tuple[ClientConnection, ClientConnection]:
            first, second = 2 * entry["index"], 2 * entry["index"] + 1
            return (
                await open_relay(entry["url"], entry["pair"], first),
                await open_relay(entry["url"], entry["pair"], second),
            )

        self.pairs = await _map_limited(pair, config["pairs"])
        for a, b in self.pairs:
            self.readers.append(asyncio.create_task(self._echo(b)))
            self.readers.append(asyncio.create_task(self._returns(a)))
        await asyncio.gather(*(self._synchronise(a) for a, _ in self.pairs))
        return {"sockets": 2 * len(self.pairs)}

    async def _synchronise(self, a: ClientConnection) -> None:
        """A frame that reaches the relay before the peer is filed under the pair is
        dropped: send one until it comes back, so that no measured frame can be."""
        back = self.synced[a] = asyncio.Event()
        for _ in range(100):
            await a.send(SYNC)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(back.wait(), 0.1)
                return
        raise RuntimeError("a relay pair never got its peer")

    async def _echo(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                await ws.send(frame)
        except ConnectionClosed:
            pass
        if not self.closing:
            self.checks.fail("relay socket closed during the run")

    async def _returns(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                now = time.monotonic()
                if frame == SYNC:
                    self.synced[ws].set()
                    continue
                k_text, intended_text = str(frame).split(" ", 1)
                k = int(k_text)
                if k not in self.outstanding:
                    self.checks.fail(f"round trip {k} came back twice or was never sent")
                    continue
                self.outstanding.discard(k)
                if self.step.record:
                    self.step.latency.record(now - float(intended_text))
                self.step.complete(now)
        except ConnectionClosed:
            pass
        if not self.closing:
            self.checks.fail("relay socket closed during the run")

    async def phase(self, params: dict[str, Any]) -> dict[str, Any]:
        count = int(params["rate"] * params["duration"])
        self.step = step = Step(count, params["record"])
        base = params["first_k"]

        async def send(k: int, intended: float) -> None:
            self.outstanding.add(base + k)
            with contextlib.suppress(ConnectionClosed):  # reported by the reader
                await self.pairs[k % len(self.pairs)][0].send(f"{base + k} {intended:.6f}")

        await open_loop(params["start_at"], params["rate"], count, send)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(step.done.wait(), params["drain_s"])
        return {
            "sent": count,
            "completed": step.completed,
            "last_done": step.last_done,
            "latency": step.latency.to_json(),
            "lost": len(self.outstanding),
            "anomalies": self.checks.count,
            "errors": self.checks.kept,
        }

    async def teardown(self) -> None:
        self.closing = True
        await asyncio.gather(
            *(ws.close() for pair in self.pairs for ws in pair), return_exceptions=True
        )
        for reader in self.readers:
            reader.cancel()


# --- the chat generator ------------------------------------------------------------------


@dataclass(slots=True)
class Sent:
    """One chat message, from its seeker's point of view."""

    intended: float
    acked: bool = False
    delivered: bool = False


@dataclass
class ChatPair:
    session_id: str
    seeker: ClientConnection
    provider: ClientConnection
    sent: int = 0
    """Messages this seeker has sent; the next one's index."""
    provider_next: int = 0
    """The index the provider must see next: anything else is a gap, a duplicate or a
    reordering."""
    seeker_seq: int = 0
    provider_seq: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    provider_ready: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[int, Sent] = field(default_factory=dict)
    """Index -> message whose ``read`` the seeker has not seen yet."""
    by_id: dict[str, int] = field(default_factory=dict)
    """message_id -> index, learnt from the seeker's ack."""


class ChatClient:
    """Seeker and provider sockets of live sessions: the seeker sends chat messages, the
    provider answers each with ``message_delivered`` and ``message_read``."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.pairs: list[ChatPair] = []
        self.readers: list[asyncio.Task[None]] = []
        self.checks = Checks()
        self.step = Step(0, False)
        self.closing = False

    async def setup(self, config: dict[str, Any]) -> dict[str, Any]:
        self.entries = config["pairs"]
        return {"sockets": 0}

    async def _connect(self, wanted: int) -> None:
        """Connect this process's next pairs until ``wanted`` are, each with its room
        open: before the measurement, so that every measured message is the same work
        (the first message of a session would open the room as well)."""

        async def pair(entry: dict[str, Any]) -> ChatPair:
            seeker, _ = await open_socket(
                entry["seeker_url"],
                "seeker",
                servers.token(entry["seeker_id"], "seeker"),
                2 * entry["index"],
            )
            provider, _ = await open_socket(
                entry["provider_url"],
                "provider",
                servers.token(entry["provider_id"], "provider"),
                2 * entry["index"] + 1,
            )
            return ChatPair(entry["session_id"], seeker, provider)

        added = await _map_limited(pair, self.entries[len(self.pairs) : wanted])
        for p in added:
            self.readers.append(asyncio.create_task(self._seeker(p)))
            self.readers.append(asyncio.create_task(self._provider(p)))
            await p.seeker.send(json.dumps({"type": "start_chat", "session_id": p.session_id}))
        try:
            for p in added:
                await asyncio.wait_for(p.ready.wait(), ROOM_TIMEOUT_S)
                await asyncio.wait_for(p.provider_ready.wait(), ROOM_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"a chat room never became ready: {self.checks.kept}") from None
        self.pairs.extend(added)

    def _seq(self, p: ChatPair, frame: dict[str, Any], seeker: bool) -> None:
        """Each participant sees every event of its session (contract 1.1, receipts
        included): seqs go up by exactly one on both sockets."""
        seq = frame.get("seq")
        if not isinstance(seq, int):
            self.checks.fail(f"{frame['type']} without a seq")
            return
        if seeker:
            if seq != p.seeker_seq + 1:
                self.checks.fail(f"seeker saw seq {seq} after {p.seeker_seq}")
            p.seeker_seq = seq
        else:
            if seq != p.provider_seq + 1:
                self.checks.fail(f"provider saw seq {seq} after {p.provider_seq}")
            p.provider_seq = seq

    async def _seeker(self, p: ChatPair) -> None:
        try:
            async for raw in p.seeker:
                now = time.monotonic()
                frame = json.loads(raw)
                kind = frame["type"]
                if kind == "message_status_update":
                    self._seq(p, frame, seeker=True)
                    self._status(p, frame, now)
                elif kind == "chat_message_ack":
                    self._seq(p, frame, seeker=True)
                    index = int(frame["client_msg_id"].rsplit("-", 1)[1])
                    message = p.pending.get(index)
                    if message is None or message.acked:
                        self.checks.fail(f"ack for message {index} not pending or repeated")
                        continue
                    message.acked = True
                    p.by_id[frame["message_id"]] = index
                elif kind == "chat_ready":
                    self._seq(p, frame, seeker=True)
                    p.ready.set()
                elif kind == "error":
                    self.checks.fail(f"seeker got error {frame.get('code')}")
                elif kind not in STATE_FRAMES:
                    self.checks.fail(f"seeker got an unexpected {kind}")
        except ConnectionClosed as closed:
            if not self.closing:
                self.checks.fail(f"seeker socket closed ({closed.rcvd})")

    def _status(self, p: ChatPair, frame: dict[str, Any], now: float) -> None:
        index = p.by_id.get(frame["message_id"])
        message = None if index is None else p.pending.get(index)
        if index is None or message is None:
            self.checks.fail("status update for a message not pending")
            return
        if frame["status"] == "delivered":
            if message.delivered:
                self.checks.fail(f"message {index} delivered twice")
            message.delivered = True
            return
        if not message.delivered:
            self.checks.fail(f"message {index} read before delivered")
        del p.pending[index]
        del p.by_id[frame["message_id"]]
        if self.step.record:
            self.step.receipt.record(now - message.intended)
        self.step.complete(now)

    async def _provider(self, p: ChatPair) -> None:
        try:
            async for raw in p.provider:
                now = time.monotonic()
                frame = json.loads(raw)
                kind = frame["type"]
                if kind == "chat_message":
                    self._seq(p, frame, seeker=False)
                    _, index_text, intended_text = frame["message"].split(" ")
                    index = int(index_text)
                    if index != p.provider_next:
                        self.checks.fail(f"provider saw message {index}, not {p.provider_next}")
                    p.provider_next = index + 1
                    if self.step.record:
                        self.step.latency.record(now - float(intended_text))
                    message_id = frame["message_id"]
                    await p.provider.send(
                        '{"type":"message_delivered","message_id":"' + message_id + '"}'
                    )
                    await p.provider.send(
                        '{"type":"message_read","message_id":"' + message_id + '"}'
                    )
                elif kind == "chat_ready":
                    self._seq(p, frame, seeker=False)
                    p.provider_ready.set()
                elif kind == "message_status_update":
                    self._seq(p, frame, seeker=False)  # its own receipts, echoed (1.1)
                elif kind == "error":
                    self.checks.fail(f"provider got error {frame.get('code')}")
                elif kind not in STATE_FRAMES:
                    self.checks.fail(f"provider got an unexpected {kind}")
        except ConnectionClosed as closed:
            if not self.closing:
                self.checks.fail(f"provider socket closed ({closed.rcvd})")

    async def phase(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("verify"):
            return {
                "sent": {p.session_id: p.sent for p in self.pairs},
                "seen_by_provider": sum(p.provider_next for p in self.pairs),
                "pending": sum(len(p.pending) for p in self.pairs),
                "anomalies": self.checks.count,
                "errors": self.checks.kept,
            }
        if "connect" in params:
            await self._connect(params["connect"])
            return {"pairs": len(self.pairs)}
        count = int(params["rate"] * params["duration"])
        self.step = step = Step(count, params["record"])
        pairs = self.pairs

        async def send(k: int, intended: float) -> None:
            p = pairs[k % len(pairs)]
            index = p.sent
            p.sent += 1
            p.pending[index] = Sent(intended)
            frame = {
                "type": "chat_message",
                "session_id": p.session_id,
                "message": f"bench {index} {intended:.6f}",
                "client_msg_id": f"m-{index}",
            }
            # A closed socket is reported by its reader; the message stays pending.
            with contextlib.suppress(ConnectionClosed):
                await p.seeker.send(json.dumps(frame))

        await open_loop(params["start_at"], params["rate"], count, send)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(step.done.wait(), params["drain_s"])
        return {
            "sent": count,
            "completed": step.completed,
            "last_done": step.last_done,
            "latency": step.latency.to_json(),
            "receipt": step.receipt.to_json(),
            "lost": sum(len(p.pending) for p in self.pairs),
            "anomalies": self.checks.count,
            "errors": self.checks.kept,
        }

    async def teardown(self) -> None:
        self.closing = True
        await asyncio.gather(
            *(ws.close() for p in self.pairs for ws in (p.seeker, p.provider)),
            return_exceptions=True,
        )
        for reader in self.readers:
            reader.cancel()


class Generator:
    """What each load-generator process runs: one relay or chat client at a time, so that
    one set of processes, started once, serves every configuration of the scenario."""

    def __init__(self) -> None:
        self.client: RelayClient | ChatClient | None = None

    async def setup(self, config: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def phase(self, params: dict[str, Any]) -> dict[str, Any]:
        if "start" in params:
            await self.teardown()
            self.client = RelayClient() if params["start"] == "relay" else ChatClient()
            return await self.client.setup(params["config"])
        if "stop" in params:
            await self.teardown()
            return {}
        assert self.client is not None
        return await self.client.phase(params)

    async def teardown(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.teardown()


# --- the benchmark side ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    generators: int
    relay_workers: tuple[int, ...]
    relay_pairs: int
    relay_rates: tuple[int, ...]
    """The relay's ladder; on ``TARGET_WORKERS`` it also runs every rate of ``chat_rates``,
    so that worksession's CPU per message can be set against the relay's at the same
    offered rate (CPU per operation falls as the rate rises)."""
    chat_deployments: tuple[tuple[int, tuple[str, ...]], ...]
    """(workers, placements) on PostgreSQL + Redis: each placement (``same``, ``cross``)
    on one deployment."""
    embedded: bool
    """Also run the embedded default (SQLite, no Redis, 1 worker) through the ladder."""
    chat_pairs: int
    """Sessions seeded per configuration: the most pairs a step may use."""
    min_pairs: int
    pair_rate: float
    """A step uses enough pairs that each carries at most this many messages/s."""
    chat_rates: tuple[int, ...]
    step_s: float
    warmup_rate: int
    drain_s: float

    def relay_ladder(self, workers: int) -> tuple[int, ...]:
        if workers != TARGET_WORKERS:
            return self.relay_rates
        return tuple(sorted(set(self.relay_rates) | set(self.chat_rates)))


TARGET_WORKERS = 2
"""The targets are read on this many workers (the embedded default's aside: 1)."""

FULL = Plan(
    generators=2,
    relay_workers=(1, 2),
    relay_pairs=100,
    relay_rates=(2_000, 4_000, 8_000, 12_000, 16_000, 20_000, 24_000, 28_000, 32_000),
    chat_deployments=((1, ("same",)), (2, ("same", "cross"))),
    embedded=True,
    chat_pairs=625,
    min_pairs=50,
    pair_rate=8.0,
    chat_rates=(50, 100, 250, 500, 1_000, 2_000, 3_000, 4_000, 5_000),
    step_s=4.0,
    warmup_rate=25,
    drain_s=40.0,
)
SMOKE = Plan(
    generators=2,
    relay_workers=(2,),
    relay_pairs=4,
    relay_rates=(200,),
    chat_deployments=((1, ("same",)), (2, ("cross",))),
    embedded=True,
    chat_pairs=8,
    min_pairs=8,
    pair_rate=8.0,
    chat_rates=(20,),
    step_s=2.0,
    warmup_rate=0,
    drain_s=10.0,
)

SATURATED_FRACTION = 0.9
SATURATED_P99_MS = 1000.0
"""A step whose achieved rate is under 90 % of the offered one, or whose p99 passes a
second, is past saturation: the next, higher, step would only measure a queue."""

COLUMNS = [
    "system",
    "workers",
    "placement",
    "pairs",
    "offered/s",
    "achieved/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "receipt p99 ms",
    "server CPU us/op",
    "db CPU us/op",
    "generator CPU us/op",
    "x relay",
]


class DbBackends:
    """CPU of the PostgreSQL backends serving the benchmark's database (not the server's
    own figure: PostgreSQL is shared with other users of the machine, so only the
    backends connected to this database are counted)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._start: dict[int, float] = {}

    async def _pids(self) -> list[int]:
        connection = await asyncpg.connect(self.dsn)
        try:
            rows = await connection.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await connection.close()
        return [row["pid"] for row in rows]

    @staticmethod
    def _cpu(pids: list[int]) -> dict[int, float]:
        found = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                found[pid] = cpu_seconds(pid)
        return found

    async def start(self) -> None:
        self._start = self._cpu(await self._pids())

    async def stop(self) -> float:
        now = self._cpu(await self._pids())
        # A backend born during the window spent all its CPU time in it.
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in now.items())


@dataclass
class StepResult:
    offered: float
    achieved: float
    completed: int
    latency: Histogram
    receipt: Histogram | None
    server_cpu_s: float
    db_cpu_s: float | None
    generator_cpu_s: float

    @property
    def saturated(self) -> bool:
        p99 = self.latency.percentile(0.99) / 1000
        return self.achieved < SATURATED_FRACTION * self.offered or p99 > SATURATED_P99_MS

    def row(self, system: str, workers: int, placement: str) -> dict[str, Any]:
        summary = self.latency.summary_ms()
        per_op = 1e6 / max(self.completed, 1)
        return {
            "system": system,
            "workers": workers,
            "placement": placement,
            "offered/s": round(self.offered),
            "achieved/s": round(self.achieved),
            "p50 ms": summary["p50_ms"],
            "p90 ms": summary["p90_ms"],
            "p99 ms": summary["p99_ms"],
            "max ms": summary["max_ms"],
            "receipt p99 ms": (
                None if self.receipt is None else self.receipt.summary_ms()["p99_ms"]
            ),
            "server CPU us/op": round(self.server_cpu_s * per_op, 1),
            "db CPU us/op": None if self.db_cpu_s is None else round(self.db_cpu_s * per_op, 1),
            "generator CPU us/op": round(self.generator_cpu_s * per_op, 1),
        }


def _shares(total: int, parts: int) -> list[list[int]]:
    """Indices 0..total-1 dealt round robin to ``parts`` generators."""
    return [list(range(i, total, parts)) for i in range(parts)]


def _raise_on_anomalies(what: str, answers: list[dict[str, Any]]) -> None:
    lost = sum(a.get("lost", 0) for a in answers)
    anomalies = sum(a["anomalies"] for a in answers)
    if lost or anomalies:
        errors = [e for a in answers for e in a["errors"]][:MAX_ERRORS_KEPT]
        raise RuntimeError(
            f"{what}: {lost} operations never completed, {anomalies} anomalies: {errors}"
        )


async def _load_step(
    pool: ClientPool,
    server: ProcessGroup,
    db: DbBackends | None,
    *,
    rate: float,
    duration: float,
    drain_s: float,
    record: bool,
    shares: list[int],
    extra: dict[str, Any] | None = None,
) -> StepResult:
    """One open-loop step of ``rate`` operations/s over every generator, each taking the
    share of the rate that its share of the pairs carries."""
    total = sum(shares)
    start_at = time.monotonic() + START_DELAY_S
    params = [
        {
            "rate": rate * share / total,
            "duration": duration,
            "start_at": start_at,
            "drain_s": drain_s,
            "record": record,
            **(extra or {}),
        }
        for share in shares
    ]
    if db is not None:
        await db.start()
    server_cpu, generator_cpu = CpuWindow(server).start(), CpuWindow(pool.group).start()
    answers = await pool.phase(params)
    server_cpu.stop()
    generator_cpu.stop()
    db_cpu = await db.stop() if db is not None else None
    _raise_on_anomalies(f"{rate}/s step", answers)
    completed = sum(a["completed"] for a in answers)
    finished = max(a["last_done"] for a in answers)
    elapsed = max(finished - start_at, duration)
    receipts = [a["receipt"] for a in answers if "receipt" in a]
    return StepResult(
        offered=rate,
        achieved=completed / elapsed,
        completed=completed,
        latency=Histogram.merged(Histogram.from_json(a["latency"]) for a in answers),
        receipt=Histogram.merged(Histogram.from_json(r) for r in receipts) if receipts else None,
        server_cpu_s=server_cpu.seconds,
        db_cpu_s=db_cpu,
        generator_cpu_s=generator_cpu.seconds,
    )


async def _relay(
    context: report.Context,
    plan: Plan,
    scenario: report.Scenario,
    pool: ClientPool,
    workers: int,
    quiet: Awaitable[object],
) -> dict[int, StepResult]:
    """The relay's steps on ``workers`` processes, by offered rate. Nothing is measured
    before ``quiet`` is done."""
    steps: dict[int, StepResult] = {}
    with servers.relay(context.log_dir, workers=workers) as relay:
        pairs = [
            {"url": relay.ws_url(i), "pair": f"p{i}", "index": i} for i in range(plan.relay_pairs)
        ]
        shares = _shares(plan.relay_pairs, plan.generators)
        await pool.phase(
            [{"start": "relay", "config": {"pairs": [pairs[i] for i in s]}} for s in shares]
        )
        await quiet
        first_k = 0
        for rate in plan.relay_ladder(workers):
            step = await _load_step(
                pool,
                relay.group,
                None,
                rate=rate,
                duration=plan.step_s,
                drain_s=plan.drain_s,
                record=True,
                shares=[len(s) for s in shares],
                extra={"first_k": first_k},
            )
            first_k += int(rate * plan.step_s) + 1
            scenario.add(**step.row("bare relay", workers, "same"), pairs=plan.relay_pairs)
            steps[rate] = step
            if step.saturated:
                break
        await pool.phase({"stop": True})
        if relay.tracebacks():
            raise RuntimeError(f"the relay logged tracebacks: {relay.tracebacks()[0][-2000:]}")
    return steps


def _deploy(
    context: report.Context, url: str, workers: int, redis_url: str | None
) -> tuple[contextlib.ExitStack, servers.Deployment]:
    """``workers`` worksession processes, running until the stack is closed. The distance
    tick is the ticker scenario's: off here, so that the CPU measured is the chat's."""
    stack = contextlib.ExitStack()
    deployment = stack.enter_context(
        servers.worksession(
            url, redis_url, context.log_dir, workers=workers, distance_interval_s="86400"
        )
    )
    return stack, deployment


async def _fresh_database(server_url: str) -> str:
    url = await servers.create_database(server_url)
    try:
        await asyncio.to_thread(servers.migrate_database, url)
    except BaseException:
        await servers.drop_database(server_url, url)
        raise
    return url


async def _check_database(url: str, sent: dict[str, int]) -> None:
    """Every message the seekers sent is a row, and every row is ``read`` (through the
    models, so that it reads PostgreSQL and SQLite alike)."""
    read = case((ChatMessage.delivery_status == "read", ChatMessage.id))
    query = (
        select(WorkSession.session_id, func.count(ChatMessage.id), func.count(read))
        .outerjoin(ChatMessage, ChatMessage.session_id == WorkSession.id)
        .where(WorkSession.session_id.in_([uuid.UUID(sid) for sid in sent]))
        .group_by(WorkSession.session_id)
    )
    db = Database(url)
    try:
        async with db.transaction() as s:
            rows = (await s.execute(query)).all()
    finally:
        await db.dispose()
    found = {str(sid): (stored, read) for sid, stored, read in rows}
    wrong = [
        f"{sid}: sent {n}, stored/read {found.get(sid)}"
        for sid, n in sent.items()
        if found.get(sid) != (n, n)
    ]
    if wrong:
        raise RuntimeError(f"database disagrees for {len(wrong)} sessions: {wrong[:5]}")


async def _chat(
    plan: Plan,
    scenario: report.Scenario,
    pool: ClientPool,
    dep: servers.Deployment,
    url: str,
    placement: str,
    relay_best: float,
    system: str,
) -> dict[int, StepResult]:
    """One placement's steps on a running deployment; the results by offered rate."""
    workers = len(dep.processes)
    sqlite = url.startswith("sqlite")
    tag = f"{'sqlite' if sqlite else 'pg'}w{workers}{placement}"
    sessions = await seed_live_sessions(url, plan.chat_pairs, tag)
    pairs = [
        {
            "session_id": live.session_id,
            "seeker_id": live.seeker_id,
            "provider_id": live.provider_id,
            "seeker_url": dep.ws_url(0 if placement == "cross" else i),
            "provider_url": dep.ws_url(1 if placement == "cross" else i),
            "index": i,
        }
        for i, live in enumerate(sessions)
    ]
    await pool.phase(
        [
            {"start": "chat", "config": {"pairs": [pairs[i] for i in share]}}
            for share in _shares(len(pairs), plan.generators)
        ]
    )
    active = 0

    async def use(wanted: int) -> list[int]:
        """Connect pairs until ``wanted`` are; each generator's count of them."""
        nonlocal active
        wanted = min(wanted, len(pairs))
        counts = [len(range(j, wanted, plan.generators)) for j in range(plan.generators)]
        if wanted > active:
            await pool.phase([{"connect": n} for n in counts])
            active = wanted
        return counts

    if plan.warmup_rate:
        await _load_step(
            pool,
            dep.group,
            None,
            rate=plan.warmup_rate,
            duration=plan.step_s,
            drain_s=plan.drain_s,
            record=False,
            shares=await use(plan.min_pairs),
        )
    # SQLite runs inside the server process: its CPU is in the server's figure.
    db = None if sqlite else DbBackends(servers.asyncpg_dsn(url))
    results: dict[int, StepResult] = {}
    for rate in plan.chat_rates:
        counts = await use(max(plan.min_pairs, math.ceil(rate / plan.pair_rate)))
        step = await _load_step(
            pool,
            dep.group,
            db,
            rate=rate,
            duration=plan.step_s,
            drain_s=plan.drain_s,
            record=True,
            shares=counts,
        )
        results[rate] = step
        row = step.row(system, workers, placement)
        row["pairs"] = active
        row["x relay"] = round(step.achieved / relay_best, 3)
        scenario.add(**row)
        if step.saturated:
            break
    verified = await pool.phase({"verify": True})
    await pool.phase({"stop": True})
    _raise_on_anomalies(f"chat {tag}", verified)
    sent = {sid: n for answer in verified for sid, n in answer["sent"].items()}
    if sum(a["seen_by_provider"] for a in verified) != sum(sent.values()):
        raise RuntimeError(f"chat {tag}: the providers did not see every message")
    await _check_database(url, sent)
    return results


DESCRIPTION = """\
**Bare relay** rows: the baseline (`bench/relay.py`, a raw ASGI app under the same uvicorn flags \
as `worksession serve`), {relay_pairs} socket pairs. One operation is a round trip: one socket \
sends a frame carrying its intended send time, the relay forwards it to the peer, the peer echoes \
it, the relay forwards it back. Latency columns are that round trip. On 2 workers both sockets of \
a pair are on the same process (the relay pairs nothing across processes). On 2 workers the \
relay's ladder also runs every rate of worksession's, so that CPU per operation can be compared \
at the same offered rate.

**worksession** rows: `worksession serve` on a fresh PostgreSQL database with Redis and live \
sessions (seeded), each with its seeker and provider connected; a step uses enough of them \
(*pairs*, at least {min_pairs}) that each carries at most {pair_rate:g} messages/s. Both sockets \
of a pair are on one worker (`same`) or the seeker on worker 0 and the provider on worker 1 \
(`cross`, so every event crosses Redis). The chat room is opened before the measurement. One \
operation is one message with both receipts: the seeker sends `chat_message` (text with its \
per-pair index and intended send time); the seeker gets `chat_message_ack`; the provider gets \
`chat_message` and answers `message_delivered` then `message_read`; the seeker gets \
`message_status_update` `delivered` then `read`, and so does the provider (contract 1.1). So 3 \
frames in, 6 frames out and 3 events persisted (the message and two receipts, each in the \
session's event log) before the frames that announce them go out. **Latency columns are \
delivery**: intended send time to the provider receiving the message; *receipt p99* is intended \
send time to the seeker seeing `read`. The distance tick is switched off (the ticker scenario \
measures it). Default rate limit (20 frames/s per socket): the provider sends 2 frames per \
message, so the pairs keep the per-socket rate far below it.

**embedded default** rows: the same, on `worksession serve` as it runs with no set-up: one worker \
on a fresh SQLite file (`WORKSESSION_DATABASE_URL=sqlite+aiosqlite:///.../bench.db`, which \
`serve` migrates itself on start), no `WORKSESSION_REDIS_URL` (the in-process broker), sessions \
seeded into the file; same ladder, same checks. SQLite runs inside the server process, so its \
work is in *server CPU* and *db CPU* is empty.

Load: open loop from {generators} generator processes splitting the pairs; message k of a step is \
due at start + k/rate, round robin over the pairs, and its latency is measured from that intended \
time. Steps of {step_s:g} s go up until one is saturated (achieved under 90 % of offered, or p99 \
over 1 s); a step ends when every operation sent in it has completed, and *achieved* is operations \
/ (last completion - step start).{warmup} **CPU us/op** is user+system CPU over the step, drain \
included, divided by the operations completed: *server* = the relay or worksession processes; *db* \
= the PostgreSQL backends connected to the benchmark's database; *generator* = the load \
generators. *x relay* = achieved / the relay's highest achieved rate on the same number of \
workers.

Checked in every run, or the scenario fails: every round trip came back exactly once; every \
provider saw its pair's messages in index order with no gap or duplicate; every seeker saw an ack, \
then `delivered`, then `read` for each message, with seqs that go up by exactly one on both \
sockets; no error frame, no closed socket; the database (PostgreSQL or the SQLite file) has \
exactly the messages sent per session, all `read`; no server logged a traceback."""


THROUGHPUT_RATIO = 0.35
CPU_RATIO = 6.0
EMBEDDED_RATIO = 0.5
POSTGRESQL, SQLITE = "PostgreSQL", "SQLite"
EMBEDDED = "embedded default"


def _cpu_us(step: StepResult) -> float:
    return step.server_cpu_s * 1e6 / max(step.completed, 1)


def _best(steps: dict[int, StepResult]) -> float:
    """The highest achieved rate of a ladder (which stops at its first saturated step: that
    step's rate, drain included, is what it sustained under overload)."""
    return max((s.achieved for s in steps.values()), default=math.nan)


def _kept_up(steps: dict[int, StepResult]) -> StepResult | None:
    """The highest step that kept up with its offered rate (not saturated)."""
    kept = [s for s in steps.values() if not s.saturated]
    return max(kept, key=lambda s: s.offered) if kept else None


def _comparable(relay: dict[int, StepResult], offered: float) -> StepResult | None:
    """The relay's step at ``offered``; failing that, its unsaturated step nearest in rate."""
    same = [s for s in relay.values() if s.offered == offered]
    if same:
        return same[0]
    candidates = [s for s in relay.values() if not s.saturated] or list(relay.values())
    if not candidates:
        return None
    return min(candidates, key=lambda s: abs(math.log(s.offered / offered)))


def _targets(
    smoke: bool,
    relay: dict[int, dict[int, StepResult]],
    chat: dict[tuple[str, int, str], dict[int, StepResult]],
) -> list[report.Target]:
    """The 2-worker targets are read on every 2-worker placement and met only if met on
    all; each measured figure comes from this run."""

    def decide(ok: bool) -> bool | None:
        return None if smoke else ok

    two = {p: s for (db, w, p), s in chat.items() if db == POSTGRESQL and w == TARGET_WORKERS}
    relay_two = relay.get(TARGET_WORKERS, {})
    relay_best = _best(relay_two)

    best = {p: _best(steps) for p, steps in two.items()}
    throughput = {p: b / relay_best for p, b in best.items()}
    throughput_text = (
        ", ".join(f"{throughput[p]:.2f}x {p}-worker ({best[p]:,.0f}/s)" for p in two)
        + f"; relay {relay_best:,.0f} round trips/s"
        if two and relay_two
        else f"not run on {TARGET_WORKERS} workers"
    )

    cpu_parts, cpu_ratios = [], []
    for p, steps in two.items():
        judged = _kept_up(steps)
        note = ""
        if judged is None:
            judged, note = steps[min(steps)], "; no step kept up: its lowest"
        against = _comparable(relay_two, judged.offered)
        if against is None:
            cpu_parts.append(f"{p}-worker: no relay step to compare with")
            cpu_ratios.append(math.nan)
            continue
        ratio = report.ratio(_cpu_us(judged), _cpu_us(against))
        cpu_ratios.append(ratio)
        cpu_parts.append(
            f"{ratio:.1f}x {p}-worker ({_cpu_us(judged):,.0f} us/message at "
            f"{judged.offered:,.0f}/s{note}; relay {_cpu_us(against):,.0f} us/round trip at "
            f"{against.offered:,.0f}/s)"
        )

    sqlite = chat.get((SQLITE, 1, "same"))
    postgresql = chat.get((POSTGRESQL, 1, "same"))
    if sqlite and postgresql:
        on_sqlite, on_postgresql = _best(sqlite), _best(postgresql)
        embedded = on_sqlite / on_postgresql
        embedded_text = (
            f"{embedded:.2f}x (SQLite {on_sqlite:,.0f}/s, PostgreSQL {on_postgresql:,.0f}/s)"
        )
    else:
        embedded = math.nan
        missing = " and ".join(
            name
            for name, ran in ((SQLITE, sqlite), (f"{POSTGRESQL} 1-worker", postgresql))
            if not ran
        )
        embedded_text = f"{missing} not run"

    return [
        report.Target(
            "throughput",
            f">= {THROUGHPUT_RATIO:g}x the bare relay's round trips/s on {TARGET_WORKERS} "
            "workers: worksession's highest achieved messages/s (each with both receipts; "
            "every 2-worker placement) / the relay's highest achieved round trips/s, both on "
            f"{TARGET_WORKERS} workers, same run",
            throughput_text,
            decide(bool(two) and all(r >= THROUGHPUT_RATIO for r in throughput.values())),
        ),
        report.Target(
            "server CPU per message",
            f"<= {CPU_RATIO:g}x the bare relay's per round trip on {TARGET_WORKERS} workers: "
            "judged at worksession's highest step that kept up with its offered rate (not "
            f"saturated), against the {TARGET_WORKERS}-worker relay's step at the same "
            "offered rate (its nearest unsaturated one if it ran none there)",
            "; ".join(cpu_parts) if cpu_parts else f"not run on {TARGET_WORKERS} workers",
            decide(bool(cpu_ratios) and all(r <= CPU_RATIO for r in cpu_ratios)),
        ),
        report.Target(
            "embedded default capacity",
            f">= {EMBEDDED_RATIO:g}x the PostgreSQL path's: highest achieved messages/s of the "
            "embedded default (SQLite, no Redis, 1 worker) / of PostgreSQL + Redis on 1 worker, "
            "same ladder and checks, each up to its first saturated step",
            embedded_text,
            decide(embedded >= EMBEDDED_RATIO),
        ),
    ]


async def run(context: report.Context) -> report.Scenario:
    plan = SMOKE if context.smoke else FULL
    scenario = report.Scenario(
        name="chat",
        title="Chat relay: messages with delivered/read receipts vs a bare relay",
        description=DESCRIPTION.format(
            **plan.__dict__,
            warmup=(
                f" Each chat placement starts with an unreported {plan.warmup_rate}/s warm-up."
                if plan.warmup_rate
                else ""
            ),
        ),
        columns=COLUMNS,
    )
    # Start-up (the database, the first worksession deployment, the generators) overlaps
    # and ends before anything is measured: a smoke run is mostly start-up time.
    database = asyncio.create_task(_fresh_database(context.postgres_url))
    deployments = plan.chat_deployments

    async def first_deployment() -> tuple[contextlib.ExitStack, servers.Deployment]:
        url = await database
        return await asyncio.to_thread(_deploy, context, url, deployments[0][0], context.redis_url)

    first = asyncio.create_task(first_deployment())
    relay: dict[int, dict[int, StepResult]] = {}
    chat: dict[tuple[str, int, str], dict[int, StepResult]] = {}
    try:
        async with ClientPool("bench.scenarios.chat:Generator", [{}] * plan.generators) as pool:
            for workers in plan.relay_workers:
                relay[workers] = await _relay(context, plan, scenario, pool, workers, first)
            relay_best = {w: _best(steps) for w, steps in relay.items()}
            url = await database
            for n, (workers, placements) in enumerate(deployments):
                stack, dep = (
                    await first
                    if n == 0
                    else await asyncio.to_thread(_deploy, context, url, workers, context.redis_url)
                )
                with stack:
                    for placement in placements:
                        chat[(POSTGRESQL, workers, placement)] = await _chat(
                            plan,
                            scenario,
                            pool,
                            dep,
                            url,
                            placement,
                            relay_best.get(workers, math.nan),
                            "worksession",
                        )
                    if dep.tracebacks():
                        raise RuntimeError(
                            f"the server logged tracebacks: {dep.tracebacks()[0][-2000:]}"
                        )
            if plan.embedded:
                chat[(SQLITE, 1, "same")] = await _embedded(
                    context, plan, scenario, pool, relay_best.get(1, math.nan)
                )
    finally:
        await asyncio.wait([first])
        if not first.cancelled() and first.exception() is None:
            first.result()[0].close()  # a no-op if it was closed in the loop
        await asyncio.wait([database])
        if not database.cancelled() and database.exception() is None:
            await servers.drop_database(context.postgres_url, database.result())
    scenario.targets = _targets(context.smoke, relay, chat)
    scenario.extra = {
        "relay_best_round_trips_per_s": {str(w): round(_best(s)) for w, s in relay.items()},
        "best_messages_per_s": {
            f"{db} {w} worker{'s' if w > 1 else ''} {p}": round(_best(s))
            for (db, w, p), s in chat.items()
        },
        "plan": dict(plan.__dict__),
    }
    return scenario


async def _embedded(
    context: report.Context,
    plan: Plan,
    scenario: report.Scenario,
    pool: ClientPool,
    relay_best: float,
) -> dict[int, StepResult]:
    """The embedded default: one ``serve`` on a fresh SQLite file without Redis, which it
    migrates itself on start, through the same ladder and checks."""
    with tempfile.TemporaryDirectory(prefix="worksession-bench-sqlite-") as directory:
        url = servers.sqlite_url(Path(directory) / "bench.db")
        stack, dep = await asyncio.to_thread(_deploy, context, url, 1, None)
        with stack:
            steps = await _chat(plan, scenario, pool, dep, url, "same", relay_best, EMBEDDED)
            if dep.tracebacks():
                raise RuntimeError(
                    f"the embedded default logged tracebacks: {dep.tracebacks()[0][-2000:]}"
                )
    return steps
