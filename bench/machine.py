"""What the numbers were measured on: versions, CPU model, cores, and the load the machine
carried before the run (the machines are shared, so that is part of the result)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
PACKAGES = ("worksession", "uvicorn", "websockets", "sqlalchemy", "asyncpg", "redis", "fastapi")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def _postgres_version(url: str) -> str:
    output = _command_output(["psql", url.replace("+asyncpg", ""), "-Atc", "SHOW server_version"])
    return output.strip() or "unknown"


def _redis_version(url: str) -> str:
    for line in _command_output(["redis-cli", "-u", url, "INFO", "server"]).splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def describe(postgres_url: str, redis_url: str) -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": versions,
        "postgresql": _postgres_version(postgres_url),
        "redis": _redis_version(redis_url),
    }


def measured_at() -> dict[str, Any]:
    """The commit the servers ran, and the files under ``src`` that differed from it
    (the checkout is shared with people changing the service while it is measured)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPOSITORY, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short=12", "HEAD"),
        "uncommitted_in_src": git("status", "--porcelain", "--", "src").splitlines(),
    }
