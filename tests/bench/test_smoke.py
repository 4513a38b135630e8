"""The benchmarks keep working: every scenario at its smoke size, end to end.

A smoke run decides no target (the sizes are too small to mean anything) but runs every
check a full run does, loss and order checks included, against real servers, PostgreSQL
and Redis. It writes into a scratch directory, never over the committed results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import ORDER
from tests.conftest import PG_URL, REDIS_URL
from tests.scaleout.conftest import needs_postgresql_and_redis

REPOSITORY = Path(__file__).resolve().parents[2]
WITHOUT_TARGETS = {"fanout"}
"""Scenarios the current targets say nothing about: they measure, and judge nothing."""


@needs_postgresql_and_redis
@pytest.mark.timeout(660)  # about 170 s on a quiet machine; the run itself is bounded at 600 s
def test_every_scenario_runs_at_smoke_size(tmp_path: Path) -> None:
    assert PG_URL
    assert REDIS_URL
    results, docs = tmp_path / "results", tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--postgres",
            PG_URL,
            "--redis",
            REDIS_URL,
            "--results",
            str(results),
            "--docs",
            str(docs),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    written = {path.stem: json.loads(path.read_text()) for path in results.glob("*.json")}
    assert sorted(written) == sorted(ORDER)
    report = docs.read_text()
    for name, result in written.items():
        assert result["rows"], f"{name} measured nothing"
        assert result["targets"] or name in WITHOUT_TARGETS, f"{name} states no target"
        assert all(t["met"] is None for t in result["targets"]), "a smoke run decides nothing"
        assert result["title"] in report
