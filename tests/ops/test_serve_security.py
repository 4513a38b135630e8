"""``worksession serve`` facing a hostile network, on a real server: the internal port, the
concurrency limit, the header deadline, ids kept out of the access log, and ``/metrics``
behind a service token in production (PROTOCOL 1 and 7, *1.1*).

The backend does not matter here; every server runs on an SQLite file of its own.
"""

from __future__ import annotations

import select
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import REDIS_URL, fresh_database_url
from tests.realtime.conftest import Server, free_port, start_server, stop_server, uid
from worksession import migrate
from worksession.config import Settings
from worksession.lifespan import build_verifier

HEADER_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 16384
# What a loaded 2-core machine may add to a timer before the close is seen.
SLACK_S = 4.0
SERVICE_SECRET = "service-only-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


@dataclass
class Exposed:
    server: Server
    internal_port: int

    @property
    def private_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def service(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.server.token('orders-svc', 'service')}"}


@contextmanager
def sqlite_server(log_dir: Path, **overrides: str) -> Iterator[Server]:
    url = fresh_database_url("sqlite", log_dir)
    migrate.upgrade(url)
    server = start_server(url, log_dir, **overrides)
    try:
        yield server
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposed]:
    """An internal port, a 1 s header deadline and a long keep-alive (so that what closes a
    connection in the header tests can only be the header deadline)."""
    internal = free_port()
    with sqlite_server(
        tmp_path_factory.mktemp("exposed"),
        internal_port=str(internal),
        header_timeout_s=str(HEADER_TIMEOUT_S),
        max_header_bytes=str(MAX_HEADER_BYTES),
        timeout_keep_alive_s="60",
    ) as server:
        yield Exposed(server, internal)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# --- the internal port ----------------------------------------------------------------------


def test_the_internal_api_and_metrics_answer_on_the_internal_port_alone(exposed: Exposed) -> None:
    public, private = exposed.server.base_url, exposed.private_url
    availability = f"/internal/v1/users/{uid('user')}/availability"
    with httpx.Client(timeout=10) as http:
        assert http.get(public + availability, headers=exposed.service()).status_code == 404
        assert http.get(private + availability, headers=exposed.service()).status_code == 200
        # The same 404 with or without a token: the public port does not even say it exists.
        assert http.get(public + availability).status_code == 404
        assert http.get(public + "/metrics").status_code == 404
        scrape = http.get(private + "/metrics")
        assert scrape.status_code == 200
        assert "worksession_open_sockets" in scrape.text
        # The rest stays on the public port.
        assert http.get(public + "/healthz").status_code == 200
        assert http.get(private + "/healthz").status_code == 404
        assert http.get(private + "/openapi.json").status_code == 404


def test_no_websocket_opens_on_the_internal_port(exposed: Exposed) -> None:
    token = exposed.server.token(uid("seeker"), "seeker")
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"ws://127.0.0.1:{exposed.internal_port}/ws/work/seeker/",
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
        )
    assert refused.value.response.status_code == 403


@pytest.mark.skipif(not REDIS_URL, reason="several workers need Redis (CI sets it)")
def test_every_worker_serves_both_ports(tmp_path: Path) -> None:
    internal = free_port()
    with sqlite_server(
        tmp_path,
        workers="2",
        internal_port=str(internal),
        redis_url=str(REDIS_URL),
        redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
    ) as server:
        public = _port(server.base_url)
        workers = _children(server.process.pid)
        holding = {pid: _listening_ports(pid) & {public, internal} for pid in workers}
        serving_both = [pid for pid, ports in holding.items() if ports == {public, internal}]
        assert len(serving_both) == 2, holding
        for _ in range(6):  # a connection each, spread over the workers by the kernel
            assert httpx.get(f"http://127.0.0.1:{internal}/metrics", timeout=10).status_code == 200
            assert httpx.get(server.base_url + "/metrics", timeout=10).status_code == 404


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports a process holds a listening socket of (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# --- the header deadline ----------------------------------------------------------------------


def _seconds_until_closed(sock: socket.socket, *, trickle: bool, limit: float) -> float:
    """How long the server keeps ``sock`` open after this call; with ``trickle``, while
    the client adds a byte of header every 0.2 s."""
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < limit:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                if sock.recv(4096) == b"":
                    return elapsed
            except ConnectionResetError:
                return elapsed
        elif trickle:
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                return elapsed
    raise AssertionError(f"a half-sent request header held its connection for {limit:.0f} s")


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "one-byte-at-a-time"])
def test_a_half_sent_header_is_dropped_within_the_header_timeout(
    exposed: Exposed, trickle: bool
) -> None:
    with socket.create_connection(("127.0.0.1", _port(exposed.server.base_url))) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: worksession\r\nX-Slow: ")
        held = _seconds_until_closed(sock, trickle=trickle, limit=HEADER_TIMEOUT_S + SLACK_S)
    # Not before the deadline: an honest client that is merely slow gets all of it.
    assert held >= HEADER_TIMEOUT_S * 0.8


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(
    exposed: Exposed,
) -> None:
    with socket.create_connection(("127.0.0.1", _port(exposed.server.base_url))) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: worksession\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        # The keep-alive timer (60 s here) stops at the first byte of the next request.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        _seconds_until_closed(sock, trickle=True, limit=HEADER_TIMEOUT_S + SLACK_S)


def test_an_idle_kept_alive_connection_lives_as_long_as_keep_alive_says(
    exposed: Exposed,
) -> None:
    # Idle between requests is the keep-alive timer's business (60 s here): a connection a
    # load balancer keeps open must not be cut at the header deadline.
    with socket.create_connection(("127.0.0.1", _port(exposed.server.base_url))) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: worksession\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(4096)
                assert chunk, "the server closed an idle kept-alive connection"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(HEADER_TIMEOUT_S * 2.5)


def test_a_complete_header_is_answered(exposed: Exposed) -> None:
    # The deadline is for the header alone: a request that completes its header in time is
    # served, however long it then takes. A header just under the size limit is fine too.
    padding = {"X-Padding": "p" * (MAX_HEADER_BYTES - 1024)}
    response = httpx.get(exposed.server.base_url + "/healthz", headers=padding, timeout=10)
    assert response.status_code == 200


def test_an_endless_header_is_refused_with_431_before_it_fills_memory(exposed: Exposed) -> None:
    with socket.create_connection(("127.0.0.1", _port(exposed.server.base_url))) as sock:
        sock.settimeout(10)
        start = b"GET /healthz HTTP/1.1\r\nHost: worksession\r\nX-Big: "
        # One byte past the limit and no further: the server can only decide once it has
        # read every byte, so it closes with nothing of ours unread (a close with unread
        # bytes is a reset, which can discard the answer and fail our next send).
        header = start + b"a" * (MAX_HEADER_BYTES + 1 - len(start))
        for offset in range(0, len(header), 4096):
            sock.sendall(header[offset : offset + 4096])
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer


# --- ids in the access log ----------------------------------------------------------------


def test_the_access_log_names_routes_not_ids(exposed: Exposed) -> None:
    public, private = exposed.server.base_url, exposed.private_url
    user, session, other_session = uid("user"), str(uuid.uuid4()), str(uuid.uuid4())
    work_id, stray = "987654321", uid("stray")
    participant = {"Authorization": f"Bearer {exposed.server.token(uid('seeker'), 'seeker')}"}
    with httpx.Client(timeout=10) as http:
        assert (
            http.get(
                f"{private}/internal/v1/users/{user}/availability", headers=exposed.service()
            ).status_code
            == 200
        )
        assert (
            http.get(f"{public}/v1/sessions/{session}/messages", headers=participant).status_code
            == 404
        )
        assert (
            http.get(
                f"{private}/internal/v1/sessions/{other_session}", headers=exposed.service()
            ).status_code
            == 404
        )
        assert (
            http.get(
                f"{private}/internal/v1/work-orders/{work_id}", headers=exposed.service()
            ).status_code
            == 404
        )
        assert http.get(f"{public}/no-such-thing/{stray}").status_code == 404
    expected = [
        '"GET /internal/v1/users/{user_id}/availability HTTP/1.1" 200',
        '"GET /v1/sessions/{session_id}/messages HTTP/1.1" 404',
        '"GET /internal/v1/sessions/{session_id} HTTP/1.1" 404',
        '"GET /internal/v1/work-orders/{work_id} HTTP/1.1" 404',
        '"GET <no route> HTTP/1.1" 404',
    ]
    deadline = time.monotonic() + 10
    while not all(line in exposed.server.log() for line in expected):
        assert time.monotonic() < deadline, exposed.server.log()
        time.sleep(0.05)
    log = exposed.server.log()
    for secret in (user, session, other_session, work_id, stray):
        assert secret not in log
    # Binding the internal port must not have handed the process's logging back to
    # uvicorn's defaults (its own format, access lines past our filters).
    assert "INFO:     " not in log


# --- the concurrency limit ----------------------------------------------------------------


def test_past_the_concurrency_limit_new_requests_get_503_but_not_on_the_internal_port(
    tmp_path: Path,
) -> None:
    internal = free_port()
    with (
        sqlite_server(tmp_path, internal_port=str(internal), limit_concurrency="3") as server,
        ExitStack() as idle,
        httpx.Client(timeout=10) as http,
    ):
        assert http.get(server.base_url + "/healthz").status_code == 200
        port = _port(server.base_url)
        for _ in range(3):
            idle.enter_context(socket.create_connection(("127.0.0.1", port)))
        deadline = time.monotonic() + 10
        # New connection each time: the server must have seen the idle ones first.
        while (status := httpx.get(server.base_url + "/healthz", timeout=10).status_code) != 503:
            assert status == 200
            assert time.monotonic() < deadline, "the limit never applied"
            time.sleep(0.05)
        # A flood of public connections never locks the other back-end services out.
        assert httpx.get(f"http://127.0.0.1:{internal}/metrics", timeout=10).status_code == 200
        idle.close()
        deadline = time.monotonic() + 10
        while httpx.get(server.base_url + "/healthz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the limit outlived the connections"
            time.sleep(0.05)


# --- production without an internal port ----------------------------------------------------


def test_in_production_metrics_and_the_internal_api_need_a_service_key_token(
    tmp_path: Path,
) -> None:
    with sqlite_server(tmp_path, env="production", service_jwt_secret=SERVICE_SECRET) as server:
        shared = server.settings  # the participant key only
        split = Settings(jwt_secret=shared.jwt_secret, service_jwt_secret=SERVICE_SECRET)

        def bearer(settings: Settings, user_type: str) -> dict[str, str]:
            token = build_verifier(settings).issue(sub="caller", user_type=user_type)  # type: ignore[arg-type]
            return {"Authorization": f"Bearer {token}"}

        availability = f"/internal/v1/users/{uid('user')}/availability"
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            for path in ("/metrics", availability):
                assert http.get(path).status_code == 401
                # A service token signed with the participant key: not one of ours.
                assert http.get(path, headers=bearer(shared, "service")).status_code == 401
                assert http.get(path, headers=bearer(split, "seeker")).status_code == 403
                assert http.get(path, headers=bearer(split, "service")).status_code == 200
            # And the service key cannot sign a participant token.
            me = "/v1/me/session"
            assert http.get(me, headers=bearer(split, "seeker")).status_code == 404
            seeker_by_service_key = build_verifier(Settings(jwt_secret=SERVICE_SECRET)).issue(
                sub="caller", user_type="seeker"
            )
            assert (
                http.get(
                    me, headers={"Authorization": f"Bearer {seeker_by_service_key}"}
                ).status_code
                == 401
            )
