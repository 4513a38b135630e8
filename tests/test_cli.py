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
from worksession.kit.jwt import InvalidToken
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
    assert "erased the personal data of 0 sessions and 0 work orders" in result.stdout


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


LONG_SECRET = "participant-secret-0123456789-abcdefghijklmnop"
SERVICE_SECRET = "service-secret-0123456789-abcdefghijklmnopqrs"


def _refused(tmp_path: Path, args: list[str], **env: str) -> str:
    """Run ``worksession <args>`` expecting a refusal: the one stderr line."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "worksession", *args],
            env=_bare_environment() | env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"worksession {' '.join(args)} started instead of refusing")
    assert result.returncode == 78, result.stderr  # EX_CONFIG
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("worksession: refusing to start: ")
    return lines[0].removeprefix("worksession: refusing to start: ")


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "WORKSESSION_JWT_SECRET is the development default"),
        (
            {"WORKSESSION_JWT_SECRET": "short-but-not-empty"},
            "WORKSESSION_JWT_SECRET is shorter than 32 bytes",
        ),
        (
            {"WORKSESSION_JWT_SECRET": LONG_SECRET},
            "WORKSESSION_SERVICE_JWT_SECRET (or WORKSESSION_SERVICE_JWT_PUBLIC_KEY) is not set: "
            "in production service tokens need a key of their own",
        ),
        (
            {"WORKSESSION_JWT_SECRET": LONG_SECRET, "WORKSESSION_SERVICE_JWT_SECRET": LONG_SECRET},
            "WORKSESSION_SERVICE_JWT_SECRET is the participant secret",
        ),
    ],
    ids=["default-secret", "short-secret", "no-service-key", "service-key-is-participant-key"],
)
def test_production_refuses_to_start_with_one_line(
    tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    port = str(_free_port())
    assert _refused(tmp_path, ["serve", "--port", port], WORKSESSION_ENV="production", **env) == (
        reason
    )


def test_a_webhook_url_without_a_secret_refuses_to_start(tmp_path: Path) -> None:
    env = {
        "WORKSESSION_ENV": "production",
        "WORKSESSION_JWT_SECRET": LONG_SECRET,
        "WORKSESSION_SERVICE_JWT_SECRET": SERVICE_SECRET,
        "WORKSESSION_WEBHOOK_URL": "https://push.example/hooks",
    }
    assert _refused(tmp_path, ["serve", "--port", str(_free_port())], **env) == (
        "WORKSESSION_WEBHOOK_URL is set without WORKSESSION_WEBHOOK_SECRET"
    )


@pytest.mark.parametrize(
    ("url", "secret", "reason"),
    [
        ("push.example/hooks", SERVICE_SECRET, "not an http:// or https:// URL"),
        ("ftp://push.example/hooks", SERVICE_SECRET, "not an http:// or https:// URL"),
        ("https://push.example:port/hooks", SERVICE_SECRET, "not a URL"),
        ("http://push.example/hooks", SERVICE_SECRET, "not https: in production it must be"),
        ("https://push.example/hooks", "short", "shorter than 32 bytes"),
    ],
    ids=["no-scheme", "ftp", "bad-port", "http-in-production", "short-secret"],
)
def test_a_webhook_url_or_secret_unfit_for_production_refuses_to_start(
    tmp_path: Path, url: str, secret: str, reason: str
) -> None:
    env = {
        "WORKSESSION_ENV": "production",
        "WORKSESSION_JWT_SECRET": LONG_SECRET,
        "WORKSESSION_SERVICE_JWT_SECRET": SERVICE_SECRET,
        "WORKSESSION_WEBHOOK_URL": url,
        "WORKSESSION_WEBHOOK_SECRET": secret,
    }
    refused = _refused(tmp_path, ["serve", "--port", str(_free_port())], **env)
    name = "SECRET" if secret == "short" else "URL"
    assert refused == f"WORKSESSION_WEBHOOK_{name} is {reason}"


@pytest.mark.parametrize("mode", ["dev", "test"])
def test_a_non_loopback_address_refuses_the_default_secret_in_any_mode(
    tmp_path: Path, mode: str
) -> None:
    args = ["serve", "--host", "0.0.0.0", "--port", str(_free_port())]  # noqa: S104
    assert _refused(tmp_path, args, WORKSESSION_ENV=mode) == (
        "WORKSESSION_JWT_SECRET is the development default; refusing to listen on 0.0.0.0"
    )


def test_a_non_loopback_address_refuses_a_short_service_secret(tmp_path: Path) -> None:
    args = ["serve", "--host", "::", "--port", str(_free_port())]
    env = {"WORKSESSION_JWT_SECRET": LONG_SECRET, "WORKSESSION_SERVICE_JWT_SECRET": "too-short"}
    assert _refused(tmp_path, args, **env) == (
        "WORKSESSION_SERVICE_JWT_SECRET is shorter than 32 bytes; refusing to listen on ::"
    )


def test_a_bad_setting_is_one_line_that_never_echoes_a_secret(tmp_path: Path) -> None:
    secret = "a-secret-that-must-never-be-printed"
    reason = _refused(
        tmp_path,
        ["migrate"],
        WORKSESSION_ENV="production",
        WORKSESSION_JWT_SECRET=secret,
        WORKSESSION_OFFER_TTL_S="soon",
    )
    assert reason.startswith("WORKSESSION_OFFER_TTL_S: Input should be a valid number")
    assert secret not in reason


def test_the_internal_port_may_not_be_the_public_port(tmp_path: Path) -> None:
    port = str(_free_port())
    assert _refused(tmp_path, ["serve", "--port", port], WORKSESSION_INTERNAL_PORT=port) == (
        "WORKSESSION_INTERNAL_PORT is the public port (--port)"
    )


def test_token_mints_service_tokens_with_the_service_key() -> None:
    env = _bare_environment() | {
        "WORKSESSION_JWT_SECRET": LONG_SECRET,
        "WORKSESSION_SERVICE_JWT_SECRET": SERVICE_SECRET,
    }
    result = subprocess.run(
        [sys.executable, "-m", "worksession", "token", "--sub", "svc", "--user-type", "service"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    settings = Settings(jwt_secret=LONG_SECRET, service_jwt_secret=SERVICE_SECRET)
    assert build_verifier(settings).verify(result.stdout.strip()).user_type == "service"
    with pytest.raises(InvalidToken):
        build_verifier(Settings(jwt_secret=LONG_SECRET)).verify(result.stdout.strip())


def _public_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_token_says_in_one_line_when_it_has_no_key_to_sign_with() -> None:
    # Service tokens verified by a public key: this command holds no key that signs them.
    env = _bare_environment() | {
        "WORKSESSION_JWT_SECRET": LONG_SECRET,
        "WORKSESSION_JWT_ALGORITHMS": "HS256,ES256",
        "WORKSESSION_JWT_PUBLIC_KEY": _public_pem(),
        "WORKSESSION_SERVICE_JWT_PUBLIC_KEY": _public_pem(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "worksession", "token", "--sub", "svc", "--user-type", "service"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "worksession: cannot sign a service token: "
        "issuing needs an HS* algorithm and an HMAC secret"
    ]
