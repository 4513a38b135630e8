"""Issue 12: a stateful model test of the whole service on two workers.

A Hypothesis state machine drives real sockets and the internal REST API of two
``worksession serve`` processes sharing PostgreSQL and Redis, with 2 seekers and 3 providers
per example (fresh ids each time), each user with up to 2 sockets on either worker; seekers
withdraw orders too (``cancel_work`` or the internal API, *1.1*). Steps are one at a time,
except two races: two providers accepting one order at once, and a
seeker cancelling while the provider completes. After every step, once the step's answers
and every frame it fans out have arrived, it checks:

- at most one live session per user, and the database holds exactly the sessions, orders,
  offers, messages and event kinds the model expects;
- every acked chat message is stored exactly once, and nothing is stored without an ack;
- statuses only move forward (messages, sessions, orders);
- the availability flags agree with the sessions (PROTOCOL 4-5: an accept switches the
  provider's active flag and the seeker's searching flag off, a cancel both back on, a
  completion only the provider's), and an order is offered only to providers neither busy
  nor switched off, its 201 saying whom it skipped and why; a busy seeker or nobody left
  is a 409 (PROTOCOL 4, *1.1*);
- per socket and session, the ``seq`` stream. Under the 1.1 rule every persisted event
  reaches every socket of both participants (PROTOCOL 3), so what is checked is that
  ``seq`` rises by exactly one: a socket never gets a seq twice; each live frame is the
  event right after what it already has; a ``resume`` replays, in order, exactly the events
  after ``last_seq`` it has not had, then ``resumed`` with the log's last seq; and a socket
  that was open for a session ends with all of them, closed with 1000 after the terminal
  event. Each frame is of the type its role's rendering has, and a chat frame carries the
  logged text and sender role (the ack too, *1.1*) and no user id.

Only frames expected are waited for; frames not expected fail the next check that sees
them. Sizes: ``WORKSESSION_MODEL_EXAMPLES`` and ``WORKSESSION_MODEL_STEPS`` (the default
runs in well under a minute); ``WORKSESSION_MODEL_SHRINK=0`` skips shrinking a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from websockets.asyncio.client import connect

from tests.realtime.conftest import Server
from tests.realtime.two_workers import Cluster, needs_postgresql_and_redis, two_workers_running
from tests.scaleout.model_world import (
    EPHEMERAL,
    RANK,
    TERMINAL,
    WAIT_S,
    Message,
    Order,
    Replay,
    Session,
    Sock,
    User,
    distance_m,
    frame_type,
)
from worksession.kit.db import Database

pytestmark = needs_postgresql_and_redis

EXAMPLES = int(os.environ.get("WORKSESSION_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("WORKSESSION_MODEL_STEPS", "50"))
SHRINK = os.environ.get("WORKSESSION_MODEL_SHRINK", "1") != "0"
"""Shrinking a failure reruns many examples against the servers (minutes); 0 reports the
first failing example as found."""

T = TypeVar("T")

BASE = (12.9716, 77.5946)
SEEKER_SPOTS = [BASE, (BASE[0] + 0.045, BASE[1])]
"""The seeker at home, or 5 km north."""
PROVIDER_SPOTS = [
    (BASE[0] + 0.045, BASE[1]),
    (BASE[0] + 0.0018, BASE[1]),
    (BASE[0] + 0.0002, BASE[1]),
    BASE,
]
"""Far, about 200 m, about 22 m, and on the spot from home: every distance between two
spots is clear of the 300 m and 50 m thresholds."""
NEARBY_M, ARRIVED_M = 300.0, 50.0
ANY_NOW_AND_THEN = [False, False, False, False, True]
"""One draw in five picks among all candidates (which may be refused), not the likely ones."""
MEDIUMS = [{}, {"call": "9876543210"}, {"whatsapp": "9123456789", "telegram": "8123456789"}]


class Loop:
    """One event loop on a thread of its own for the whole test: sockets outlive a step,
    and Hypothesis rules are plain functions."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


STATS: Counter[str] = Counter()


class World:
    """What the model machine needs across examples: the cluster, the loop, the database."""

    cluster: Cluster
    loop: Loop
    db: Database


class ServiceModel(RuleBasedStateMachine):
    world: World

    def __init__(self) -> None:
        super().__init__()
        tag = uuid.uuid4().hex[:8]
        self.seekers = [User(f"m{tag}-s{i}", "seeker") for i in range(2)]
        self.providers = [User(f"m{tag}-p{i}", "provider") for i in range(3)]
        self.users = self.seekers + self.providers
        self.sockets: list[Sock] = []
        self.orders: dict[int, Order] = {}
        self.sessions: dict[str, Session] = {}
        self.messages: dict[str, Message] = {}
        self.provider_active: dict[str, bool | None] = {u.id: None for u in self.providers}
        self.seeker_searching: dict[str, bool | None] = {u.id: None for u in self.seekers}
        self.last_ranks: dict[tuple[str, str], int] = {}
        self.logs: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.requests = 0
        self.stored_messages = 0
        STATS["examples"] += 1

    # --- plumbing ----------------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.world.loop.run(coroutine)

    @staticmethod
    def pick(data: st.DataObject, items: Sequence[T]) -> T | None:
        """One of ``items``, or None when there are none. Always one draw of the same
        kind, whatever the state: a race's outcome changes the state from run to run,
        and Hypothesis needs the same draws to replay and shrink an example."""
        index = data.draw(st.integers(0, 255))
        return items[index % len(items)] if items else None

    @staticmethod
    def now_and_then(data: st.DataObject) -> bool:
        """True one draw in five: pick among all candidates (which may be refused), not
        the likely ones."""
        return data.draw(st.sampled_from(ANY_NOW_AND_THEN))

    def rid(self) -> str:
        self.requests += 1
        return f"r{self.requests}"

    def server(self, worker: int) -> Server:
        return self.world.cluster.servers[worker]

    def open_sockets(self, user: User | None = None) -> list[Sock]:
        return [s for s in self.sockets if s.open and (user is None or s.user is user)]

    def live_session_of(self, user: User) -> Session | None:
        live = [s for s in self.sessions.values() if s.live and s.participant(user.role) is user]
        assert len(live) <= 1
        return live[0] if live else None

    def expect_other(self, user: User, type_: str, work_id: int) -> None:
        for sock in self.open_sockets(user):
            sock.expected_others[(type_, work_id)] += 1

    async def internal(self, worker: int, method: str, path: str, body: Any = None) -> Any:
        server = self.server(worker)
        headers = {"Authorization": f"Bearer {server.token('svc', 'service')}"}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT_S) as http:
            return await http.request(method, path, json=body, headers=headers)

    async def ask(self, sock: Sock, frame: dict[str, Any]) -> dict[str, Any]:
        """Send ``frame`` with a fresh request_id; its answer (an event, a frame or an error)."""
        request_id = self.rid()
        await sock.send({**frame, "request_id": request_id})
        return await sock.answer(request_id)

    async def ask_quiet(self, sock: Sock, frame: dict[str, Any]) -> dict[str, Any] | None:
        """For frames with no answer of their own (receipts, location): the error, if any,
        else None once a ping sent after it was answered (frames of one socket are
        handled in order, each committed before the next is read)."""
        request_id, probe = self.rid(), self.rid()
        await sock.send({**frame, "request_id": request_id})
        await sock.send({"type": "ping", "request_id": probe})
        await sock.answer(probe)
        answers = [f for f in sock.frames if f.get("request_id") == request_id]
        return answers[0] if answers else None

    def expect_error(self, answer: dict[str, Any] | None, code: str) -> None:
        assert answer is not None
        assert answer["type"] == "error", answer
        assert answer["code"] == code, answer

    def session_error(self, session: Session, user: User) -> str | None:
        if session.participant(user.role) is not user:
            return "session_not_found"
        return None if session.live else "invalid_state"

    def ended(self, session: Session, state: str, terminal: str) -> None:
        session.state = state
        session.kinds.append(terminal)
        self.orders[session.work_id].status = state
        self.provider_active[session.provider.id] = True
        if state == "cancelled":
            self.seeker_searching[session.seeker.id] = True
        STATS["sessions ended"] += 1

    # --- rules: offers -----------------------------------------------------------------

    @initialize()
    def everyone_connected(self) -> None:
        """One socket per user, spread over both workers, so that the first steps already
        cross workers, and one order offered to two providers; the rules do the rest."""
        for i, user in enumerate(self.users):
            self.run(self._open_socket(user, i % 2))
        self.run(self._offer(self.seekers[0], self.providers[:2], 0))

    @rule(data=st.data(), accepted=st.sampled_from([True, True, False]))
    def respond(self, data: st.DataObject, accepted: bool) -> None:
        sock = self.pick(data, [s for s in self.open_sockets() if s.user.role == "provider"])
        anyone = self.now_and_then(data)
        index = data.draw(st.integers(0, 255))
        orders = list(self.orders.values())
        if sock is None or not orders:
            return
        mine = [o for o in orders if o.status == "pending" and sock.user.id in o.offers]
        # Mostly a pending order offered to this provider; sometimes any, which may be refused.
        pool = orders if anyone or not mine else mine
        self.run(self._respond(sock, pool[index % len(pool)], accepted))

    def _offer_error(self, order: Order, provider: User) -> str | None:
        offer = order.offers.get(provider.id)
        if offer is None:
            return "work_not_found"
        if order.status != "pending" or offer != "offered":
            return "work_unavailable"
        return None

    def _accept_error(self, order: Order, provider: User) -> str | None:
        """What an accept alone would be answered with: None for success."""
        error = self._offer_error(order, provider)
        if error is None and self.live_session_of(provider) is not None:
            return "provider_busy"
        if error is None and self.live_session_of(order.seeker) is not None:
            return "seeker_busy"
        return error

    async def _respond(self, sock: Sock, order: Order, accepted: bool) -> None:
        provider = sock.user
        frame = {"type": "work_response", "work_id": order.work_id, "accepted": accepted}
        answer = await self.ask(sock, frame)
        error = (
            self._accept_error(order, provider) if accepted else self._offer_error(order, provider)
        )
        if error is not None:
            self.expect_error(answer, error)
            return
        if not accepted:
            assert answer["type"] == "work_declined"
            assert answer["work_id"] == order.work_id
            order.offers[provider.id] = "declined"
            for other in self.open_sockets(provider):
                if other is not sock:
                    other.expected_others[("work_declined", order.work_id)] += 1
            if "offered" not in order.offers.values():
                order.status = "rejected"
                self.expect_other(order.seeker, "work_rejected", order.work_id)
            return
        self._accepted(order, provider, answer)

    def _accepted(self, order: Order, provider: User, answer: dict[str, Any]) -> None:
        assert answer["type"] == "work_accepted", answer
        assert answer["work_id"] == order.work_id
        assert answer["seq"] == 1
        session_id = answer["session_id"]
        session = Session(session_id, order.work_id, order.seeker, provider)
        self.sessions[session_id] = session
        order.status = "accepted"
        for other_id, status in order.offers.items():
            if other_id == provider.id:
                order.offers[other_id] = "accepted"
            elif status == "offered":
                order.offers[other_id] = "withdrawn"
                other = next(p for p in self.providers if p.id == other_id)
                self.expect_other(other, "work_unavailable", order.work_id)
        for user in (order.seeker, provider):
            for s in self.open_sockets(user):
                s.follows[session_id] = 0
                s.follows_live.add(session_id)
        self.provider_active[provider.id] = False
        self.seeker_searching[order.seeker.id] = False
        STATS["sessions opened"] += 1

    @rule(data=st.data(), internal=st.sampled_from([False, False, True]), worker=st.integers(0, 1))
    def withdraw(self, data: st.DataObject, internal: bool, worker: int) -> None:
        """*1.1* A seeker's ``cancel_work``, or the internal API's cancel: mostly a pending
        order of the seeker's own; sometimes any, which may be refused."""
        sock = self.pick(data, [s for s in self.open_sockets() if s.user.role == "seeker"])
        anyone = self.now_and_then(data)
        index = data.draw(st.integers(0, 255))
        orders = list(self.orders.values())
        if not orders or (sock is None and not internal):
            return
        mine = [
            o
            for o in orders
            if o.status == "pending" and (internal or sock is None or o.seeker is sock.user)
        ]
        pool = orders if anyone or not mine else mine
        self.run(self._withdraw(None if internal else sock, pool[index % len(pool)], worker))

    async def _withdraw(self, sock: Sock | None, order: Order, worker: int) -> None:
        pending = order.status == "pending"
        if sock is None:
            path = f"/internal/v1/work-orders/{order.work_id}/cancel"
            response = await self.internal(worker, "POST", path)
            if not pending:
                assert response.status_code == 409, response.text
                assert response.json()["code"] == "work_unavailable"
                return
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "withdrawn"
        else:
            answer = await self.ask(sock, {"type": "cancel_work", "work_id": order.work_id})
            if order.seeker is not sock.user:
                self.expect_error(answer, "work_not_found")
                return
            if not pending:
                self.expect_error(answer, "work_unavailable")
                return
            assert answer["type"] == "work_withdrawn", answer
            assert answer["work_id"] == order.work_id
        order.status = "withdrawn"
        for provider_id, status in order.offers.items():
            if status == "offered":
                order.offers[provider_id] = "withdrawn"
                provider = next(p for p in self.providers if p.id == provider_id)
                self.expect_other(provider, "work_unavailable", order.work_id)
        for other in self.open_sockets(order.seeker):
            if other is not sock:
                other.expected_others[("work_withdrawn", order.work_id)] += 1
        STATS["orders withdrawn"] += 1

    # --- rules: races --------------------------------------------------------------------

    def _racers(self, order: Order) -> list[Sock]:
        """One open socket of each provider still offered ``order``, on alternating workers
        where a provider has a choice."""
        racers = []
        for provider_id, status in sorted(order.offers.items()):
            provider = next(p for p in self.providers if p.id == provider_id)
            sockets = self.open_sockets(provider)
            if status == "offered" and order.status == "pending" and sockets:
                racers.append(sockets[len(racers) % len(sockets)])
        return racers

    @rule(data=st.data(), second=st.integers(1, 2))
    def race_accept(self, data: st.DataObject, second: int) -> None:
        """Two providers accept the same order at the same moment: one session, one loser."""
        order = self.pick(data, [o for o in self.orders.values() if len(self._racers(o)) >= 2])
        if order is not None:
            racers = self._racers(order)
            pair = [racers[0], racers[1 + (second - 1) % (len(racers) - 1)]]
            self.run(self._race_accept(order, pair))

    async def _race_accept(self, order: Order, pair: list[Sock]) -> None:
        alone = [self._accept_error(order, sock.user) for sock in pair]
        request_ids = [self.rid() for _ in pair]
        frame = {"type": "work_response", "work_id": order.work_id, "accepted": True}
        await asyncio.gather(
            *(s.send({**frame, "request_id": r}) for s, r in zip(pair, request_ids, strict=True))
        )
        answers = [await s.answer(r) for s, r in zip(pair, request_ids, strict=True)]
        won = [i for i, a in enumerate(answers) if a["type"] == "work_accepted"]
        STATS["accept races"] += 1
        if all(error is not None for error in alone):
            for error, answer in zip(alone, answers, strict=True):
                self.expect_error(answer, str(error))
            return
        assert len(won) == 1, answers
        winner, loser = won[0], 1 - won[0]
        assert alone[winner] is None, (alone, answers)
        # The loser was decided either first (its own reason) or after the winner took
        # the order.
        allowed = {alone[loser] or "work_unavailable", "work_unavailable"}
        assert answers[loser]["type"] == "error", answers
        assert answers[loser]["code"] in allowed, (allowed, answers)
        self._accepted(order, pair[winner].user, answers[winner])

    @rule(data=st.data())
    def race_end(self, data: st.DataObject) -> None:
        """The seeker cancels while the provider completes: exactly one of them ends it."""
        if pair := self._pair(data):
            self.run(self._race_end(*pair))

    def _pair(self, data: st.DataObject) -> tuple[Session, Sock, Sock] | None:
        """A live session and one open socket of each of its participants."""
        session = self.pick(data, self._enders())
        seeker_index, provider_index = data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1))
        if session is None:
            return None
        seekers, providers = self.open_sockets(session.seeker), self.open_sockets(session.provider)
        return (
            session,
            seekers[seeker_index % len(seekers)],
            providers[provider_index % len(providers)],
        )

    def _enders(self) -> list[Session]:
        return [
            s
            for s in self.sessions.values()
            if s.live and self.open_sockets(s.seeker) and self.open_sockets(s.provider)
        ]

    async def _race_end(self, session: Session, seeker: Sock, provider: Sock) -> None:
        sid = session.session_id
        cancel, complete = self.rid(), self.rid()
        await asyncio.gather(
            seeker.send({"type": "cancel_connection", "session_id": sid, "request_id": cancel}),
            provider.send({"type": "complete_session", "session_id": sid, "request_id": complete}),
        )
        ends: list[dict[str, Any]] = []

        def ended() -> bool:
            ends[:] = [
                f for f in seeker.frames if f["type"] in TERMINAL and f.get("session_id") == sid
            ]
            return bool(ends)

        await seeker.wait_until(ended, "the end of the session")
        terminal = ends[0]["type"]
        cancelled = terminal == "connection_cancelled"
        won_by, won_with = (seeker, cancel) if cancelled else (provider, complete)
        lost_by, lost_with = (provider, complete) if cancelled else (seeker, cancel)
        assert (await won_by.answer(won_with))["type"] == terminal
        # The loser's socket closes right after the terminal event: its error may be cut off.
        await lost_by.closed()
        for answer in (f for f in lost_by.frames if f.get("request_id") == lost_with):
            self.expect_error(answer, "invalid_state")
        if terminal == "connection_cancelled":
            assert ends[0]["cancelled_by"] == "seeker"
        state = "cancelled" if terminal == "connection_cancelled" else "completed"
        self.ended(session, state, terminal)
        STATS["end races"] += 1

    @rule(data=st.data())
    def race_chat(self, data: st.DataObject) -> None:
        """Both participants send a message at the same moment (the first may open the
        room): one room, two messages, two seqs."""
        if pair := self._pair(data):
            session, seeker, provider = pair
            self.run(self._race_chat(session, (seeker, provider)))

    async def _race_chat(self, session: Session, pair: tuple[Sock, Sock]) -> None:
        request_ids = [self.rid() for _ in pair]
        await asyncio.gather(
            *(
                sock.send(
                    {
                        "type": "chat_message",
                        "session_id": session.session_id,
                        "message": f"at once {request_id}",
                        "client_msg_id": f"c{request_id}",
                        "request_id": request_id,
                    }
                )
                for sock, request_id in zip(pair, request_ids, strict=True)
            )
        )
        acks = [await s.answer(r) for s, r in zip(pair, request_ids, strict=True)]
        if not session.chat_room:
            session.chat_room = True
            session.kinds.append("chat_ready")
        session.kinds += ["chat_message", "chat_message"]
        assert {a["seq"] for a in acks} == {len(session.kinds) - 1, len(session.kinds)}, acks
        for sock, ack in zip(pair, acks, strict=True):
            assert ack["type"] == "chat_message_ack", ack
            session.acks[(sock.user.id, ack["client_msg_id"])] = ack
            message = Message(
                ack["message_id"],
                session.session_id,
                sock.user.role,
                ack["client_msg_id"],
                ack["seq"],
            )
            self.messages[message.message_id] = message
        STATS["messages acked"] += 2
        STATS["chat races"] += 1

    # --- rules: the live session ---------------------------------------------------------

    def _pick(self, data: st.DataObject) -> tuple[Sock, Session] | None:
        """Mostly an open socket of a user in a live session, and that session; sometimes
        any open socket and any session, which may be refused."""
        anyone = self.now_and_then(data)
        first, second = data.draw(st.integers(0, 255)), data.draw(st.integers(0, 255))
        busy = [s for s in self.open_sockets() if self.live_session_of(s.user) is not None]
        if busy and not anyone:
            sock = busy[first % len(busy)]
            live = self.live_session_of(sock.user)
            assert live is not None
            return sock, live
        sockets, sessions = self.open_sockets(), list(self.sessions.values())
        if not sockets or not sessions:
            return None
        return sockets[first % len(sockets)], sessions[second % len(sessions)]

    @rule(data=st.data(), which=st.integers(0, len(MEDIUMS) - 1))
    def mediums(self, data: st.DataObject, which: int) -> None:
        if picked := self._pick(data):
            sock, session = picked
            self.run(self._mediums(sock, session, MEDIUMS[which]))

    async def _mediums(self, sock: Sock, session: Session, mediums: dict[str, str]) -> None:
        seeker = sock.user.role == "seeker"
        kind = "medium_selection" if seeker else "medium_share"
        answer = await self.ask(
            sock, {"type": kind, "session_id": session.session_id, "mediums": mediums}
        )
        if error := self.session_error(session, sock.user):
            self.expect_error(answer, error)
            return
        session.kinds.append("mediums_selected" if seeker else "mediums_shared")
        if seeker:
            session.state = "active"
        assert answer.get("seq") == len(session.kinds), answer
        assert answer["mediums"] == mediums

    @rule(data=st.data(), spot=st.integers(0, 3))
    def location(self, data: st.DataObject, spot: int) -> None:
        if picked := self._pick(data):
            sock, session = picked
            self.run(self._location(sock, session, spot))

    async def _location(self, sock: Sock, session: Session, spot: int) -> None:
        role = sock.user.role
        spots = SEEKER_SPOTS if role == "seeker" else PROVIDER_SPOTS
        lat, lng = spots[spot % len(spots)]
        frame = {"type": "location_update", "session_id": session.session_id}
        answer = await self.ask_quiet(sock, {**frame, "lat": lat, "lng": lng})
        if error := self.session_error(session, sock.user):
            self.expect_error(answer, error)
            return
        assert answer is None, answer
        session.positions[role] = (lat, lng)
        if len(session.positions) == 2:
            distance = distance_m(session.positions["seeker"], session.positions["provider"])
            for kind, threshold in (("provider_nearby", NEARBY_M), ("provider_arrived", ARRIVED_M)):
                if distance <= threshold and kind not in session.kinds:
                    session.kinds.append(kind)

    @rule(data=st.data())
    def start_chat(self, data: st.DataObject) -> None:
        if picked := self._pick(data):
            sock, session = picked
            self.run(self._start_chat(sock, session))

    async def _start_chat(self, sock: Sock, session: Session) -> None:
        answer = await self.ask(sock, {"type": "start_chat", "session_id": session.session_id})
        if error := self.session_error(session, sock.user):
            self.expect_error(answer, error)
            return
        assert answer["type"] == "chat_ready", answer
        if session.chat_room:
            assert "seq" not in answer, answer  # a repeat, not an event
        else:
            session.chat_room = True
            session.kinds.append("chat_ready")
            assert answer["seq"] == len(session.kinds), answer

    @rule(data=st.data(), client_msg_id=st.sampled_from(["new", "again", "none"]))
    def chat(self, data: st.DataObject, client_msg_id: str) -> None:
        picked = self._pick(data)
        index = data.draw(st.integers(0, 255))
        if picked is None:
            return
        sock, session = picked
        used = [cmid for sender, cmid in session.acks if sender == sock.user.id]
        cmid: str | None = None
        if client_msg_id == "again" and used:
            cmid = used[index % len(used)]
        elif client_msg_id != "none":
            cmid = f"c{self.requests}"
        self.run(self._chat(sock, session, cmid))

    async def _chat(self, sock: Sock, session: Session, cmid: str | None) -> None:
        frame: dict[str, Any] = {
            "type": "chat_message",
            "session_id": session.session_id,
            "message": f"hello {self.requests}",
        }
        if cmid is not None:
            frame["client_msg_id"] = cmid
        original = session.acks.get((sock.user.id, cmid or ""))
        request_id = self.rid()
        if original is not None and session.live:
            sock.re_answers.add(request_id)
        await sock.send({**frame, "request_id": request_id})
        answer = await sock.answer(request_id)
        if error := self.session_error(session, sock.user):
            self.expect_error(answer, error)
            return
        assert answer["type"] == "chat_message_ack", answer
        if original is not None:
            assert {k: answer[k] for k in ("message_id", "seq", "client_msg_id")} == {
                k: original[k] for k in ("message_id", "seq", "client_msg_id")
            }
            STATS["retries answered"] += 1
            return
        if not session.chat_room:
            session.chat_room = True
            session.kinds.append("chat_ready")
        session.kinds.append("chat_message")
        assert answer["seq"] == len(session.kinds), answer
        assert answer["status"] == "sent"
        assert answer["client_msg_id"] == cmid
        if cmid is not None:
            session.acks[(sock.user.id, cmid)] = answer
        message_id = answer["message_id"]
        assert message_id not in self.messages
        self.messages[message_id] = Message(
            message_id, session.session_id, sock.user.role, cmid, answer["seq"]
        )
        STATS["messages acked"] += 1

    @rule(data=st.data(), status=st.sampled_from(["delivered", "read"]))
    def receipt(self, data: st.DataObject, status: str) -> None:
        message = self.pick(data, list(self.messages.values()))
        anyone = self.now_and_then(data)
        index = data.draw(st.integers(0, 255))
        if message is None or not self.open_sockets():
            return
        session = self.sessions[message.session_id]
        recipients = self.open_sockets(session.participant(_other(message.sender_type)))
        # Mostly from the recipient; sometimes from anyone, which must be refused.
        pool = recipients if recipients and not anyone else self.open_sockets()
        self.run(self._receipt(pool[index % len(pool)], message, status))

    async def _receipt(self, sock: Sock, message: Message, status: str) -> None:
        session = self.sessions[message.session_id]
        kind = "message_delivered" if status == "delivered" else "message_read"
        answer = await self.ask_quiet(sock, {"type": kind, "message_id": message.message_id})
        if session.participant(sock.user.role) is not sock.user:
            self.expect_error(answer, "message_not_found")
            return
        if message.sender_type == sock.user.role:
            self.expect_error(answer, "forbidden")
            return
        if not session.live:
            self.expect_error(answer, "invalid_state")
            return
        assert answer is None, answer
        steps = ["delivered", "read"] if status == "read" else ["delivered"]
        for step in steps:
            if RANK["message"][message.status] == RANK["message"][step] - 1:
                message.status = step
                session.kinds.append("message_status")

    @rule(data=st.data(), complete=st.booleans(), internal=st.booleans(), worker=st.integers(0, 1))
    def end(self, data: st.DataObject, complete: bool, internal: bool, worker: int) -> None:
        """``cancel_connection`` / ``complete_session`` on a socket, or the internal API."""
        picked = self._pick(data)
        anyone = self.now_and_then(data)
        live = [s for s in self.sessions.values() if s.live]
        session = self.pick(data, live if live and not anyone else list(self.sessions.values()))
        if not internal and picked is not None:
            self.run(self._end_by_socket(*picked, complete))
        elif session is not None:
            self.run(self._end_internally(session, complete, worker))

    async def _end_by_socket(self, sock: Sock, session: Session, complete: bool) -> None:
        kind = "complete_session" if complete else "cancel_connection"
        answer = await self.ask(sock, {"type": kind, "session_id": session.session_id})
        if complete and sock.user.role == "seeker":
            self.expect_error(answer, "forbidden")
            return
        if error := self.session_error(session, sock.user):
            self.expect_error(answer, error)
            return
        terminal = "session_completed" if complete else "connection_cancelled"
        assert answer["type"] == terminal, answer
        if not complete:
            assert answer["cancelled_by"] == sock.user.role
        self.ended(session, "completed" if complete else "cancelled", terminal)
        assert answer["seq"] == len(session.kinds)

    async def _end_internally(self, session: Session, complete: bool, worker: int) -> None:
        verb = "complete" if complete else "cancel"
        path = f"/internal/v1/sessions/{session.session_id}/{verb}"
        response = await self.internal(worker, "POST", path)
        if not session.live:
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        state = "completed" if complete else "cancelled"
        assert response.json()["state"] == state
        self.ended(session, state, "session_completed" if complete else "connection_cancelled")

    @rule(
        data=st.data(),
        count=st.integers(1, 3),
        worker=st.integers(0, 1),
    )
    def offer(self, data: st.DataObject, count: int, worker: int) -> None:
        seeker = data.draw(st.sampled_from(self.seekers))
        providers = data.draw(
            st.lists(
                st.sampled_from(self.providers),
                min_size=count,
                max_size=count,
                unique_by=lambda u: u.id,
            )
        )
        # A few pending orders at a time keep the accepts likely to find one.
        if sum(o.status == "pending" for o in self.orders.values()) < 3:
            self.run(self._offer(seeker, providers, worker))

    def _skip_reason(self, provider: User) -> str | None:
        """PROTOCOL 4 (*1.1*): why an order would not be offered to ``provider``; a flag
        never set counts as active, and a live session is named before the flag it
        switched off."""
        if self.live_session_of(provider) is not None:
            return "busy"
        if self.provider_active[provider.id] is False:
            return "inactive"
        return None

    async def _offer(self, seeker: User, providers: list[User], worker: int) -> None:
        body = {"seeker_id": seeker.id, "provider_ids": [p.id for p in providers], "details": {}}
        response = await self.internal(worker, "POST", "/internal/v1/work-orders", body)
        reasons = {p.id: self._skip_reason(p) for p in providers}
        offered = [p for p in providers if reasons[p.id] is None]
        if self.live_session_of(seeker) is not None:
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "seeker_busy"
            STATS["orders refused"] += 1
            return
        if not offered:
            assert response.status_code == 409, response.text
            assert response.json()["code"] == "no_provider_available"
            STATS["orders refused"] += 1
            return
        assert response.status_code == 201, response.text
        created = response.json()
        work_id = created["work_id"]
        assert created["status"] == "pending"
        assert created["offered_to"] == [p.id for p in offered]
        assert created["skipped"] == [
            {"provider_id": p.id, "reason": reasons[p.id]}
            for p in providers
            if reasons[p.id] is not None
        ]
        self.orders[work_id] = Order(work_id, seeker, {p.id: "offered" for p in offered})
        for provider in offered:
            self.expect_other(provider, "work_request", work_id)
        STATS["orders"] += 1

    @rule(data=st.data(), active=st.booleans(), worker=st.integers(0, 1))
    def availability(self, data: st.DataObject, active: bool, worker: int) -> None:
        """Another service switches a free provider's active status (one in a live session
        is left alone: the session owns that flag until it ends)."""
        provider = self.pick(data, [p for p in self.providers if self.live_session_of(p) is None])
        if provider is not None:
            self.run(self._set_active(provider, active, worker))

    async def _set_active(self, provider: User, active: bool, worker: int) -> None:
        path = f"/internal/v1/users/{provider.id}/availability"
        response = await self.internal(worker, "PUT", path, {"provider_active": active})
        assert response.status_code == 200, response.text
        assert response.json()["provider_active"] is active
        self.provider_active[provider.id] = active

    # --- rules: sockets ----------------------------------------------------------------

    @rule(
        data=st.data(),
        how=st.sampled_from(["reconnect", "leave", "join"]),
        worker=st.integers(0, 1),
    )
    def sockets(self, data: st.DataObject, how: str, worker: int) -> None:
        """Close a socket and open another for the same user on ``worker`` (a reconnect),
        or only close one (the user goes offline), or only open one (a second device)."""
        sock = self.pick(data, self.open_sockets())
        user = self.pick(data, [u for u in self.users if len(self.open_sockets(u)) < 2])
        if how != "join" and sock is not None:
            self.run(sock.shut())
            if how == "reconnect":
                self.run(self._open_socket(sock.user, worker))
        elif user is not None:
            self.run(self._open_socket(user, worker))

    async def _connect(self, user: User, worker: int) -> Sock:
        """A new socket that has its ``connected`` frame (not yet known to the model)."""
        server = self.server(worker)
        user.sockets_opened += 1
        ws = await connect(
            f"{server.ws_url}/ws/work/{user.role}/",
            additional_headers={"Authorization": f"Bearer {server.token(user.id, user.role)}"},
            ping_interval=None,
            max_size=2**22,
        )
        sock = Sock(f"{user.id}#{user.sockets_opened}@{'ab'[worker]}", user, ws)
        sock.start()
        await sock.wait_until(lambda: bool(sock.frames), "connected")
        assert sock.frames[0]["type"] == "connected", sock.frames[0]
        sock.cursor = 1
        STATS["sockets opened"] += 1
        return sock

    async def _open_socket(self, user: User, worker: int) -> None:
        sock = await self._connect(user, worker)
        connected = sock.frames[0]
        live = self.live_session_of(user)
        snapshot = connected["session"]
        if live is None:
            assert snapshot is None, (sock.name, snapshot)
        else:
            assert snapshot is not None, sock.name
            assert snapshot["session_id"] == live.session_id
            assert snapshot["connection_state"] == live.state
            assert snapshot["last_seq"] == len(live.kinds)
            sock.follows[live.session_id] = snapshot["last_seq"]
            sock.follows_live.add(live.session_id)
        pending = sorted(w["work_id"] for w in connected["pending_work"])
        open_orders = [o["work_id"] for o in connected["open_orders"]]
        if user.role == "provider":
            assert pending == sorted(
                o.work_id
                for o in self.orders.values()
                if o.status == "pending" and o.offers.get(user.id) == "offered"
            ), sock.name
            assert open_orders == []
        else:
            assert pending == []
            # *1.1* The seeker's pending orders, oldest first.
            assert open_orders == sorted(
                o.work_id
                for o in self.orders.values()
                if o.status == "pending" and o.seeker is user
            ), sock.name
        self.sockets.append(sock)

    @rule(data=st.data(), worker=st.integers(0, 1))
    def race_connect(self, data: st.DataObject, worker: int) -> None:
        """The seeker opens a socket while a provider accepts its order: the new socket
        has the session once, from its snapshot or from the live event, and all after."""
        order = self.pick(data, [o for o in self.orders.values() if self._can_race_connect(o)])
        if order is not None:
            self.run(self._race_connect(order, worker))

    def _can_race_connect(self, order: Order) -> bool:
        racers = self._racers(order)
        return (
            bool(racers)
            and self._accept_error(order, racers[0].user) is None
            and len(self.open_sockets(order.seeker)) < 2
        )

    async def _race_connect(self, order: Order, worker: int) -> None:
        provider = self._racers(order)[0]
        request_id = self.rid()
        frame = {"type": "work_response", "work_id": order.work_id, "accepted": True}
        _, sock = await asyncio.gather(
            provider.send({**frame, "request_id": request_id}),
            self._connect(order.seeker, worker),
        )
        self._accepted(order, provider.user, await provider.answer(request_id))
        session = self.live_session_of(order.seeker)
        assert session is not None
        snapshot = sock.frames[0]["session"]
        if snapshot is None:
            sock.follows[session.session_id] = 0
        else:
            assert snapshot["session_id"] == session.session_id, snapshot
            sock.follows[session.session_id] = snapshot["last_seq"]
            STATS["connect races with the session in the snapshot"] += 1
        sock.follows_live.add(session.session_id)
        self.sockets.append(sock)
        STATS["connect races"] += 1

    @rule(data=st.data(), mode=st.sampled_from(["user", "zero", "socket"]))
    def resume(self, data: st.DataObject, mode: str) -> None:
        if picked := self._pick(data):
            sock, session = picked
            self.run(self._resume(sock, session, mode))

    async def _resume(self, sock: Sock, session: Session, mode: str) -> None:
        sid = session.session_id
        last_seq = self._last_seq(sock, sid, mode)
        if session.participant(sock.user.role) is not sock.user:
            answer = await self.ask(sock, {"type": "resume", "session_id": sid, "last_seq": 0})
            self.expect_error(answer, "session_not_found")
            return
        self._replaying(sock, sid, last_seq)
        await sock.send({"type": "resume", "session_id": sid, "last_seq": last_seq})
        await sock.wait_until(lambda: self.digest(sock) or sock.replay is None, "resumed")
        STATS["resumes"] += 1

    def _last_seq(self, sock: Sock, sid: str, mode: str) -> int:
        """What a client resumes from: this socket's newest seq, the newest any socket of
        the user had (an app that keeps it across reconnects), or nothing."""
        return {
            "socket": max([sock.follows.get(sid, 0), *sock.seen.get(sid, [])]),
            "user": sock.user.max_seen.get(sid, 0),
            "zero": 0,
        }[mode]

    def _replaying(self, sock: Sock, sid: str, last_seq: int) -> None:
        seen = sock.seen.get(sid, [])
        floor = max([sock.follows.get(sid, 0), *seen])
        sock.replay = Replay(sid, last_seq, frozenset(seen), floor, len(self.logs[sid]))
        sock.replayed = []

    @rule(data=st.data(), mode=st.sampled_from(["user", "zero", "socket"]), seeker=st.booleans())
    def race_resume(self, data: st.DataObject, mode: str, seeker: bool) -> None:
        """One participant resumes while the other sends a message: the new event comes
        live before the replay starts, or within it, or after ``resumed``, once."""
        if pair := self._pair(data):
            session, seeker_sock, provider_sock = pair
            resumer, peer = (seeker_sock, provider_sock) if seeker else (provider_sock, seeker_sock)
            self.run(self._race_resume(session, resumer, peer, mode))

    async def _race_resume(self, session: Session, resumer: Sock, peer: Sock, mode: str) -> None:
        sid = session.session_id
        self.digest(resumer)
        last_seq = self._last_seq(resumer, sid, mode)
        self._replaying(resumer, sid, last_seq)
        resume, chat = self.rid(), self.rid()
        await asyncio.gather(
            resumer.send(
                {"type": "resume", "session_id": sid, "last_seq": last_seq, "request_id": resume}
            ),
            peer.send(
                {
                    "type": "chat_message",
                    "session_id": sid,
                    "message": f"during a resume {chat}",
                    "request_id": chat,
                }
            ),
        )
        ack = await peer.answer(chat)
        assert ack["type"] == "chat_message_ack", ack
        if not session.chat_room:
            session.chat_room = True
            session.kinds.append("chat_ready")
        session.kinds.append("chat_message")
        assert ack["seq"] == len(session.kinds), ack
        self.messages[ack["message_id"]] = Message(
            ack["message_id"], sid, peer.user.role, None, ack["seq"]
        )
        STATS["messages acked"] += 1
        # The frames are checked against the log once it holds the new event.
        await resumer.answer(resume)
        await self.check_database()
        await resumer.wait_until(lambda: self.digest(resumer) or resumer.replay is None, "resumed")
        STATS["resume races"] += 1

    # --- the checks ----------------------------------------------------------------------

    def digest(self, sock: Sock) -> bool:
        """Check every frame ``sock`` received since the last call; always False (a
        predicate for ``wait_until`` that only checks)."""
        role = sock.user.role
        while sock.cursor < len(sock.frames):
            frame = sock.frames[sock.cursor]
            sock.cursor += 1
            type_, request_id = frame["type"], frame.get("request_id")
            if type_ in EPHEMERAL or type_ == "pong" or request_id in sock.re_answers:
                continue
            if "seq" in frame:
                self._stream_frame(sock, role, frame)
            elif type_ == "resumed":
                replay = sock.replay
                assert replay is not None, f"{sock.name}: unasked {frame}"
                assert frame["session_id"] == replay.session_id, frame
                sid = replay.session_id
                # An event committed during the replay is in it, or follows it.
                assert replay.log_end <= frame["last_seq"] <= len(self.logs[sid]), frame
                self._check_replay(sock, replay, frame["last_seq"])
                sock.follows[sid] = min(sock.follows.get(sid, replay.last_seq), replay.last_seq)
                sock.replay = None
            elif request_id is None:
                key = (type_, int(frame.get("work_id", 0)))
                assert sock.expected_others[key] > 0, f"{sock.name}: unexpected {frame}"
                sock.expected_others[key] -= 1
        return False

    def _check_replay(self, sock: Sock, replay: Replay, last: int) -> None:
        """What arrived between ``resume`` and ``resumed``: every event after
        ``last_seq`` the socket did not have, once, in order; possibly after
        live events that were on their way before the replay started (the next ones after
        what the socket had, in order)."""
        got = sock.replayed
        due = {n for n in range(replay.last_seq + 1, last + 1) if n not in replay.seen}
        assert sorted(got) == sorted(due), (sock.name, got, sorted(due), replay)
        split = next((i for i in range(1, len(got)) if got[i] < got[i - 1]), 0)
        live, replayed = got[:split], got[split:]
        assert replayed == sorted(replayed), (sock.name, got)
        after = list(range(replay.floor + 1, last + 1))
        assert live == after[: len(live)], (sock.name, got, replay)
        STATS["events replayed"] += len(replayed)

    def _stream_frame(self, sock: Sock, role: str, frame: dict[str, Any]) -> None:
        sid, seq = frame["session_id"], frame["seq"]
        log = self.logs.get(sid)
        assert log is not None, f"{sock.name}: no such session {frame}"
        assert 1 <= seq <= len(log), f"{sock.name}: no such event {frame}"
        kind, data = log[seq - 1]
        assert frame["type"] == frame_type(kind, data, role), (sock.name, kind, frame)
        if kind == "chat_message":
            # Both renderings carry the text and the sender's role (the ack too, 1.1) and
            # never a user id.
            shown = (frame["sender_type"], frame["message"])
            assert shown == (data["sender_type"], data["message"]), (sock.name, frame)
            ids = {u.id for u in self.users}
            assert not ids & {str(v) for v in frame.values()}, (sock.name, frame)
        seen = sock.seen.setdefault(sid, [])
        assert seq not in seen, f"{sock.name}: seq {seq} of {sid} twice"
        if sock.replay is not None:
            assert sid == sock.replay.session_id, f"{sock.name}: {frame} during a replay"
            sock.replayed.append(seq)
        else:
            assert sid in sock.follows, f"{sock.name}: an event of a session it never had"
            floor = max([sock.follows[sid], *seen])
            # 1.1: every event reaches both participants, so the stream has no holes.
            assert seq == floor + 1, f"{sock.name}: seq {seq} of {sid} after {floor}"
            if kind in TERMINAL:
                sock.terminal_seen = True
        seen.append(seq)
        sock.user.max_seen[sid] = max(sock.user.max_seen.get(sid, 0), seq)

    def _complete(self, sock: Sock) -> bool:
        self.digest(sock)
        if any(sock.expected_others.values()):
            return False
        for sid, after in sock.follows.items():
            log, seen = self.logs[sid], set(sock.seen.get(sid, []))
            due = [n for n in range(after + 1, len(log) + 1) if n not in seen]
            if due:
                return False
        return True

    async def settle(self) -> None:
        """Read the database, compare it with the model, then wait until every socket has
        what it is due and check every frame it got."""
        await self.check_database()
        for sock in self.sockets:
            if sock.retired:
                continue
            await sock.wait_until(partial(self._complete, sock), "its due frames")
            ended = [sid for sid in sock.follows_live if not self.sessions[sid].live]
            if ended:
                assert await sock.closed() == 1000, sock.name
                assert sock.terminal_seen, sock.name
                self.digest(sock)
                sock.retired = True
            elif sock.done:
                raise AssertionError(f"{sock.name} closed ({sock.close_code}) unasked")

    async def check_database(self) -> None:
        users = [u.id for u in self.users]
        async with self.world.db.transaction() as s:
            sessions = (
                await s.execute(
                    text(
                        "SELECT session_id, connection_state, seeker_id, provider_id, last_seq,"
                        " work_order_id FROM work_sessions"
                        " WHERE seeker_id = ANY(:u) OR provider_id = ANY(:u)"
                    ),
                    {"u": users},
                )
            ).all()
            events = (
                await s.execute(
                    text(
                        "SELECT s.session_id, e.seq, e.kind, e.data FROM session_events e"
                        " JOIN work_sessions s ON s.id = e.session_id"
                        " WHERE s.seeker_id = ANY(:u) ORDER BY s.session_id, e.seq"
                    ),
                    {"u": users},
                )
            ).all()
            orders = (
                await s.execute(
                    text("SELECT id, status FROM work_orders WHERE seeker_id = ANY(:u)"),
                    {"u": users},
                )
            ).all()
            offers = (
                await s.execute(
                    text(
                        "SELECT o.work_order_id, o.provider_id, o.status FROM work_offers o"
                        " JOIN work_orders w ON w.id = o.work_order_id WHERE w.seeker_id = ANY(:u)"
                    ),
                    {"u": users},
                )
            ).all()
            messages = (
                await s.execute(
                    text(
                        "SELECT m.message_id, s.session_id, m.sender_type, m.delivery_status,"
                        " m.client_msg_id, m.seq FROM chat_messages m"
                        " JOIN work_sessions s ON s.id = m.session_id WHERE s.seeker_id = ANY(:u)"
                    ),
                    {"u": users},
                )
            ).all()
            active = dict(
                (
                    await s.execute(
                        text(
                            "SELECT provider_id, is_active FROM provider_active_status"
                            " WHERE provider_id = ANY(:u)"
                        ),
                        {"u": users},
                    )
                ).all()
            )
            searching = dict(
                (
                    await s.execute(
                        text(
                            "SELECT seeker_id, is_searching FROM seeker_search_preference"
                            " WHERE seeker_id = ANY(:u)"
                        ),
                        {"u": users},
                    )
                ).all()
            )

        # At most one live session per user, and exactly the sessions the model has.
        live = Counter[str]()
        for row in sessions:
            if row.connection_state in ("waiting", "active"):
                live[row.seeker_id] += 1
                live[row.provider_id] += 1
        assert all(n <= 1 for n in live.values()), live
        db_sessions = {str(r.session_id): r for r in sessions}
        assert set(db_sessions) == set(self.sessions)
        for sid, row in db_sessions.items():
            model = self.sessions[sid]
            assert row.connection_state == model.state, (sid, row.connection_state, model.state)
            assert (row.seeker_id, row.provider_id) == (model.seeker.id, model.provider.id)
            assert row.last_seq == len(model.kinds)
            self._forward("session", sid, row.connection_state)

        # Each session's log: the kinds the model expects, seq 1, 2, 3 ... without a hole.
        logs: dict[str, list[tuple[str, dict[str, Any]]]] = {sid: [] for sid in db_sessions}
        for row in events:
            log = logs[str(row.session_id)]
            assert row.seq == len(log) + 1, (row.session_id, row.seq)
            data = json.loads(row.data) if isinstance(row.data, str) else row.data
            log.append((row.kind, data))
        for sid, log in logs.items():
            assert [kind for kind, _ in log] == self.sessions[sid].kinds, sid
        self.logs = logs

        db_orders = {r.id: r.status for r in orders}
        assert db_orders == {w: o.status for w, o in self.orders.items()}
        for work_id, status in db_orders.items():
            self._forward("order", str(work_id), status)
        db_offers = {(r.work_order_id, r.provider_id): r.status for r in offers}
        assert db_offers == {
            (w, p): status for w, o in self.orders.items() for p, status in o.offers.items()
        }

        # Every acked message stored exactly once, nothing stored without an ack.
        stored = Counter(str(r.message_id) for r in messages)
        assert all(n == 1 for n in stored.values()), stored
        assert set(stored) == set(self.messages)
        self.stored_messages = len(stored)
        keys = Counter(
            (str(r.session_id), r.sender_type, r.client_msg_id) for r in messages if r.client_msg_id
        )
        assert all(n == 1 for n in keys.values()), keys
        for row in messages:
            model_message = self.messages[str(row.message_id)]
            assert row.seq == model_message.seq
            assert row.delivery_status == model_message.status, (row, model_message)
            self._forward("message", str(row.message_id), row.delivery_status)

        # The flags agree with the sessions.
        for user in self.providers:
            flag, expected = active.get(user.id), self.provider_active[user.id]
            assert flag == expected, f"{user.id}: provider_active is {flag}, not {expected}"
            if self.live_session_of(user) is not None:
                assert flag is False, f"{user.id}: active while in a live session"
        for user in self.seekers:
            flag, expected = searching.get(user.id), self.seeker_searching[user.id]
            assert flag == expected, f"{user.id}: seeker_searching is {flag}, not {expected}"
            if self.live_session_of(user) is not None:
                assert flag is False, f"{user.id}: searching while in a live session"

    def _forward(self, what: str, key: str, status: str) -> None:
        rank = RANK[what][status]
        before = self.last_ranks.get((what, key), 0)
        assert rank >= before, f"{what} {key} went back to {status}"
        self.last_ranks[(what, key)] = rank

    @invariant()
    def settled_and_consistent(self) -> None:
        self.run(self.settle())
        STATS["steps checked"] += 1

    def teardown(self) -> None:
        self.run(self._teardown())

    async def _teardown(self) -> None:
        STATS["messages found stored once"] += self.stored_messages
        for sock in self.sockets:
            if not sock.done:
                await sock.shut()


def _other(role: str) -> str:
    return "provider" if role == "seeker" else "seeker"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    overrides = {
        # Frames come as fast as the steps can go; the limits have tests of their own.
        "rate_limit_per_s": "1000",
        "rate_limit_burst": "1000",
        # No offer may expire in the middle of an example.
        "offer_ttl_s": "3600",
    }
    with two_workers_running(tmp_path, **overrides) as cluster:
        world = World()
        world.cluster = cluster
        world.loop = Loop()
        world.db = world.loop.run(_database(cluster.database_url))
        try:
            yield world
        finally:
            world.loop.run(world.db.dispose())
            world.loop.close()


async def _database(url: str) -> Database:
    return Database(url)


@pytest.mark.timeout(120 + EXAMPLES * STEPS * 3)
def test_the_service_keeps_its_invariants_under_random_interleavings(world: World) -> None:
    ServiceModel.world = world
    STATS.clear()
    run_state_machine_as_test(
        ServiceModel,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=list(Phase) if SHRINK else [Phase.explicit, Phase.generate],
        ),
    )
    print(f"model run: {dict(STATS)}")
    # The run exercised what it claims to check.
    assert STATS["sessions opened"] > 0, STATS
    assert STATS["messages acked"] > 0, STATS
