"""The servers under test, started the way an operator starts them.

``worksession`` runs as ``python -m worksession serve`` on a fresh PostgreSQL database (made
by the migrations, dropped afterwards) with Redis, or as the embedded default: one process
on a fresh SQLite file, without Redis (it migrates the file itself when it starts). "Two
workers" are two such processes on two ports sharing the database and Redis: that is what
``serve --workers 2`` runs, with the placement of each socket under the benchmark's
control, so that same-worker and cross-worker traffic are measured apart (uvicorn's shared
listening socket would mix them at random).

The baseline, :mod:`bench.relay`, runs under the same uvicorn flags as ``serve`` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench.processes import ProcessGroup
from worksession import migrate
from worksession.config import Settings
from worksession.lifespan import build_verifier

SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
START_TIMEOUT_S = 60.0

# The uvicorn flags of ``worksession serve`` (src/worksession/cli.py), for the baseline.
UVICORN_FLAGS = (
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--ws",
    "websockets-sansio",
    "--ws-max-size",
    "16384",
    "--ws-per-message-deflate",
    "False",
    "--no-access-log",
    "--log-level",
    "warning",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin_url(server_url: str) -> str:
    return (
        make_url(server_url)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


async def create_database(server_url: str) -> str:
    """A new, empty database on ``server_url``'s server; its SQLAlchemy URL."""
    name = f"worksession_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_admin_url(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return (
        make_url(server_url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


async def drop_database(server_url: str, url: str) -> None:
    admin = await asyncpg.connect(_admin_url(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


def asyncpg_dsn(url: str) -> str:
    """``url`` as asyncpg takes it (no ``+asyncpg`` driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def settings() -> Settings:
    return Settings(jwt_secret=SECRET)


def token(sub: str, user_type: str, ttl_s: float = 24 * 3600) -> str:
    return build_verifier(settings()).issue(
        sub=sub,
        user_type=user_type,  # type: ignore[arg-type]
        ttl_s=ttl_s,
    )


@dataclass
class Process:
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Deployment:
    """One or more server processes; ``group`` reads their CPU time and memory."""

    processes: list[Process]
    database_url: str | None = None
    redis_prefix: str | None = None
    """The ``WORKSESSION_REDIS_PREFIX`` of the servers: a publisher outside them needs it."""
    group: ProcessGroup = field(init=False)

    def __post_init__(self) -> None:
        self.group = ProcessGroup.under(p.popen.pid for p in self.processes)

    def ws_url(self, worker: int) -> str:
        return self.processes[worker % len(self.processes)].ws_url

    def tracebacks(self) -> list[str]:
        return [p.log() for p in self.processes if "Traceback" in p.log()]


def _wait_healthy(process: Process, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.popen.poll() is not None:
            raise RuntimeError(f"server exited:\n{process.log()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(process.http_url + path, timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            process.popen.kill()
            raise RuntimeError(f"server did not start:\n{process.log()}")
        time.sleep(0.05)


REPOSITORY = Path(__file__).resolve().parent.parent


def _spawn(command: list[str], env: Mapping[str, str], log_dir: Path, port: int) -> Process:
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command, env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=REPOSITORY
        )
    return Process(port, popen, log_path)


def _stop(processes: list[Process]) -> None:
    for process in processes:
        process.popen.terminate()
    for process in processes:
        try:
            process.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()


def _clean_environment() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WORKSESSION_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }


@contextlib.contextmanager
def worksession(
    database_url: str,
    redis_url: str | None,
    log_dir: Path,
    *,
    workers: int = 1,
    **overrides: str,
) -> Iterator[Deployment]:
    """``workers`` ``worksession serve`` processes on ``database_url`` (already migrated,
    unless it is SQLite: ``serve`` migrates the embedded default itself) and Redis, with
    ``WORKSESSION_<NAME>`` from ``overrides``. ``redis_url=None`` leaves
    ``WORKSESSION_REDIS_URL`` unset: the in-process broker, which serves one worker only.
    Logs at WARNING, as a production deployment under load would run; anything logged is
    kept in ``log_dir``."""
    if redis_url is None and workers > 1:
        raise ValueError("several workers need Redis (the in-process broker serves one)")
    env = _clean_environment()
    env.update(
        {
            "WORKSESSION_ENV": "test",
            "WORKSESSION_DATABASE_URL": database_url,
            "WORKSESSION_JWT_SECRET": SECRET,
            "WORKSESSION_LOG_LEVEL": "WARNING",
        }
    )
    if redis_url is not None:
        env["WORKSESSION_REDIS_URL"] = redis_url
        env["WORKSESSION_REDIS_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}"
    env.update({f"WORKSESSION_{k.upper()}": v for k, v in overrides.items()})
    processes: list[Process] = []
    try:
        for _ in range(workers):
            port = free_port()
            command = [sys.executable, "-m", "worksession", "serve", "--port", str(port)]
            processes.append(_spawn(command, env, log_dir, port))
        for process in processes:
            _wait_healthy(process, "/healthz")
        yield Deployment(processes, database_url, env.get("WORKSESSION_REDIS_PREFIX"))
    finally:
        _stop(processes)


@contextlib.contextmanager
def relay(log_dir: Path, *, workers: int = 1) -> Iterator[Deployment]:
    """The bare relay (:mod:`bench.relay`), one uvicorn process per worker."""
    processes: list[Process] = []
    try:
        for _ in range(workers):
            port = free_port()
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.relay:app",
                "--port",
                str(port),
                *UVICORN_FLAGS,
            ]
            processes.append(_spawn(command, _clean_environment(), log_dir, port))
        for process in processes:
            _wait_healthy(process, "/")
        yield Deployment(processes)
    finally:
        _stop(processes)


def migrate_database(url: str) -> None:
    migrate.upgrade(url)


async def start_in_thread(
    running: contextlib.ExitStack, deployment: contextlib.AbstractContextManager[Deployment]
) -> Deployment:
    """Enter ``deployment`` (which blocks until they answer) in a thread, so that the event
    loop starts the load generators meanwhile; ``running`` stops them."""
    return await asyncio.to_thread(running.enter_context, deployment)


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the embedded default's database file at ``path``."""
    return f"sqlite+aiosqlite:///{path.resolve()}"
