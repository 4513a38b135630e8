"""The command line, run as a user runs it: in a subprocess, with no configuration."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from worksession.config import Settings
from worksession.lifespan import build_verifier


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bare_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WORKSESSION_")}


def test_serve_with_no_configuration_answers_healthz(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "worksession", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_bare_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up in 30 s"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.json() == {"status": "ok", "database": "ok", "broker": "ok"}
        assert (tmp_path / "worksession.db").exists()
    finally:
        process.terminate()
        output = process.communicate(timeout=15)[0]
    assert "sqlite+aiosqlite:///./worksession.db" in output  # it says what it uses
    assert "Traceback" not in output


def test_token_command_prints_a_token_the_service_accepts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worksession", "token", "--sub", "alice", "--user-type", "seeker"],
        env=_bare_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    claims = build_verifier(Settings()).verify(result.stdout.strip())
    assert (claims.sub, claims.user_type) == ("alice", "seeker")


def test_token_command_refuses_an_unknown_user_type() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worksession", "token", "--sub", "a", "--user-type", "admin"],
        env=_bare_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2


def test_migrate_and_sweep_on_a_fresh_file(tmp_path: Path) -> None:
    env = _bare_environment() | {
        "WORKSESSION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    }
    for command in (["migrate"], ["sweep"]):
        result = subprocess.run(
            [sys.executable, "-m", "worksession", *command],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
    assert "deleted 0 chat messages" in result.stdout


def test_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worksession", "serve", "--workers", "2"],
        env=_bare_environment(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 2
    assert "WORKSESSION_REDIS_URL" in result.stderr


async def test_database_errors_never_carry_bound_values(tmp_path: Path) -> None:
    """A failing statement's text must not hold what was bound to it (chat text, phones)."""
    from sqlalchemy import text

    from worksession.kit.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(Exception, match="no_such_table") as caught:
            async with db.transaction() as s:
                await s.execute(
                    text("SELECT * FROM no_such_table WHERE x = :x"), {"x": "9876543210"}
                )
        assert "9876543210" not in str(caught.value)
    finally:
        await db.dispose()
