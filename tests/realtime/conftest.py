"""A real uvicorn in a subprocess on a free port, and a small WebSocket client for it.

The server is started exactly as an operator starts it (``python -m worksession serve``),
against the run's test database of each backend; tests isolate themselves by using fresh
user ids rather than by emptying tables under a running server.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import discard_database_url, fresh_database_url
from worksession import migrate
from worksession.config import Settings
from worksession.kit.db import Database
from worksession.lifespan import build_verifier

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
RECV_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base_url: str
    ws_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    settings: Settings
    settings_database_url: str

    def token(self, sub: str, user_type: str, ttl_s: float = 3600) -> str:
        return build_verifier(self.settings).issue(
            sub=sub,
            user_type=user_type,  # type: ignore[arg-type]
            ttl_s=ttl_s,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def create_order(
        self,
        *,
        seeker_id: str,
        provider_ids: list[str],
        details: dict[str, Any] | None = None,
        seeker_location: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        response = await self.post_order(
            seeker_id=seeker_id,
            provider_ids=provider_ids,
            details=details,
            seeker_location=seeker_location,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def post_order(
        self,
        *,
        seeker_id: str,
        provider_ids: list[str],
        details: dict[str, Any] | None = None,
        seeker_location: dict[str, float] | None = None,
    ) -> httpx.Response:
        """``POST /internal/v1/work-orders`` as a service, whatever it answers."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            return await http.post(
                "/internal/v1/work-orders",
                json={
                    "seeker_id": seeker_id,
                    "provider_ids": provider_ids,
                    "details": details or {},
                    "seeker_location": seeker_location,
                },
                headers={"Authorization": f"Bearer {self.token('svc', 'service')}"},
            )

    async def set_provider_active(self, user_id: str, active: bool) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            response = await http.put(
                f"/internal/v1/users/{user_id}/availability",
                json={"provider_active": active},
                headers={"Authorization": f"Bearer {self.token('svc', 'service')}"},
            )
        assert response.status_code == 200, response.text


def start_server(
    db_url: str,
    log_dir: Path,
    *,
    workers: str = "1",
    extra_env: Mapping[str, str] | None = None,
    **overrides: str,
) -> Server:
    """``python -m worksession serve`` with ``WORKSESSION_<NAME>`` set from ``overrides``
    (and nothing inherited: neither our settings nor a metrics directory)."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WORKSESSION_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(extra_env or {})
    env.update(
        {
            "WORKSESSION_ENV": "test",
            "WORKSESSION_DATABASE_URL": db_url,
            "WORKSESSION_JWT_SECRET": SECRET,
            "WORKSESSION_TYPING_TIMEOUT_S": "1",
            "WORKSESSION_DISTANCE_INTERVAL_S": "3600",
            **{f"WORKSESSION_{k.upper()}": v for k, v in overrides.items()},
        }
    )
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worksession",
                "serve",
                "--port",
                str(port),
                "--workers",
                workers,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
        )
    server = Server(
        base_url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}",
        process=process,
        log_path=log_path,
        settings=Settings(jwt_secret=SECRET),
        settings_database_url=db_url,
    )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start:\n{server.log()}")
        time.sleep(0.05)


@contextmanager
def dedicated_server(db_url: str, log_dir: Path, **overrides: str) -> Iterator[Server]:
    """A server with settings of its own, on a database of its own (same backend as
    ``db_url``): its scheduled jobs must not race the default server's for the same rows,
    as two in-process brokers cannot tell each other's sockets."""
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    url = fresh_database_url(backend, log_dir)
    migrate.upgrade(url)
    running = start_server(url, log_dir, **overrides)
    try:
        yield running
    finally:
        stop_server(running)
        discard_database_url(url)
    assert "Traceback" not in running.log(), running.log()


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default server of this backend: contract defaults but for a 1 s typing timeout
    and no distance ticks (they would interleave with the frames other tests expect).

    It has a database of its own: its jobs (offer expiry, typing auto-stop) would otherwise
    act on the rows of the service tests that share the run's database.
    """
    with dedicated_server(db_url, tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture
async def db(server: Server) -> AsyncIterator[Database]:
    """The default server's database, to check what a scenario wrote. Not emptied: the
    server is running, and every scenario uses fresh user ids."""
    database = Database(server.settings_database_url)
    try:
        yield database
    finally:
        await database.dispose()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Client:
    """A WebSocket client that keeps every frame it received, in order."""

    ws: ClientConnection
    role: str
    received: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _pending: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout: float = RECV_TIMEOUT_S) -> dict[str, Any]:
        if self._pending:
            return self._pending.pop(0)
        return await self._read(timeout)

    async def _read(self, timeout: float) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(text, str), "the server only sends text frames"
        self.raw.append(text)
        frame: dict[str, Any] = json.loads(text)
        self.received.append(frame)
        return frame

    async def expect(
        self, type_: str, timeout: float = RECV_TIMEOUT_S, **fields: Any
    ) -> dict[str, Any]:
        """The next frame of ``type_`` (with ``fields``); frames before it stay pending."""
        deadline = asyncio.get_running_loop().time() + timeout
        for i, frame in enumerate(self._pending):
            if _matches(frame, type_, fields):
                return self._pending.pop(i)
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {type_} {fields} within {timeout}s; got {self._pending}")
            frame = await self._read(remaining)
            if _matches(frame, type_, fields):
                return frame
            self._pending.append(frame)

    async def request(self, frame: dict[str, Any], reply: str, **fields: Any) -> dict[str, Any]:
        await self.send(frame)
        return await self.expect(reply, **fields)

    async def drain(self, seconds: float) -> list[dict[str, Any]]:
        """Everything that arrives within ``seconds`` (plus what was pending), in order."""
        frames, self._pending = self._pending, []
        deadline = asyncio.get_running_loop().time() + seconds
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                frames.append(await self._read(remaining))
            except TimeoutError:
                break
        return frames

    async def nothing_more(self, wait: float = 0.3) -> None:
        """Assert that no frame arrives within ``wait`` seconds."""
        assert not self._pending, f"unexpected frames: {self._pending}"
        try:
            frame = await self._read(wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {frame}")

    async def closed_with(self, timeout: float = RECV_TIMEOUT_S) -> int | None:
        """Read until the server closes; return the close code."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                self._pending.append(await self._read(max(0.01, remaining)))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def _matches(frame: dict[str, Any], type_: str, fields: dict[str, Any]) -> bool:
    return frame.get("type") == type_ and all(frame.get(k) == v for k, v in fields.items())


@asynccontextmanager
async def open_client(
    server: Server,
    role: str,
    user_id: str,
    *,
    token: str | None = None,
    via_query: bool = False,
    path_suffix: str = "/",
    expect_connected: bool = True,
    receive_buffer: int | None = None,
) -> AsyncIterator[Client]:
    """A connected client. ``receive_buffer`` shrinks the client's TCP receive buffer (and
    its frame queue), for a client that reads slowly or not at all."""
    token = token if token is not None else server.token(user_id, role)
    url = f"{server.ws_url}/ws/work/{role}{path_suffix}"
    headers = {}
    if via_query:
        url += f"?token={token}"
    else:
        headers["Authorization"] = f"Bearer {token}"
    options: dict[str, Any] = {}
    if receive_buffer is not None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", int(server.ws_url.rsplit(":", 1)[1])))
        options = {"sock": sock, "max_queue": 1}
    async with connect(
        url, additional_headers=headers, max_size=2**22, ping_interval=None, **options
    ) as ws:
        client = Client(ws=ws, role=role)
        if expect_connected:
            connected = await client.recv()
            assert connected["type"] == "connected", connected
        yield client


@dataclass
class Pair:
    seeker: Client
    provider: Client
    seeker_id: str
    provider_id: str
    work_id: int
    session_id: str


@asynccontextmanager
async def live_session(server: Server) -> AsyncIterator[Pair]:
    """A seeker and a provider connected, an order offered and accepted: seq 1 seen by both."""
    seeker_id, provider_id = uid("seeker"), uid("provider")
    async with (
        open_client(server, "seeker", seeker_id) as seeker,
        open_client(server, "provider", provider_id) as provider,
    ):
        order = await server.create_order(seeker_id=seeker_id, provider_ids=[provider_id])
        work_id = order["work_id"]
        await provider.expect("work_request", work_id=work_id)
        accepted = await provider.request(
            {"type": "work_response", "work_id": work_id, "accepted": True}, "work_accepted"
        )
        await seeker.expect("work_accepted", seq=1)
        yield Pair(seeker, provider, seeker_id, provider_id, work_id, accepted["session_id"])
