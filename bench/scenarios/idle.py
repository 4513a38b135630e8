"""Idle capacity: how many quiet sockets the service holds, at what memory and CPU.

10,000 live sessions, a seeker and a provider socket each (20,000 sockets), spread over
two workers and connected by several generator processes. Nobody sends anything; the
server still pings every socket (uvicorn, every 20 s) and the leader worker runs the
distance tick, which sends a ``distance_update`` to both sockets of every session every
30 s, a thirtieth of the sessions each second (all the seeded sessions have both
positions). Both are what an idle production deployment pays, so the defaults are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench import report, servers
from bench.clients import ClientPool
from bench.latency import Histogram
from bench.machine import measured_at
from bench.processes import CpuWindow
from bench.seeding import seed_live_sessions
from bench.servers import start_in_thread
from bench.wsclient import open_relay, open_socket
from worksession.lifespan import build_verifier

WORKERS = 2
KB = 1024
TOKEN_TTL_S = 24 * 3600

# uvicorn pings every socket every 20 s and the distance tick runs every 30 s: a window of
# 60 s holds whole periods of both, so the average does not depend on where it starts.
FULL = {
    "sessions": 10_000,
    "generators": 4,
    "concurrency": 64,
    "settle_s": 5.0,
    "window_s": 60.0,
    "relay_window_s": 20.0,
}
SMOKE = {
    "sessions": 10,
    "generators": 2,
    "concurrency": 8,
    "settle_s": 0.5,
    "window_s": 2.0,
    "relay_window_s": 1.0,
}

TARGET_KB_PER_SOCKET = 32.0
TARGET_IDLE_CPU_RATIO = 2.0
"""Idle CPU of the service, as a ratio to the bare relay's holding the same sockets."""


class IdleClient:
    """One generator process: connects its share of the sockets, then only reads."""

    def __init__(self) -> None:
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.received: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()

    async def setup(self, config: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def phase(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["op"] == "connect":
            return await self._connect_all(params)
        if params["op"] == "reset":
            self.received.clear()
            return {}
        if params["op"] == "drop":
            self._drop()
            return {}
        return {
            "open": sum(1 for ws in self.sockets if ws.close_code is None),
            "closed": dict(self.closed),
            "received": dict(self.received),
        }

    async def _connect_all(self, params: dict[str, Any]) -> dict[str, Any]:
        ws_urls: list[str] = params["ws_urls"]
        relay: bool = params["relay"]
        # Tokens are minted before the clock starts: signing is the client's cost, not the
        # server's, and would otherwise slow the connect rate down.
        verifier = build_verifier(servers.settings())
        specs = [
            (index, worker, role, verifier.issue(sub=sub, user_type=role, ttl_s=TOKEN_TTL_S), sid)
            for index, worker, role, sub, sid in params["sockets"]
        ]
        limit = asyncio.Semaphore(params["concurrency"])
        times = Histogram()
        failures: Counter[str] = Counter()
        wrong_session = 0
        first = time.monotonic()
        last = first

        async def one(index: int, worker: int, role: str, jwt: str, session_id: str) -> None:
            nonlocal last, wrong_session
            async with limit:
                started = time.monotonic()
                try:
                    if relay:
                        ws = await open_relay(ws_urls[worker], session_id, index)
                    else:
                        ws, connected = await open_socket(ws_urls[worker], role, jwt, index)
                        session = connected.get("session") or {}
                        if (session.get("session_id"), session.get("your_role")) != (
                            session_id,
                            role,
                        ):
                            wrong_session += 1
                except Exception as exc:
                    failures[type(exc).__name__] += 1
                    return
                done = time.monotonic()
            times.record(done - started)
            last = max(last, done)
            self.sockets.append(ws)
            self.readers.append(asyncio.create_task(self._read(ws)))

        await asyncio.gather(*(one(*spec) for spec in specs))
        return {
            "first": first,
            "last": last,
            "connected": len(self.sockets),
            "failures": dict(failures),
            "wrong_session": wrong_session,
            "times": times.to_json(),
        }

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self.received[json.loads(raw).get("type", "?")] += 1
        except ConnectionClosed:
            pass
        self.closed[str(ws.close_code)] += 1

    def _drop(self) -> None:
        # Dropping the connections rather than closing them one handshake at a time: the
        # measurement is over, and 5,000 close handshakes per process would take a while.
        for reader in self.readers:
            reader.cancel()
        for ws in self.sockets:
            ws.transport.abort()
        self.sockets.clear()
        self.readers.clear()
        self.closed.clear()
        self.received.clear()

    async def teardown(self) -> None:
        self._drop()


def _socket_specs(sessions: list[Any]) -> list[list[Any]]:
    """[index, worker, role, sub, session_id] per socket. Session k's seeker is on worker
    k % 2 and its provider on the other one, so each worker holds half of each role and
    one of the two tick frames of every session crosses workers."""
    specs: list[list[Any]] = []
    for k, live in enumerate(sessions):
        specs.append([2 * k, k % WORKERS, "seeker", live.seeker_id, live.session_id])
        specs.append([2 * k + 1, (k + 1) % WORKERS, "provider", live.provider_id, live.session_id])
    return specs


@dataclass
class Held:
    """What holding the sockets cost one deployment."""

    sockets: int
    connect_s: float
    connect_times: dict[str, float]
    connect_cpu_s: float
    rss_before: int
    rss_settled: int
    rss_after: int
    window_s: float
    window_cpu_s: float
    generator_cpu_s: float
    received: dict[str, int]
    timeline: list[float]

    @property
    def rss_peak(self) -> int:
        return max(self.rss_settled, self.rss_after)

    @property
    def kb_per_socket(self) -> float:
        return (self.rss_peak - self.rss_before) / KB / self.sockets

    @property
    def idle_percent(self) -> float:
        return 100 * self.window_cpu_s / self.window_s


async def _hold(
    pool: ClientPool,
    dep: servers.Deployment,
    specs: list[list[Any]],
    size: dict[str, Any],
    *,
    relay: bool,
    window_s: float,
) -> Held:
    """Connect every socket, let them settle, watch them idle for ``window_s``, drop them."""
    generators = len(pool.processes)
    share = -(-len(specs) // generators)
    await asyncio.sleep(1.0)  # let the workers finish starting up (imports, pools)
    rss_before = dep.group.rss()
    ws_urls = [dep.ws_url(w) for w in range(WORKERS)]
    connect_cpu = CpuWindow(dep.group).start()
    answers = await pool.phase(
        [
            {
                "op": "connect",
                "relay": relay,
                "ws_urls": ws_urls,
                "sockets": specs[g * share : (g + 1) * share],
                "concurrency": size["concurrency"],
            }
            for g in range(generators)
        ]
    )
    connect_cpu.stop()
    await asyncio.sleep(size["settle_s"])
    rss_settled = dep.group.rss()
    await pool.phase({"op": "reset"})
    server_cpu = CpuWindow(dep.group).start()
    generator_cpu = CpuWindow(pool.group).start()
    timeline = await _cpu_timeline(dep, window_s)
    server_cpu.stop()
    generator_cpu.stop()
    rss_after = dep.group.rss()
    counts = await pool.phase({"op": "count"})
    await pool.phase({"op": "drop"})

    what = "relay" if relay else "worksession"
    failures: Counter[str] = Counter()
    received: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    for answer in answers:
        failures.update(answer["failures"])
    for count in counts:
        received.update(count["received"])
        closed.update(count["closed"])
    connected = sum(a["connected"] for a in answers)
    wrong_session = sum(a["wrong_session"] for a in answers)
    still_open = sum(c["open"] for c in counts)
    problems = []
    if connected != len(specs):
        problems.append(f"{connected}/{len(specs)} sockets connected ({dict(failures)})")
    if wrong_session:
        problems.append(f"{wrong_session} connected frames without the socket's session")
    if still_open != len(specs):
        problems.append(f"{still_open}/{len(specs)} open after the window ({dict(closed)})")
    if tracebacks := dep.tracebacks():
        problems.append(f"{len(tracebacks)} server logs with a traceback")
    if problems:
        raise RuntimeError(f"{what}: " + "; ".join(problems))
    return Held(
        sockets=connected,
        connect_s=max(a["last"] for a in answers) - min(a["first"] for a in answers),
        connect_times=Histogram.merged(
            Histogram.from_json(a["times"]) for a in answers
        ).summary_ms(),
        connect_cpu_s=connect_cpu.seconds,
        rss_before=rss_before,
        rss_settled=rss_settled,
        rss_after=rss_after,
        window_s=window_s,
        window_cpu_s=server_cpu.seconds,
        generator_cpu_s=generator_cpu.seconds,
        received=dict(received),
        timeline=timeline,
    )


async def _cpu_timeline(dep: servers.Deployment, window_s: float) -> list[float]:
    """The servers' CPU seconds in each second of the window: the ticks show as spikes
    over the steady cost of the pings."""
    seconds: list[float] = []
    start = time.monotonic()
    previous = dep.group.cpu()
    while (elapsed := time.monotonic() - start) < window_s:
        await asyncio.sleep(min(1.0, window_s - elapsed))
        now = dep.group.cpu()
        seconds.append(round(now - previous, 3))
        previous = now
    return seconds


async def run(context: report.Context) -> report.Scenario:
    size = SMOKE if context.smoke else FULL
    source = measured_at()
    url = await servers.create_database(context.postgres_url)
    try:
        await asyncio.to_thread(servers.migrate_database, url)
        sessions = await seed_live_sessions(url, int(size["sessions"]), "idle")
        specs = _socket_specs(sessions)
        generators = [{}] * int(size["generators"])
        # One set of generators for both servers, started while the service starts (and
        # the service idles while the relay is measured, in processes the relay's figures
        # do not count): starting Python processes is most of a smoke run's time.
        with contextlib.ExitStack() as running:
            async with contextlib.AsyncExitStack() as stack:
                pool = ClientPool("bench.scenarios.idle:IdleClient", generators)
                dep, _ = await asyncio.gather(
                    start_in_thread(
                        running,
                        servers.worksession(
                            url, context.redis_url, context.log_dir, workers=WORKERS
                        ),
                    ),
                    stack.enter_async_context(pool),
                )
                with servers.relay(context.log_dir, workers=WORKERS) as bare:
                    relay = await _hold(
                        pool, bare, specs, size, relay=True, window_s=size["relay_window_s"]
                    )
                service = await _hold(
                    pool, dep, specs, size, relay=False, window_s=size["window_s"]
                )
    finally:
        await servers.drop_database(context.postgres_url, url)
    return _scenario(context, size, relay, service, len(sessions), source)


COLUMNS = [
    "server",
    "sockets",
    "connect s",
    "sockets/s",
    "connect p50 ms",
    "connect p99 ms",
    "CPU us/connect",
    "RSS before MB",
    "RSS after MB",
    "KB/socket",
    "window s",
    "idle CPU % of a core",
    "tick frames",
    "generator CPU %",
]


def _row(server: str, held: Held) -> dict[str, Any]:
    return {
        "server": server,
        "sockets": held.sockets,
        "connect s": round(held.connect_s, 2),
        "sockets/s": round(held.sockets / held.connect_s) if held.connect_s > 0 else None,
        "connect p50 ms": held.connect_times["p50_ms"],
        "connect p99 ms": held.connect_times["p99_ms"],
        "CPU us/connect": round(held.connect_cpu_s * 1e6 / held.sockets),
        "RSS before MB": round(held.rss_before / KB / KB, 1),
        "RSS after MB": round(held.rss_peak / KB / KB, 1),
        "KB/socket": round(held.kb_per_socket, 1),
        "window s": held.window_s,
        "idle CPU % of a core": round(held.idle_percent, 2),
        "tick frames": held.received.get("distance_update", 0),
        "generator CPU %": round(100 * held.generator_cpu_s / held.window_s, 2),
    }


def _scenario(
    context: report.Context,
    size: dict[str, Any],
    relay: Held,
    service: Held,
    sessions: int,
    source: dict[str, Any],
) -> report.Scenario:
    scenario = report.Scenario(
        name="idle",
        title="Idle capacity",
        description=_description(service.sockets, sessions, int(size["generators"]), size),
        columns=COLUMNS,
    )
    scenario.add(**_row(f"bare relay, {WORKERS} workers", relay))
    scenario.add(**_row(f"worksession, {WORKERS} workers", service))
    kb, idle = service.kb_per_socket, service.idle_percent
    idle_ratio = idle / relay.idle_percent if relay.idle_percent > 0 else math.inf
    scenario.targets = [
        report.Target(
            "memory per socket",
            f"<= {TARGET_KB_PER_SOCKET:g} KB per idle socket (20,000 sockets, {WORKERS} workers)",
            f"{kb:.1f} KB/socket over {service.sockets:,} sockets "
            f"(bare relay {relay.kb_per_socket:.1f} KB)",
            None if context.smoke else kb <= TARGET_KB_PER_SOCKET and service.sockets >= 20_000,
        ),
        report.Target(
            "idle CPU",
            f"<= {TARGET_IDLE_CPU_RATIO:g}x the bare relay's: the servers' CPU, as % of a core, "
            f"while the same sockets idle on {WORKERS} workers (worksession over "
            f"{service.window_s:g} s, the relay over {relay.window_s:g} s), same run",
            f"{_ratio_text(idle_ratio)} ({idle:.2f} % of a core against the relay's "
            f"{relay.idle_percent:.2f} %)",
            None if context.smoke else idle_ratio <= TARGET_IDLE_CPU_RATIO,
        ),
    ]
    scenario.extra = {
        "relay": asdict(relay),
        "worksession": asdict(service),
        "measured_at": source,
    }
    return scenario


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}x" if math.isfinite(ratio) else "no ratio (the relay used no CPU)"


def _description(sockets: int, sessions: int, generators: int, size: dict[str, Any]) -> str:
    return (
        f"{sessions:,} live sessions, each with its seeker and its provider connected: "
        f"{sockets:,} WebSockets on {WORKERS} workers ({sockets // WORKERS:,} each: one "
        "process cannot hold 20,000 sockets under the open-files hard limit of 20,000 per "
        "process). Session k's seeker is on worker k % 2 and its provider on the other one. "
        f"{generators} generator processes connect them, at most {size['concurrency']} "
        "handshakes in flight each, from several loopback source addresses. "
        "**Connect rate**: sockets divided by the time from the first connect to the last "
        "`connected` frame; a socket's connect time runs from its TCP connect to its "
        "`connected` frame, which must carry its session; CPU us/connect is the servers' CPU "
        "over the whole connect phase divided by the sockets. **RSS per socket**: the "
        "servers' resident memory with every socket connected (the larger of 'settled, "
        f"{size['settle_s']:g} s after the last connect' and 'after the window') minus "
        "their memory before the first socket, divided by the sockets. **Idle CPU**: the "
        f"servers' CPU time over a {size['window_s']:g} s window in which no client sends "
        "anything, as a percentage of one core. Defaults kept: uvicorn pings every socket "
        "every 20 s and the leader runs the distance tick, which every 30 s (a slice of the "
        "sessions each second) sends a "
        "`distance_update` to both sockets of every session (all of them have both "
        "positions), so the window holds whole periods of both; 'tick frames' counts the "
        "frames the clients received in it. Every socket must still be open after the "
        "window. Baseline: the bare relay (same uvicorn flags, so the same pings, no "
        f"application) holding the same sockets, idle over {size['relay_window_s']:g} s "
        "(one ping period)."
    )
