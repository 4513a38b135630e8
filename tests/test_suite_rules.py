"""Rules of the test suite itself: every test is bounded in time, and a run without the
PostgreSQL URL reports what it skipped instead of collecting fewer tests."""

from __future__ import annotations

import pytest

from tests.conftest import BACKENDS, NEEDS_PG_URL, PG_URL


def test_every_test_is_bounded_in_time(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 300


def test_postgresql_variants_are_collected_without_the_url() -> None:
    names = [b if isinstance(b, str) else b.values[0] for b in BACKENDS]
    assert names == ["sqlite", "postgresql"]
    (postgresql,) = [b for b in BACKENDS if not isinstance(b, str)]
    (skip,) = postgresql.marks
    assert skip.name == "skipif"
    assert skip.args == (not PG_URL,)
    assert skip.kwargs["reason"] == NEEDS_PG_URL
    assert "WORKSESSION_TEST_DATABASE_URL" in NEEDS_PG_URL


def test_a_postgresql_variant_is_skipped_or_run_never_dropped(
    request: pytest.FixtureRequest, db_url: str
) -> None:
    # Reached on both backends when the URL is set; without it the postgresql variant of
    # this very test is reported as skipped (see the run's summary).
    backend = request.node.callspec.params["db_url"]
    assert db_url.startswith(backend)
