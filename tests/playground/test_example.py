"""examples/session.py, run as a back-end developer runs it, against a live server with
the playground on: the README points to it, so it must keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.realtime.conftest import dedicated_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "session.py"


def test_the_example_plays_a_whole_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    with dedicated_server("sqlite", tmp_path_factory.mktemp("example"), playground="true") as (
        server
    ):
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--base", server.base_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status: read" in done.stdout
    assert "closed the seeker's socket with 1000" in done.stdout
