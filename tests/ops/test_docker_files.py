"""The container files, checked without a Docker engine: hadolint on the Dockerfile, the
Dockerfile's and compose file's structure, and the entrypoint run against a stand-in
``worksession`` command."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (the dev extra installs it on Linux x86_64)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_builds_a_wheel_then_runs_it_as_a_non_root_user() -> None:
    instructions = _instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    assert re.fullmatch(r"python:3\.11-slim\S* AS builder", froms[0], re.IGNORECASE)
    assert any(k == "COPY" and "--from=builder" in a for k, a in instructions)
    for image in froms:
        name = image.split()[0]
        assert ":" in name, f"{name} has no tag"
        assert not name.endswith(":latest"), name
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "8000") in instructions
    (healthcheck,) = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    (entrypoint,) = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert "worksession-entrypoint" in entrypoint
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert any("docker/entrypoint.sh" in c for c in copies)


def test_the_build_context_leaves_out_tests_caches_and_secrets() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # only what is listed after it goes in
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "src", "docker"}
    assert {"**/*.db", "**/.env", "**/__pycache__"} <= set(lines)


def _run_entrypoint(tmp_path: Path, **env: str) -> list[list[str]]:
    """Run the entrypoint with a ``worksession`` that only records its arguments."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    fake = bin_dir / "worksession"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    subprocess.run(["sh", str(ENTRYPOINT)], env=environment, check=True, timeout=30)
    return [line.split() for line in calls.read_text().splitlines()]


def test_the_entrypoint_migrates_then_serves(tmp_path: Path) -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    calls = _run_entrypoint(tmp_path, WORKSESSION_REDIS_URL="redis://redis:6379/0")
    assert calls == [
        ["migrate"],
        ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"],  # noqa: S104
    ]


def test_the_entrypoint_runs_one_worker_without_redis(tmp_path: Path) -> None:
    # Several workers with the in-process broker could not reach each other's sockets.
    assert _run_entrypoint(tmp_path)[-1][-2:] == ["--workers", "1"]


def test_the_entrypoint_takes_the_worker_count_from_workers(tmp_path: Path) -> None:
    calls = _run_entrypoint(tmp_path, WORKERS="4", WORKSESSION_REDIS_URL="redis://r:6379/0")
    assert calls[-1][-2:] == ["--workers", "4"]


def test_a_failed_migration_stops_the_entrypoint(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "worksession"
    fake.write_text('#!/bin/sh\n[ "$1" = migrate ] && exit 3\necho served > "$0.served"\n')
    fake.chmod(0o755)
    result = subprocess.run(
        ["sh", str(ENTRYPOINT)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False
    )
    assert result.returncode == 3
    assert not (bin_dir / "worksession.served").exists()


def test_compose_runs_two_workers_on_postgres_and_redis() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "worker-1", "worker-2"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]
    ports = set()
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["build"] == "."
        env = worker["environment"]
        assert "@postgres:5432/" in env["WORKSESSION_DATABASE_URL"]
        assert env["WORKSESSION_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["WORKSESSION_REDIS_URL"].startswith("redis://redis:6379")
        assert env["WORKSESSION_ENV"] == "production"
        for dependency in ("postgres", "redis"):
            assert worker["depends_on"][dependency]["condition"] == "service_healthy"
        (port,) = worker["ports"]
        ports.add(port.split(":")[0])
    assert len(ports) == 2, "each worker needs its own host port"
    # One worker migrates before the other starts: never two migrations at once.
    assert services["worker-2"]["depends_on"]["worker-1"]["condition"] == "service_healthy"


def test_compose_pins_every_image_and_requires_both_secrets() -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert ":latest" not in text
    for worker in ("worker-1", "worker-2"):
        env = _compose()["services"][worker]["environment"]
        for name in ("WORKSESSION_JWT_SECRET", "WORKSESSION_SERVICE_JWT_SECRET"):
            assert env[name].startswith(f"${{{name}:?")  # no default secret, ever


def test_compose_keeps_the_internal_port_unpublished() -> None:
    for worker in ("worker-1", "worker-2"):
        service = _compose()["services"][worker]
        internal = service["environment"]["WORKSESSION_INTERNAL_PORT"]
        assert all(not port.endswith(f":{internal}") for port in service["ports"])


# --- the image's start-up configuration, run without Docker -----------------------------

IMAGE_SECRETS = {
    "WORKSESSION_JWT_SECRET": "image-participant-secret-0123456789-abcdefgh",
    "WORKSESSION_SERVICE_JWT_SECRET": "image-service-secret-0123456789-abcdefghijk",
}


def _image_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a container of the image starts with: the ENV of the last stage,
    with PATH pointing at this checkout's ``worksession`` instead of /opt/venv."""
    instructions = _instructions()
    last_stage = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    env: dict[str, str] = {}
    for keyword, args in instructions[last_stage:]:
        if keyword == "ENV":
            for assignment in shlex.split(args):
                name, _, value = assignment.partition("=")
                env[name] = value
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    env["HOME"] = str(tmp_path)
    return env | extra


def _serve_host() -> str:
    match = re.search(r"exec worksession serve --host (\S+)", ENTRYPOINT.read_text())
    assert match, "the entrypoint no longer runs worksession serve --host ..."
    return match.group(1)


def _one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_the_image_runs_in_production_mode() -> None:
    env = _image_environment(Path("/nonexistent"))
    assert env["WORKSESSION_ENV"] == "production"
    assert env["WORKSESSION_INTERNAL_PORT"] != "8000"


@pytest.mark.parametrize(
    ("secrets", "reason"),
    [
        ({}, "WORKSESSION_JWT_SECRET is the development default"),
        (
            {"WORKSESSION_JWT_SECRET": IMAGE_SECRETS["WORKSESSION_JWT_SECRET"]},
            "WORKSESSION_SERVICE_JWT_SECRET (or WORKSESSION_SERVICE_JWT_PUBLIC_KEY) is not set",
        ),
    ],
    ids=["no-secret", "no-service-secret"],
)
def test_the_image_refuses_to_start_without_real_secrets(
    tmp_path: Path, secrets: dict[str, str], reason: str
) -> None:
    env = _image_environment(tmp_path, **secrets)
    entrypoint = subprocess.run(
        ["sh", str(ENTRYPOINT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert reason in _one_line_refusal(entrypoint)
    # The serve command of the entrypoint on its own (in case migrate ever stops checking).
    serve = subprocess.run(
        ["worksession", "serve", "--host", _serve_host(), "--port", str(_free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reason in _one_line_refusal(serve)
    assert not (tmp_path / "worksession.db").exists()  # refused before touching anything


def test_the_image_starts_with_real_secrets(tmp_path: Path) -> None:
    # The refusals above are about the secrets, not about something else in the image's
    # environment: with both secrets given, the entrypoint's first step succeeds.
    env = _image_environment(tmp_path, **IMAGE_SECRETS)
    result = subprocess.run(
        ["worksession", "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "worksession.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
