"""The reference client (worksession-client.js) in Chromium: against a live server, through
a TCP proxy that can kill its connections, and against a scripted socket for the ordering
rules a live server does not produce on demand (a gap, a duplicate)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.realtime.conftest import Client, Server, open_client, uid

WAIT_S = 10.0

START_CLIENT = """
async ({url, token, ttl, role, userId}) => {
  const { WorksessionClient } = await import("/client/worksession-client.js");
  window.events = []; window.states = []; window.out = [];
  const getToken = ttl ? async () => {
    const response = await fetch("/playground/api/tokens", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({user_id: userId, role, ttl_s: ttl})});
    return (await response.json()).token;
  } : undefined;
  window.client = new WorksessionClient({
    url, token, getToken, backoffInitialMs: 200,
    onEvent: (event) => window.events.push(event),
    onState: (state, detail) => window.states.push([state, detail.code ?? null]),
    onFrame: (direction, frame) => { if (direction === "out") window.out.push(frame); },
  });
  window.client.connect();
}
"""


class Proxy:
    """A TCP proxy to the server whose connections can be cut at once, as a lost network
    cuts them: no close frame, no FIN, just gone."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links.append((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()

    def kill(self) -> None:
        for downstream, upstream in self.links:
            downstream.transport.abort()
            upstream.transport.abort()
        self.links.clear()

    async def close(self) -> None:
        self.kill()
        self.server.close()
        await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()


@pytest.fixture
async def proxy(playground_server: Server) -> AsyncIterator[Proxy]:
    running = Proxy(int(playground_server.base_url.rsplit(":", 1)[1]))
    await running.start()
    try:
        yield running
    finally:
        await running.close()


async def _until(page: Any, condition: str, arg: Any = None) -> Any:
    return await page.wait_for_function(condition, arg=arg, timeout=WAIT_S * 1000)


async def _chat_texts(page: Any) -> list[str]:
    texts: list[str] = await page.evaluate(
        "window.events.filter(e => e.type === 'chat_message').map(e => e.message)"
    )
    return texts


async def _seqs(page: Any) -> list[int]:
    seqs: list[int] = await page.evaluate(
        "window.events.filter(e => typeof e.seq === 'number').map(e => e.seq)"
    )
    return seqs


@contextlib.asynccontextmanager
async def _session_with_js_seeker(
    page: Any, server: Server, ws_url: str, *, ttl: int | None = None
) -> AsyncIterator[tuple[Client, str]]:
    """The seeker on the reference client in the page, the provider on the tests' Python
    client; an order accepted: yields the provider and the session id."""
    seeker_id, provider_id = uid("seeker"), uid("provider")
    await page.goto(f"{server.base_url}/playground")
    await page.evaluate(
        START_CLIENT,
        {
            "url": f"{ws_url}/ws/work/seeker/",
            "token": server.token(seeker_id, "seeker", ttl_s=ttl or 3600),
            "ttl": ttl,
            "role": "seeker",
            "userId": seeker_id,
        },
    )
    await _until(page, "window.states.some(([s]) => s === 'open')")
    async with open_client(server, "provider", provider_id) as provider:
        order = await server.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        await provider.expect("work_request", work_id=order["work_id"])
        accepted = await provider.request(
            {"type": "work_response", "work_id": order["work_id"], "accepted": True},
            "work_accepted",
        )
        await _until(page, "window.events.some(e => e.type === 'work_accepted')")
        yield provider, accepted["session_id"]


async def _chat(provider: Client, session_id: str, text: str) -> None:
    await provider.request(
        {"type": "chat_message", "session_id": session_id, "message": text},
        "chat_message_ack",
        message=text,
    )


async def test_a_killed_socket_reconnects_resumes_and_delivers_every_event_once(
    page: Any, playground_server: Server, proxy: Proxy
) -> None:
    ws_url = f"ws://127.0.0.1:{proxy.port}"
    async with _session_with_js_seeker(page, playground_server, ws_url) as (provider, session):
        for n in range(1, 4):
            await _chat(provider, session, f"m{n}")
        await _until(page, "window.events.filter(e => e.type === 'chat_message').length === 3")
        last_before = max(await _seqs(page))

        proxy.kill()
        # Written while the seeker has no socket: they reach it through its resume.
        for n in range(4, 7):
            await _chat(provider, session, f"m{n}")
        await _until(page, "window.states.filter(([s]) => s === 'open').length === 2")
        for n in range(7, 9):
            await _chat(provider, session, f"m{n}")
        await _until(page, "window.events.filter(e => e.type === 'chat_message').length >= 8")
        await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one

        assert await _chat_texts(page) == [f"m{n}" for n in range(1, 9)]
        seqs = await _seqs(page)
        assert seqs == list(range(1, len(seqs) + 1))
        states = await page.evaluate("window.states")
        assert ["waiting", 1006] in states
        resumes = await page.evaluate("window.out.filter(f => f.type === 'resume')")
        assert [r["last_seq"] for r in resumes] == [last_before]
        # The resume was the first frame the new socket sent.
        out_types = await page.evaluate("window.out.map(f => f.type)")
        assert out_types[0] == "resume"


async def test_a_1000_close_is_final(page: Any, playground_server: Server) -> None:
    async with _session_with_js_seeker(page, playground_server, playground_server.ws_url) as (
        provider,
        session,
    ):
        await provider.request(
            {"type": "complete_session", "session_id": session}, "session_completed"
        )
        await _until(page, "window.states.some(([s]) => s === 'closed')")
        await asyncio.sleep(1.5)  # several backoff periods of 200 ms
        states = await page.evaluate("window.states")
        assert states[-1] == ["closed", 1000]
        assert [s for s, _ in states].count("connecting") == 1
        assert (await page.evaluate("window.events.map(e => e.type)"))[-1] == "session_completed"


async def test_auth_refresh_before_exp_keeps_the_socket_open(
    page: Any, playground_server: Server
) -> None:
    async with _session_with_js_seeker(
        page, playground_server, playground_server.ws_url, ttl=3
    ) as (provider, session):
        # Two and a half lifetimes of a 3 s token: without refreshes, a 4401 at the first exp.
        await asyncio.sleep(7.5)
        await _chat(provider, session, "still there?")
        await _until(page, "window.events.some(e => e.message === 'still there?')")
        states = await page.evaluate("window.states")
        assert [s for s, _ in states] == ["connecting", "open"]
        refreshed = await page.evaluate(
            "window.events.filter(e => e.type === 'auth_refreshed').length"
        )
        assert refreshed >= 2
        sent = await page.evaluate("window.out.filter(f => f.type === 'auth_refresh')")
        assert len(sent) == refreshed
        # What the client shows a debugging view never carries the token.
        assert {frame["token"] for frame in sent} == {"***"}


SCRIPTED = """
async () => {
  const { WorksessionClient } = await import("/client/worksession-client.js");
  const sid = "5f0c0000-0000-4000-8000-000000000001";
  class Scripted {
    constructor(url) { Scripted.socket = this; this.sent = []; }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code) { this.onclose({ code }); }
    deliver(frame) { this.onmessage({ data: JSON.stringify(frame) }); }
  }
  const events = [];
  const client = new WorksessionClient({
    url: "ws://scripted/ws/work/seeker/", token: "t", WebSocket: Scripted,
    onEvent: (event) => events.push(event.seq ?? event.type),
  });
  client.connect();
  await new Promise((resolve) => setTimeout(resolve, 0));
  const socket = Scripted.socket;
  const event = (seq) => ({ type: "message_status_update", session_id: sid, seq });
  socket.deliver({ type: "connected", user_type: "seeker", server_time: new Date().toISOString(),
    session: { session_id: sid, last_seq: 3 }, pending_work: [], open_orders: [] });
  const firstFrame = socket.sent[0];
  socket.deliver(event(1));
  socket.deliver(event(3));            // ahead: held until 2 arrives
  socket.deliver(event(2));            // fills the gap: 2 then 3
  socket.deliver(event(2));            // a duplicate: dropped
  const resumeId = firstFrame.request_id;
  socket.deliver({ type: "resumed", session_id: sid, last_seq: 3, request_id: resumeId });
  socket.deliver(event(5));            // a gap: held, and a resume from 3 is sent
  socket.deliver({ type: "distance_update", session_id: sid, distance_meters: 10 });
  const gapResume = socket.sent[1];
  socket.deliver(event(4));
  const ping = client.send({ type: "ping" });
  const pingId = socket.sent[socket.sent.length - 1].request_id;
  socket.deliver({ type: "pong", server_time: "x", request_id: pingId });
  const bad = client.send({ type: "cancel_connection", session_id: sid });
  const badId = socket.sent[socket.sent.length - 1].request_id;
  socket.deliver({ type: "error", code: "not_found", message: "no", request_id: badId });
  return { events, firstFrame, gapResume, pong: (await ping).type, error: (await bad).code,
           sentCount: socket.sent.length };
}
"""


async def test_ordering_holds_gaps_drops_duplicates_and_matches_replies(
    page: Any, playground_server: Server
) -> None:
    await page.goto(f"{playground_server.base_url}/playground")
    result = await page.evaluate(SCRIPTED)
    assert result["firstFrame"]["type"] == "resume"
    assert result["firstFrame"]["last_seq"] == 0
    assert result["events"] == [
        "connected",
        1,
        2,
        3,
        "resumed",
        "distance_update",
        4,
        5,
        "pong",
        "error",
    ]
    assert result["gapResume"]["type"] == "resume"
    assert result["gapResume"]["last_seq"] == 3
    assert result["pong"] == "pong"
    assert result["error"] == "not_found"
    # Two resumes, the ping and the cancel: nothing else was sent.
    assert result["sentCount"] == 4


CLOSE_CODES = """
async () => {
  const { WorksessionClient } = await import("/client/worksession-client.js");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const run = async (code, withGetToken) => {
    const urls = [];
    class Scripted {
      constructor(url) { urls.push(url); Scripted.socket = this; }
      send() {}
      close(closeCode) { this.onclose({ code: closeCode }); }
    }
    let minted = 0;
    const client = new WorksessionClient({
      url: "ws://scripted/ws/work/seeker/", token: "first", WebSocket: Scripted,
      backoffInitialMs: 10,
      getToken: withGetToken ? async () => `fresh-${++minted}` : undefined,
    });
    client.connect();
    await sleep(0);
    Scripted.socket.onclose({ code });
    await sleep(100);
    const result = { code, urls: urls.map((u) => u.split("token=")[1]), state: client.state };
    client.close();
    return result;
  };
  return [await run(1012, false), await run(1006, false), await run(1000, true),
          await run(4403, true), await run(4409, true), await run(4401, true),
          await run(4401, false)];
}
"""


async def test_which_closes_reconnect(page: Any, playground_server: Server) -> None:
    await page.goto(f"{playground_server.base_url}/playground")
    results = {(r["code"], len(r["urls"])): r for r in await page.evaluate(CLOSE_CODES)}
    # Restarts and drops: again with the same token.
    assert results[(1012, 2)]["urls"] == ["first", "first"]
    assert results[(1006, 2)]["urls"] == ["first", "first"]
    # The session ended, the wrong endpoint, replaced by a newer socket: final.
    for code in (1000, 4403, 4409):
        assert results[(code, 1)]["state"] == "closed"
    # An expired token: again only with a new one, and never without one to get.
    assert results[(4401, 2)]["urls"] == ["first", "fresh-1"]
    assert results[(4401, 1)]["state"] == "closed"


# The scripted socket on a manual clock: timers run only when the test advances it, and
# Date.now follows it, so days of a token's life pass in milliseconds. A delay is read as
# browsers read it, a 32-bit signed integer: beyond 2^31 - 1 ms it wraps and fires at once.
HARNESS = """
  const { WorksessionClient } = await import("/client/worksession-client.js");
  const realSetTimeout = window.setTimeout.bind(window);
  const flush = () => new Promise((resolve) => realSetTimeout(resolve, 0));
  const clock = { now: Date.now(), timers: new Map(), nextId: 1, delays: [] };
  window.setTimeout = (fn, ms = 0) => {
    clock.delays.push(ms);
    const id = clock.nextId++;
    clock.timers.set(id, { at: clock.now + Math.max(0, ms | 0), fn });
    return id;
  };
  window.clearTimeout = (id) => { clock.timers.delete(id); };
  Date.now = () => clock.now;
  const advance = async (ms) => {
    await flush();  // what is already due (a resolved promise) happens before any timer
    const end = clock.now + ms;
    for (let fired = 0; fired < 10000; fired++) {
      let due = null;
      for (const [id, timer] of clock.timers) {
        if (timer.at <= end && (due === null || timer.at < due[1].at)) due = [id, timer];
      }
      if (due === null) break;
      clock.timers.delete(due[0]);
      clock.now = due[1].at;
      due[1].fn();
      await flush();
    }
    clock.now = end;
    await flush();
  };
  const DAY = 86400000;
  class Scripted {
    constructor(url) { Scripted.sockets.push(this); this.url = url; this.sent = []; }
    send(text) { this.sent.push(JSON.parse(text)); }
    // As a browser does: the close event comes later, not inside close().
    close(code) { queueMicrotask(() => this.onclose({ code })); }
    serverClose(code) { this.onclose({ code }); }
    deliver(frame) { this.onmessage({ data: JSON.stringify(frame) }); }
    get token() { return decodeURIComponent(this.url.split("token=")[1]); }
  }
  Scripted.sockets = [];
  const last = () => Scripted.sockets[Scripted.sockets.length - 1];
  const sid = "5f0c0000-0000-4000-8000-000000000001";
  const connected = (session) => ({ type: "connected", user_type: "seeker",
    server_time: new Date(clock.now).toISOString(), session, pending_work: [], open_orders: [] });
  const event = (seq) => ({ type: "message_status_update", session_id: sid, seq });
  const b64 = (text) => btoa(text).replace(/=+$/, "").replace(/[+]/g, "-").replace(/[/]/g, "_");
  const jwt = (expMs) => `h.${b64(JSON.stringify({ exp: Math.floor(expMs / 1000) }))}.s`;
  const url = "ws://scripted/ws/work/seeker/";
"""


async def _scripted(page: Any, server: Server, body: str) -> Any:
    await page.goto(f"{server.base_url}/playground")
    return await page.evaluate("async () => {" + HARNESS + body + "}")


LONG_LIVED_TOKEN = """
  let asked = 0;
  const client = new WorksessionClient({ url, token: jwt(clock.now + 30 * DAY),
    WebSocket: Scripted, getToken: async () => { asked++; return jwt(clock.now + 30 * DAY); } });
  client.connect();
  await flush();
  last().deliver(connected(null));
  const refreshes = () => last().sent.filter((f) => f.type === "auth_refresh").length;
  await advance(1000);
  const atOnce = { asked, refreshes: refreshes() };
  await advance(25 * DAY);  // past the first (clamped) timer: it looked again, and waits
  const after25Days = { asked, refreshes: refreshes() };
  await advance(5 * DAY - 60000);  // a minute before exp: refreshed
  const beforeExp = { asked, refreshes: refreshes() };
  client.close();
  return { atOnce, after25Days, beforeExp,
           longest: Math.max(...clock.delays), sockets: Scripted.sockets.length };
"""


async def test_a_long_lived_token_is_refreshed_before_exp_not_at_once(
    page: Any, playground_server: Server
) -> None:
    result = await _scripted(page, playground_server, LONG_LIVED_TOKEN)
    assert result["atOnce"] == {"asked": 0, "refreshes": 0}
    assert result["after25Days"] == {"asked": 0, "refreshes": 0}
    assert result["beforeExp"] == {"asked": 1, "refreshes": 1}
    assert result["longest"] <= 2**31 - 1
    assert result["sockets"] == 1


RECONNECT_STORM = """
  const waits = [];
  const client = new WorksessionClient({ url, token: "t", WebSocket: Scripted,
    backoffInitialMs: 100, onState: (state, detail) => {
      if (state === "waiting") waits.push(detail.attempt);
    } });
  client.connect();
  await flush();
  // A server that accepts and closes at once (1011, 1008): the backoff keeps growing.
  for (let i = 0; i < 6; i++) {
    last().deliver(connected(null));
    last().serverClose(1011);
    await advance(60000);
  }
  const storm = waits.splice(0);
  // A socket that got its resume answered is a success: the next drop starts over.
  last().deliver(connected({ session_id: sid, last_seq: 0 }));
  last().deliver({ type: "resumed", session_id: sid, last_seq: 0,
                   request_id: last().sent[0].request_id });
  last().serverClose(1011);
  await advance(60000);
  // So is one that stayed open 10 s.
  last().deliver(connected(null));
  last().serverClose(1011);
  await advance(60000);
  last().deliver(connected(null));
  await advance(10000);
  last().serverClose(1011);
  client.close();
  return { storm, after: waits };
"""


async def test_a_server_closing_right_after_connected_gets_a_growing_backoff(
    page: Any, playground_server: Server
) -> None:
    result = await _scripted(page, playground_server, RECONNECT_STORM)
    assert result["storm"] == [1, 2, 3, 4, 5, 6]
    assert result["after"] == [1, 2, 1]


REFRESH_AND_CLOSE = """
  let asked = 0;
  let answer = null;
  const getToken = () => new Promise((resolve, reject) => {
    asked++;
    answer = { resolve, reject };
  });
  // A refresh whose getToken fails after close(): no retry, ever.
  const closing = new WorksessionClient({ url, token: jwt(clock.now + 120000),
    WebSocket: Scripted, getToken });
  closing.connect();
  await flush();
  last().deliver(connected(null));
  await advance(60000);
  const askedBeforeClose = asked;
  closing.close();
  answer.reject(new Error("offline"));
  await advance(600000);
  const askedAfterClose = asked;
  // A refresh that answers while the socket is down: the next connect uses that token.
  const dropped = new WorksessionClient({ url, token: jwt(clock.now + 120000),
    WebSocket: Scripted, getToken });
  dropped.connect();
  await flush();
  last().deliver(connected(null));
  await advance(60000);
  last().serverClose(1006);
  answer.resolve("fresh");
  await advance(60000);
  const reconnectedWith = last().token;
  dropped.close();
  return { askedBeforeClose, askedAfterClose, reconnectedWith };
"""


async def test_a_refresh_does_not_outlive_close_and_its_token_is_kept(
    page: Any, playground_server: Server
) -> None:
    result = await _scripted(page, playground_server, REFRESH_AND_CLOSE)
    assert result["askedBeforeClose"] == 1
    assert result["askedAfterClose"] == 1
    assert result["reconnectedWith"] == "fresh"


RESUMED_BELOW = """
  const events = [];
  // A persisted lastSeq the server never reached (restored from a backup, failed over).
  const client = new WorksessionClient({ url, token: "t", WebSocket: Scripted,
    sessionId: sid, lastSeq: 10, onEvent: (e) => events.push(e.seq ?? e.type) });
  client.connect();
  await flush();
  const socket = last();
  socket.deliver(connected({ session_id: sid, last_seq: 3 }));
  socket.deliver(event(12));  // held for a gap that will never be filled
  socket.deliver({ type: "resumed", session_id: sid, last_seq: 3,
                   request_id: socket.sent[0].request_id });
  socket.deliver(event(4));
  socket.deliver(event(5));
  socket.deliver(event(11));  // ahead again: held, not the stale 12 let through
  const result = { events, lastSeq: client.lastSeq, ahead: [...client.ahead.keys()],
                   firstResume: socket.sent[0].last_seq };
  client.close();
  return result;
"""


async def test_resumed_below_the_clients_last_seq_lowers_it(
    page: Any, playground_server: Server
) -> None:
    result = await _scripted(page, playground_server, RESUMED_BELOW)
    assert result["firstResume"] == 10
    assert result["events"] == ["connected", "resumed", 4, 5]
    assert result["lastSeq"] == 5
    assert result["ahead"] == [11]


REJECTED_TOKEN = """
  const run = async (first, minted) => {
    Scripted.sockets = [];
    const errors = [];
    const states = [];
    const client = new WorksessionClient({ url, token: first, WebSocket: Scripted,
      backoffInitialMs: 10, getToken: async () => minted,
      onState: (state, detail) => states.push([state, detail.code ?? null]),
      onError: (error) => errors.push(error.message) });
    client.connect();
    await flush();
    for (let i = 0; i < 5 && client.state !== "closed"; i++) {
      last().serverClose(4401);
      await advance(60000);
    }
    const result = { tokens: Scripted.sockets.map((s) => s.token), state: client.state,
                     last: states[states.length - 1], errors: errors.length };
    client.close();
    return result;
  };
  return [await run("same", "same"), await run("first", "fresh")];
"""


async def test_a_rejected_token_handed_out_again_stops_the_client(
    page: Any, playground_server: Server
) -> None:
    same, fresh = await _scripted(page, playground_server, REJECTED_TOKEN)
    # getToken has nothing newer than what the server refused: closed, and told.
    assert same == {"tokens": ["same"], "state": "closed", "last": ["closed", 4401], "errors": 1}
    # One new token, refused too, then the same one again: closed after the second try.
    assert fresh == {
        "tokens": ["first", "fresh"],
        "state": "closed",
        "last": ["closed", 4401],
        "errors": 1,
    }


ROBUSTNESS = """
  const errors = [];
  const onError = (error) => errors.push(error.message);
  // connect() twice: one socket.
  const twice = new WorksessionClient({ url, token: "t", WebSocket: Scripted, onError });
  twice.connect();
  twice.connect();
  await flush();
  const twiceSockets = Scripted.sockets.length;
  twice.close();
  // close() then connect() while getToken is pending: one socket, the client's own.
  Scripted.sockets = [];
  const answers = [];
  const pendingToken = new WorksessionClient({ url, WebSocket: Scripted, onError,
    getToken: () => new Promise((resolve) => answers.push(resolve)) });
  pendingToken.connect();
  await flush();
  pendingToken.close();
  pendingToken.connect();
  await flush();
  answers.forEach((resolve, i) => resolve(`token-${i}`));
  await flush();
  const pendingSockets = Scripted.sockets.length;
  const ownSocket = pendingToken.socket === last();
  pendingToken.close();
  // new WebSocket() throws: a failed attempt, with a backoff, not stuck in "connecting".
  let built = 0;
  class Throwing { constructor() { built++; throw new SyntaxError("bad url"); } }
  const throwing = new WorksessionClient({ url, token: "t", WebSocket: Throwing, onError });
  throwing.connect();
  await flush();
  const throwingState = throwing.state;
  await advance(60000);
  const throwingBuilt = built;
  throwing.close();
  const throwErrors = errors.splice(0).length;
  // The held-ahead buffer is capped: past it, dropped and resumed from lastSeq.
  Scripted.sockets = [];
  const flood = new WorksessionClient({ url, token: "t", WebSocket: Scripted, onError });
  flood.connect();
  await flush();
  last().deliver(connected({ session_id: sid, last_seq: 0 }));
  for (let seq = 2; seq <= 1001; seq++) last().deliver(event(seq));
  const heldAtCap = flood.ahead.size;
  last().deliver(event(1002));
  const heldPastCap = flood.ahead.size;
  const resumes = last().sent.filter((f) => f.type === "resume").map((f) => f.last_seq);
  flood.close();
  // An app whose onEvent throws: the error is reported, the drain goes on.
  Scripted.sockets = [];
  const seen = [];
  const clumsy = new WorksessionClient({ url, token: "t", WebSocket: Scripted, onError,
    onEvent: (e) => { seen.push(e.seq ?? e.type); if (e.seq === 2) throw new Error("app bug"); } });
  clumsy.connect();
  await flush();
  last().deliver(connected({ session_id: sid, last_seq: 0 }));
  last().deliver(event(1));
  last().deliver(event(3));
  try { last().deliver(event(2)); } catch (error) { seen.push("escaped"); }
  const clumsyErrors = errors.splice(0);
  clumsy.close();
  return { twiceSockets, pendingSockets, ownSocket, throwingState, throwingBuilt, throwErrors,
           heldAtCap, heldPastCap, resumes, seen, clumsyErrors, lastSeq: clumsy.lastSeq };
"""


async def test_the_client_survives_misuse_and_misfortune(
    page: Any, playground_server: Server
) -> None:
    result = await _scripted(page, playground_server, ROBUSTNESS)
    assert result["twiceSockets"] == 1
    assert result["pendingSockets"] == 1
    assert result["ownSocket"] is True
    assert result["throwingState"] == "waiting"
    assert result["throwingBuilt"] >= 2
    assert result["throwErrors"] >= 2
    assert result["heldAtCap"] == 1000
    assert result["heldPastCap"] == 0
    assert result["resumes"] == [0, 0]
    assert result["seen"] == ["connected", 1, 2, 3]
    assert result["clumsyErrors"] == ["app bug"]
