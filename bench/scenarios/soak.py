"""Soak: chat and location at a constant offered load on a deployment started on an empty
database, round after round without a restart, watching for a slowdown as the tables fill.

The regression it guards against: prepared statements planned while the tables of a new
deployment were empty kept a sequential-scan plan as the tables grew, so that the service
slowed down until it was restarted (chat at 400 messages/s: p50 5.9 -> 16 -> 24 -> 40 ms
over four 30 s rounds, 53,000 sequential scans of ``chat_messages``). The PostgreSQL store
now plans every execution afresh (``plan_cache_mode = force_custom_plan`` in
``worksession.pipeline.postgres``); this scenario is what shows it, and what fails if a
statement of the hot path goes back to a plan made on the empty tables.

The sequence, on two workers, PostgreSQL and Redis:

1. ``worksession serve`` starts on an empty, freshly migrated database (the chat
   scenario's ``_fresh_database``; autovacuum off on its tables, see
   :func:`_statistics_stay_put`); live sessions are seeded (:mod:`bench.seeding`).
2. The chat pairs and the walking sessions connect; a short chat warm-up follows. Every
   statement of the hot path has now been prepared and run, on each of the servers' pooled
   connections, against ``chat_messages`` and ``session_events`` tables holding a few
   hundred rows at most: this is where a plan for empty tables would be made and kept.
3. A history of chat messages, each with its three events, is written straight into the
   database over sessions nobody connects to, as a deployment that has run for a while
   holds. Why: with the tables a few pages long, PostgreSQL reads ``chat_messages`` whole
   even with a custom plan as soon as a batch looks up more than about a quarter as many
   messages as the table has pages (measured with ``EXPLAIN`` on the store's
   ``_LOCK_SESSIONS``, ``_MESSAGES`` and ``_SENT``: on a never-analysed table of 148 pages,
   a batch of 100 message ids is a sequential scan, one of 20 an index scan; ``= ANY`` on a
   hashed array costs the same per row whatever its length, an index lookup about 8 cost
   units each). That is the right plan for a small table, and a smoke run writes too few
   messages to get past it: the history is what makes "no sequential scan" an exact
   expectation for a custom plan, while a plan made in step 2 still scans. With 50,000
   messages (854 pages) the switch comes between 100 and 200 message ids in one batch:
   the receipts of 2.5 s of chat at the smoke rate, 0.5 s at the full one, piled up behind
   a stalled worker.
4. A window without load, then the rounds: the same chat and location load for
   ``plan.rounds`` rounds.

The two loads, both open loop and both measured as their own scenarios measure them:

* chat (the chat scenario's generators, :class:`bench.scenarios.chat.ChatClient`): one
  operation is one ``chat_message`` with its ``message_delivered`` and ``message_read``
  receipts, three events persisted; the latency is delivery (intended send time to the
  provider's receipt of the message);
* location (the location scenario's walking clients,
  :class:`bench.scenarios.location.LocationClient`): one operation is one
  ``location_update`` ingested; the latency is that of the fixes that trigger a
  ``distance_update``, from the intended send time to the peer's receipt.

**Server CPU per operation** is the servers' CPU over a round (both loads and their
drains) divided by the chat messages plus the location updates it completed: the mix is
the same in every round, so the figure compares from round to round.

The database side: ``pg_stat_user_tables`` (``seq_scan``, ``seq_tup_read``,
``idx_scan``) of the five tables the hot path and the jobs touch, read before the no-load
window, before the first round and after every round. PostgreSQL (15 and later) publishes a
backend's table counters at most once a second while it is busy and within 10 s once it
is idle, so every read waits :data:`STATS_SETTLE_S` after the load for the servers'
connections to publish theirs. Between the read after round 1 and the last one,
``chat_messages`` and ``session_events`` must not be scanned sequentially at all: a
non-zero ``seq_scan`` there fails the scenario at any size, the smoke run in CI included.
Nothing else reads them meanwhile: the benchmark counts their rows with an index-only scan
(checked with ``EXPLAIN`` before each count) and reads nothing else of theirs until the
last counters are in; the distance tick is off, the hourly sweep does not come round, and
the one-second offer-expiry job reads ``work_orders`` only (the no-load window shows what
the jobs do).

Checked in every run, or the scenario fails: every chat message arrived once, in order,
with its ack and both receipts, and the database holds exactly the messages sent, all
``read``; the servers counted in every location update sent and every session row holds
its participants' last fixes; no error frame, no closed socket, no traceback in a
server's log; and the sequential-scan guard above.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench import report, servers
from bench.clients import ClientPool
from bench.machine import measured_at
from bench.processes import CpuWindow
from bench.scenarios import chat, location
from bench.seeding import LiveSession, seed_live_sessions
from bench.servers import start_in_thread

WORKERS = 2
TICK_OFF_S = "86400"
"""``WORKSESSION_DISTANCE_INTERVAL_S``: the tick (a job of its own, measured by the ticker
scenario) does not come round during the run."""
STATS_SETTLE_S = 11.0
"""After the load, before reading ``pg_stat_user_tables``: an idle backend publishes
what it counted within 10 s (``PGSTAT_IDLE_INTERVAL``)."""

TABLES = ("chat_messages", "session_events", "work_sessions", "work_orders", "work_offers")
GUARDED = ("chat_messages", "session_events", "work_sessions")
"""Scanned sequentially once they hold data: the scenario fails, at any size."""
JUDGED = GUARDED
"""The target: no sequential scan of these once the tables hold data. ``work_orders`` and
``work_offers`` are reported only (the offer-expiry job reads ``work_orders`` every
second, and a sequential scan of a small table can be the right plan)."""
COUNTERS = ("seq_scan", "seq_tup_read", "idx_scan")
SHORT = {
    "chat_messages": "messages",
    "session_events": "events",
    "work_sessions": "sessions",
    "work_orders": "orders",
    "work_offers": "offers",
}

PAIR_RATE = 4.0
"""Chat messages/s per pair: its provider sends 8 receipt frames/s, under half the
per-socket rate limit (20/s, bursts of 40), so that the receipts that follow a slow moment
stay inside the bucket."""

MAX_P50_RATIO = 1.5
"""The last round's chat delivery p50 against the first round's."""


@dataclass(frozen=True)
class Plan:
    rounds: int
    round_s: float
    chat_rate: int
    """Chat messages/s offered in every round (and in the warm-up)."""
    location_rate: int
    """Location updates/s offered in every round."""
    warmup_s: float
    """Chat before the history is written: every statement of the chat path prepared and
    run on the near-empty tables."""
    history_sessions: int
    history_messages: int
    """Chat messages written straight into the database after the warm-up, spread over
    ``history_sessions`` sessions nobody connects to, each with its three events."""
    history_ended: int
    """Ended sessions (with their orders) written with the history: ``work_sessions`` keeps
    every session ever held, and a few dozen rows are read whole by any plan."""
    chat_generators: int
    location_generators: int
    drain_s: float


FULL = Plan(
    rounds=4,
    round_s=30.0,
    chat_rate=200,
    location_rate=100,
    warmup_s=2.0,
    history_sessions=50,
    history_messages=50_000,
    history_ended=20_000,
    chat_generators=2,
    location_generators=1,
    drain_s=40.0,
)
SMOKE = Plan(
    rounds=4,
    round_s=4.0,
    chat_rate=40,
    location_rate=10,
    warmup_s=2.0,
    history_sessions=50,
    history_messages=50_000,
    history_ended=20_000,
    chat_generators=1,
    location_generators=1,
    drain_s=10.0,
)

SEQ_SCANS = f"seq scans ({'/'.join(SHORT[t] for t in TABLES)})"
COLUMNS = [
    "round",
    "chat achieved/s",
    "chat p50 ms",
    "chat p99 ms",
    "receipt p99 ms",
    "location achieved/s",
    "location p50 ms",
    "location p99 ms",
    "server CPU us/op",
    "db CPU us/op",
    "chat_messages rows",
    "session_events rows",
    SEQ_SCANS,
]

Stats = dict[str, dict[str, int]]


@dataclass
class Round:
    number: int
    seconds: float
    chat: chat.StepResult
    location: location.Step
    server_cpu_s: float
    db_cpu_s: float
    messages_rows: int
    events_rows: int
    scans: Stats
    """The counters' deltas over this round (from the read before it to the one after)."""

    @property
    def operations(self) -> int:
        return self.chat.completed + self.location.ingested

    def row(self) -> dict[str, Any]:
        delivery = self.chat.latency.summary_ms()
        receipt = self.chat.receipt.summary_ms() if self.chat.receipt else {}
        walk = self.location.latency.summary_ms()
        per_op = 1e6 / max(self.operations, 1)
        return {
            "round": self.number,
            "chat achieved/s": round(self.chat.achieved),
            "chat p50 ms": delivery["p50_ms"],
            "chat p99 ms": delivery["p99_ms"],
            "receipt p99 ms": receipt.get("p99_ms"),
            "location achieved/s": round(self.location.achieved),
            "location p50 ms": walk["p50_ms"],
            "location p99 ms": walk["p99_ms"],
            "server CPU us/op": round(self.server_cpu_s * per_op, 1),
            "db CPU us/op": round(self.db_cpu_s * per_op, 1),
            "chat_messages rows": self.messages_rows,
            "session_events rows": self.events_rows,
            SEQ_SCANS: _seq_scans(self.scans),
        }


def _seq_scans(delta: Stats) -> str:
    return "/".join(str(delta[t]["seq_scan"]) for t in TABLES)


# --- the database's counters -----------------------------------------------------------


async def _table_stats(url: str) -> Stats:
    """``seq_scan``, ``seq_tup_read`` and ``idx_scan`` of :data:`TABLES`, so far."""
    connection = await asyncpg.connect(servers.asyncpg_dsn(url))
    try:
        rows = await connection.fetch(
            "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan"
            " FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            list(TABLES),
        )
    finally:
        await connection.close()
    found = {row["relname"]: {c: int(row[c]) for c in COUNTERS} for row in rows}
    if sorted(found) != sorted(TABLES):
        raise RuntimeError(f"pg_stat_user_tables lacks {sorted(set(TABLES) - set(found))}")
    return found


async def _statistics_stay_put(url: str) -> None:
    """No autovacuum (nor its ANALYZE) on the benchmark's tables: new statistics would
    invalidate the servers' cached plans and re-plan them on the grown tables, hiding a
    plan made on the empty ones whenever autovacuum happened to come round. (The
    PostgreSQL this was written on runs with ``autovacuum = off`` anyway.)"""
    connection = await asyncpg.connect(servers.asyncpg_dsn(url))
    try:
        for table in TABLES:
            await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    finally:
        await connection.close()


async def _settled_stats(url: str) -> Stats:
    """The counters once every backend has published what the load made it count."""
    await asyncio.sleep(STATS_SETTLE_S)
    return await _table_stats(url)


def _delta(before: Stats, after: Stats) -> Stats:
    return {t: {c: after[t][c] - before[t][c] for c in COUNTERS} for t in TABLES}


COUNT_ROWS = "SELECT (SELECT count(*) FROM chat_messages), (SELECT count(*) FROM session_events)"


async def _row_counts(url: str) -> tuple[int, int]:
    """Rows in ``chat_messages`` and ``session_events``, counted over an index (one
    ``idx_scan`` each): a sequential scan here would trip the guard it serves."""
    connection = await asyncpg.connect(servers.asyncpg_dsn(url))
    try:
        async with connection.transaction():
            await connection.execute(
                "SET LOCAL enable_seqscan = off; SET LOCAL max_parallel_workers_per_gather = 0"
            )
            plan = str(await connection.fetchval("EXPLAIN (FORMAT JSON) " + COUNT_ROWS))
            if "Seq Scan" in plan:
                raise RuntimeError(f"counting the rows would scan a table sequentially: {plan}")
            record = await connection.fetchrow(COUNT_ROWS)
    finally:
        await connection.close()
    assert record is not None
    return int(record[0]), int(record[1])


HISTORY_MESSAGES = """
WITH m AS (
    INSERT INTO chat_messages (message_id, session_id, sender_id, sender_type, message_text,
        client_msg_id, seq, delivery_status, created_at, updated_at, delivered_at, read_at)
    SELECT gen_random_uuid(), w.id, w.seeker_id, 'seeker', 'history ' || n, 'h-' || n,
        3 * n - 1, 'read', now(), now(), now(), now()
    FROM work_sessions w CROSS JOIN generate_series(1, $2::int4) AS n
    WHERE w.session_id = ANY($1::uuid[])
    ORDER BY w.id, n
    RETURNING session_id, seq, message_id, message_text, client_msg_id
)
INSERT INTO session_events (session_id, seq, kind, data, created_at)
SELECT m.session_id, m.seq + e.k, e.kind,
    CASE e.k
        WHEN 0 THEN jsonb_build_object('message_id', m.message_id, 'sender_type', 'seeker',
            'message', m.message_text, 'client_msg_id', m.client_msg_id)
        ELSE jsonb_build_object('message_id', m.message_id, 'sender_type', 'seeker',
            'status', CASE e.k WHEN 1 THEN 'delivered' ELSE 'read' END)
    END,
    now()
FROM m CROSS JOIN (VALUES (0, 'chat_message'), (1, 'message_status'), (2, 'message_status'))
    AS e(k, kind)
"""
HISTORY_ENDED = """
WITH o AS (
    INSERT INTO work_orders (seeker_id, status, details, offer_expires_at, created_at, updated_at)
    SELECT 'soakold-s' || g, 'completed', '{}', now(), now(), now()
    FROM generate_series(1, $1) g
    RETURNING id, seeker_id
)
INSERT INTO work_sessions (session_id, work_order_id, seeker_id, provider_id,
    connection_state, last_seq, created_at, updated_at, completed_at)
SELECT gen_random_uuid(), o.id, o.seeker_id, 'soakold-p' || o.id, 'completed', 1,
    now(), now(), now()
FROM o
"""

HISTORY_ROOMS = """
WITH w AS (
    UPDATE work_sessions SET chat_room_id = gen_random_uuid(), chat_started_at = now(),
        last_seq = 3 * $2::int4 + 1, updated_at = now()
    WHERE session_id = ANY($1::uuid[])
    RETURNING id, chat_room_id
)
INSERT INTO session_events (session_id, seq, kind, data, created_at)
SELECT id, 1, 'chat_ready', jsonb_build_object('chat_room_id', chat_room_id), now() FROM w
"""


async def _write_history(url: str, sessions: list[LiveSession], messages: int, ended: int) -> float:
    """``messages`` chat messages, read, over ``sessions`` (chat room, ``chat_ready``,
    then per message its ``chat_message`` and two ``message_status`` events, seqs and
    ``last_seq`` consistent), and ``ended`` completed sessions with their orders, written
    in one transaction; the seconds it took."""
    per_session = -(-messages // len(sessions))
    ids = [uuid.UUID(live.session_id) for live in sessions]
    started = time.monotonic()
    connection = await asyncpg.connect(servers.asyncpg_dsn(url))
    try:
        async with connection.transaction():
            await connection.execute(HISTORY_ROOMS, ids, per_session)
            await connection.execute(HISTORY_MESSAGES, ids, per_session)
            await connection.execute(HISTORY_ENDED, ended)
    finally:
        await connection.close()
    return time.monotonic() - started


# --- the load ----------------------------------------------------------------------------


def _chat_pairs(sessions: list[LiveSession], dep: servers.Deployment) -> list[dict[str, Any]]:
    """Pair i's seeker on worker i % 2, its provider on worker (i // 2) % 2: half of the
    pairs talk across workers through Redis, as in the location scenario."""
    return [
        {
            "session_id": live.session_id,
            "seeker_id": live.seeker_id,
            "provider_id": live.provider_id,
            "seeker_url": dep.ws_url(i % WORKERS),
            "provider_url": dep.ws_url(i // 2 % WORKERS),
            "index": i,
        }
        for i, live in enumerate(sessions)
    ]


async def _connect_chat(pool: ClientPool, pairs: list[dict[str, Any]]) -> list[int]:
    """Every pair connected with its room open; each generator's number of pairs."""
    shares = chat._shares(len(pairs), len(pool.processes))
    await pool.phase(
        [{"start": "chat", "config": {"pairs": [pairs[i] for i in share]}} for share in shares]
    )
    counts = [len(share) for share in shares]
    await pool.phase([{"connect": n} for n in counts])
    return counts


async def _connect_walks(
    pool: ClientPool, sessions: list[LiveSession], dep: servers.Deployment
) -> None:
    """Every walking session connected and anchored. The location scenario's ``_step``
    uses ``rate * PERIOD_S / 2`` sessions, which is how many were seeded: all of them."""
    await location._plan(pool, sessions, dep, {"concurrency": 16}, anchor=1)
    shares = location._share(list(range(len(sessions))), len(pool.processes))
    await location._prepare(pool, [len(share) for share in shares])


async def _round(
    number: int,
    plan: Plan,
    url: str,
    dep: servers.Deployment,
    chat_pool: ClientPool,
    chat_counts: list[int],
    walk_pool: ClientPool,
    walks: int,
    before: Stats,
) -> tuple[Round, Stats]:
    """Both loads at once for ``plan.round_s``, drained; then the rows, and the counters
    once they are published."""
    db = chat.DbBackends(servers.asyncpg_dsn(url))
    await db.start()
    server_cpu = CpuWindow(dep.group).start()
    started = time.monotonic()
    chat_step, walk_step = await asyncio.gather(
        chat._load_step(
            chat_pool,
            dep.group,
            None,
            rate=plan.chat_rate,
            duration=plan.round_s,
            drain_s=plan.drain_s,
            record=True,
            shares=chat_counts,
        ),
        location._step(
            walk_pool,
            dep,
            f"worksession, {WORKERS} workers",
            plan.location_rate,
            plan.round_s,
            walks,
            relay=False,
        ),
    )
    seconds = time.monotonic() - started
    server_cpu.stop()
    db_cpu = await db.stop()
    messages_rows, events_rows = await _row_counts(url)
    after = await _settled_stats(url)
    measured = Round(
        number=number,
        seconds=seconds,
        chat=chat_step,
        location=walk_step,
        server_cpu_s=server_cpu.seconds,
        db_cpu_s=db_cpu,
        messages_rows=messages_rows,
        events_rows=events_rows,
        scans=_delta(before, after),
    )
    return measured, after


# --- the scenario ------------------------------------------------------------------------


def _deltas_text(delta: Stats, tables: tuple[str, ...]) -> str:
    return ", ".join(
        f"{t} {delta[t]['seq_scan']:,} (seq_tup_read {delta[t]['seq_tup_read']:,}, "
        f"idx_scan {delta[t]['idx_scan']:,})"
        for t in tables
    )


def _guard(delta: Stats, rounds: list[Round]) -> None:
    """The CI guard: a sequential scan of the chat tables once they hold data."""
    scanned = {t: delta[t]["seq_scan"] for t in GUARDED if delta[t]["seq_scan"]}
    if scanned:
        first = rounds[0]
        trend = "; ".join(
            f"round {r.number}: {_seq_scans(r.scans)}, chat p50/p99 "
            f"{r.chat.latency.percentile(0.5) / 1000:.1f}/"
            f"{r.chat.latency.percentile(0.99) / 1000:.1f} ms"
            for r in rounds
        )
        raise RuntimeError(
            f"sequential scans after round 1, when chat_messages held "
            f"{first.messages_rows:,} rows and session_events {first.events_rows:,}: "
            f"{_deltas_text(delta, TABLES)}. Per round ({SEQ_SCANS}): {trend}. A statement "
            "runs a plan made for empty tables (see plan_cache_mode in "
            "worksession.pipeline.postgres)"
        )


async def run(context: report.Context) -> report.Scenario:
    plan = SMOKE if context.smoke else FULL
    source = measured_at()
    pairs_n = max(1, math.ceil(plan.chat_rate / PAIR_RATE))
    walks_n = max(1, round(plan.location_rate * location.PERIOD_S / 2))
    url = await chat._fresh_database(context.postgres_url)
    rounds: list[Round] = []
    snapshots: list[Stats] = []
    history_s = math.nan
    idle: Stats = {}
    try:
        await _statistics_stay_put(url)
        with contextlib.ExitStack() as running:
            async with contextlib.AsyncExitStack() as stack:
                chat_pool = ClientPool(
                    "bench.scenarios.chat:Generator", [{}] * plan.chat_generators
                )
                walk_pool = ClientPool(
                    "bench.scenarios.location:LocationClient", [{}] * plan.location_generators
                )
                # The servers start on the empty database; the rows come afterwards.
                dep, _, _ = await asyncio.gather(
                    start_in_thread(
                        running,
                        servers.worksession(
                            url,
                            context.redis_url,
                            context.log_dir,
                            workers=WORKERS,
                            distance_interval_s=TICK_OFF_S,
                        ),
                    ),
                    stack.enter_async_context(chat_pool),
                    stack.enter_async_context(walk_pool),
                )
                chat_sessions = await seed_live_sessions(url, pairs_n, "soakchat")
                walk_sessions = await seed_live_sessions(url, walks_n, "soakwalk")
                history = await seed_live_sessions(url, plan.history_sessions, "soakhist")
                chat_counts = await _connect_chat(chat_pool, _chat_pairs(chat_sessions, dep))
                await _connect_walks(walk_pool, walk_sessions, dep)
                await chat._load_step(
                    chat_pool,
                    dep.group,
                    None,
                    rate=plan.chat_rate,
                    duration=plan.warmup_s,
                    drain_s=plan.drain_s,
                    record=False,
                    shares=chat_counts,
                )
                history_s = await _write_history(
                    url, history, plan.history_messages, plan.history_ended
                )
                # A window without load: what the servers' own jobs do to the counters.
                idle_from = await _settled_stats(url)
                snapshots.append(await _settled_stats(url))
                idle = _delta(idle_from, snapshots[0])
                for number in range(1, plan.rounds + 1):
                    measured, after = await _round(
                        number,
                        plan,
                        url,
                        dep,
                        chat_pool,
                        chat_counts,
                        walk_pool,
                        walks_n,
                        snapshots[-1],
                    )
                    rounds.append(measured)
                    snapshots.append(after)
                # The checks below read the tables (sequentially, some of them): only
                # once the last counters are in.
                verified = await chat_pool.phase({"verify": True})
                chat._raise_on_anomalies("soak chat", verified)
                sent = {sid: n for answer in verified for sid, n in answer["sent"].items()}
                if sum(a["seen_by_provider"] for a in verified) != sum(sent.values()):
                    raise RuntimeError("soak chat: the providers did not see every message")
                await chat._check_database(url, sent)
                await location._check_stored(walk_pool, url)
                await chat_pool.phase({"stop": True})
                await walk_pool.phase({"op": "drop"})
                if tracebacks := dep.tracebacks():
                    raise RuntimeError(f"the server logged tracebacks: {tracebacks[0][-2000:]}")
    finally:
        await servers.drop_database(context.postgres_url, url)
    after_first = _delta(snapshots[1], snapshots[-1])
    _guard(after_first, rounds)
    return _scenario(context, plan, rounds, snapshots, after_first, idle, source, history_s)


def _targets(smoke: bool, rounds: list[Round], after_first: Stats) -> list[report.Target]:
    first, last = rounds[0], rounds[-1]
    p50_first = first.chat.latency.percentile(0.5) / 1000
    p50_last = last.chat.latency.percentile(0.5) / 1000
    p99_first = first.chat.latency.percentile(0.99) / 1000
    p99_last = last.chat.latency.percentile(0.99) / 1000
    ratio = p50_last / p50_first
    return [
        report.Target(
            "no slowdown",
            f"last round's chat delivery p50 <= {MAX_P50_RATIO:g}x the first round's, same "
            "offered load, no restart",
            f"p50 {p50_first:.1f} -> {p50_last:.1f} ms ({ratio:.2f}x), p99 {p99_first:.1f} -> "
            f"{p99_last:.1f} ms over {len(rounds)} rounds",
            None if smoke else ratio <= MAX_P50_RATIO,
        ),
        report.Target(
            "no sequential scans",
            "seq_scan 0 on chat_messages, session_events and work_sessions from the end of "
            "round 1 to the end",
            f"seq_scan after round 1: {_deltas_text(after_first, TABLES)}",
            None if smoke else all(after_first[t]["seq_scan"] == 0 for t in JUDGED),
        ),
    ]


def _scenario(
    context: report.Context,
    plan: Plan,
    rounds: list[Round],
    snapshots: list[Stats],
    after_first: Stats,
    idle: Stats,
    source: dict[str, Any],
    history_s: float,
) -> report.Scenario:
    scenario = report.Scenario(
        name="soak",
        title="Soak: chat and location at a constant load on a filling database",
        description=_description(plan),
        columns=COLUMNS,
    )
    scenario.add(round=f"no load, {STATS_SETTLE_S:g} s", **{SEQ_SCANS: _seq_scans(idle)})
    for measured in rounds:
        scenario.add(**measured.row())
    scenario.targets = _targets(context.smoke, rounds, after_first)
    scenario.extra = {
        "plan": dict(plan.__dict__),
        "rounds": [
            {
                **measured.row(),
                "seconds": round(measured.seconds, 2),
                "chat_completed": measured.chat.completed,
                "location_ingested": measured.location.ingested,
                "location_latency_samples": measured.location.latency.count,
                "server_cpu_s": measured.server_cpu_s,
                "db_cpu_s": measured.db_cpu_s,
                "table_counters_delta": measured.scans,
            }
            for measured in rounds
        ],
        "table_counters": {
            "no_load_window": idle,
            "before_round_1": snapshots[0],
            "after_round_1": snapshots[1],
            "end": snapshots[-1],
            "delta_after_round_1": after_first,
        },
        "history_written_s": round(history_s, 2),
        "measured_at": source,
    }
    return scenario


def _description(plan: Plan) -> str:
    pairs = max(1, math.ceil(plan.chat_rate / PAIR_RATE))
    walks = max(1, round(plan.location_rate * location.PERIOD_S / 2))
    return (
        f"`worksession serve` on {WORKERS} workers, started on an empty, freshly migrated "
        "PostgreSQL database with Redis (autovacuum off on its tables, so that no ANALYZE "
        "re-plans the servers' statements behind the benchmark's back); live sessions are "
        "seeded and connected, and a "
        f"{plan.warmup_s:g} s chat warm-up runs every statement of the hot path on the "
        "near-empty tables, where a plan for empty tables would be made. Then "
        f"{plan.history_messages:,} chat messages with their three events each are written "
        f"straight into the database over {plan.history_sessions} sessions nobody "
        "connects to (a deployment's history): below a few hundred pages, PostgreSQL "
        "rightly reads `chat_messages` whole even with a custom plan once a batch looks "
        "up more messages than about a quarter of its pages, so without a history a short "
        "run could not expect zero sequential scans. Then a window without load (the "
        "servers' own jobs only: the one-second offer expiry; the distance tick is off) "
        f"and {plan.rounds} rounds of {plan.round_s:g} s of the same load with no "
        f"restart: **chat** at {plan.chat_rate:,} messages/s over {pairs:,} pairs (the "
        "chat scenario's generators; pair i's seeker on worker i % 2, its provider on "
        "worker (i // 2) % 2; one operation is a `chat_message` with its "
        "`message_delivered` and `message_read` receipts; latency is delivery, from the "
        "intended send time to the provider's receipt; *receipt p99* to the seeker seeing "
        f"`read`) and **location** at {plan.location_rate:,} updates/s from {2 * walks:,} "
        f"sockets of {walks:,} walking sessions (the location scenario's clients, a fix "
        f"every {location.PERIOD_S:g} s per socket; latency is that of the fixes that "
        "trigger a `distance_update`, to the peer's receipt), both open loop. **Server CPU "
        "us/op** is the servers' CPU over the round, drains included, per chat message or "
        "location update completed (the mix is the same in every round); *db CPU* the "
        "PostgreSQL backends of the benchmark's database over the same window. *Rows* are "
        "counted after each round's drain (index-only scans), history included. *Seq "
        "scans* are the `pg_stat_user_tables.seq_scan` deltas of chat_messages/"
        "session_events/work_sessions/work_orders/work_offers over the window, read "
        f"{STATS_SETTLE_S:g} s after its load (PostgreSQL publishes a backend's counters "
        "within 10 s once it is idle); the targets' *measured* give every table's "
        "`seq_scan`, `seq_tup_read` and `idx_scan` delta from the read after round 1 to the "
        "last one (`idx_scan` includes the benchmark's one counting scan of chat_messages "
        "and session_events per round). **Any sequential scan of chat_messages or "
        "session_events after round 1 fails the scenario**, at every size (CI's smoke run "
        "included), as do a lost, duplicated or reordered message, a location update not "
        "counted in or not stored, an error frame, a closed socket or a server traceback."
    )
