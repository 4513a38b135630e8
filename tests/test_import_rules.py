"""The layering, checked on the source: transport never touches SQL or Redis, services never
know about HTTP, the deciding functions do no I/O and read no clock, and ``kit`` depends on
nothing of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "worksession"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(predicate: object) -> list[Path]:
    assert callable(predicate)
    return sorted(p for p in PACKAGE.rglob("*.py") if predicate(p.relative_to(PACKAGE).as_posix()))


def _is_transport(rel: str) -> bool:
    return rel.startswith(("realtime/", "ops/")) or rel.endswith("rest.py")


def _is_service(rel: str) -> bool:
    return rel.endswith(("repository.py", "render.py", "events.py")) or (
        rel.startswith(
            (
                "sessions/",
                "orders/",
                "chat/",
                "availability/",
                "eventlog/",
                "pipeline/",
                "webhooks/",
            )
        )
        and not _is_transport(rel)
    )


DECIDING = (
    "decide.py",
    "geo.py",
    "availability/flags.py",
    "chat/messages.py",
    "chat/receipts.py",
    "eventlog/events.py",
    "eventlog/render.py",
    "orders/offers.py",
    "pipeline/commands.py",
    "pipeline/decision.py",
    "pipeline/rows.py",
    "pipeline/world.py",
    "sessions/access.py",
    "sessions/lifecycle.py",
    "sessions/location.py",
    "sessions/mediums.py",
    "sessions/retention.py",
    "webhooks/outbox.py",
)
"""The deciding functions and what they are made of: pure, whatever the command."""

IO_PACKAGES = {"sqlalchemy", "asyncpg", "aiosqlite", "redis", "fastapi", "starlette", "uvicorn"}
CLOCK_CALLS = {"utcnow", "now", "today", "time", "monotonic", "perf_counter", "uuid4", "random"}


def _top(name: str) -> str:
    return name.split(".", 1)[0]


TRANSPORT = _modules(_is_transport)
SERVICES = _modules(_is_service)
KIT = _modules(lambda rel: rel.startswith("kit/"))


def test_the_rules_see_the_code() -> None:
    # A rule that matches no file passes vacuously; make sure each one bites.
    assert all((PACKAGE / rel).is_file() for rel in DECIDING)
    assert TRANSPORT, "no transport modules found"
    assert SERVICES, "no service modules found"
    assert KIT, "no kit modules found"


@pytest.mark.parametrize("path", TRANSPORT, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_transport_never_imports_sql_or_redis(path: Path) -> None:
    offending = {n for n in _imports(path) if _top(n) in {"sqlalchemy", "redis", "asyncpg"}}
    offending |= {n for n in _imports(path) if n.endswith((".repository", ".models"))}
    offending |= {n for n in _imports(path) if n.startswith("worksession.models")}
    assert not offending, f"{path.name} imports {sorted(offending)}"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_services_never_import_the_web_framework(path: Path) -> None:
    offending = {n for n in _imports(path) if _top(n) in {"fastapi", "starlette", "uvicorn"}}
    assert not offending, f"{path.name} imports {sorted(offending)}"


@pytest.mark.parametrize("rel", DECIDING)
def test_deciding_code_does_no_io_and_reads_no_clock(rel: str) -> None:
    path = PACKAGE / rel
    tree = ast.parse(path.read_text(), str(path))
    io = {n for n in _imports(path) if _top(n) in IO_PACKAGES}
    io |= {n for n in _imports(path) if n.endswith(".repository") or "kit.db" in n}
    assert not io, f"{rel} imports {sorted(io)}"
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert not calls & CLOCK_CALLS, f"{rel} calls {sorted(calls & CLOCK_CALLS)}"


def test_every_deciding_function_is_in_a_pure_module() -> None:
    from worksession.decide import DECIDERS

    modules = {
        f.__module__.removeprefix("worksession.").replace(".", "/") + ".py"
        for f in DECIDERS.values()
    }
    assert modules <= set(DECIDING)


@pytest.mark.parametrize("path", KIT, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_kit_imports_nothing_of_ours(path: Path) -> None:
    ours = {n for n in _imports(path) if n.startswith("worksession") and ".kit" not in n}
    assert not ours, f"{path.name} imports {sorted(ours)}"


def test_a_violation_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.py"
    bad.write_text("from sqlalchemy import select\nimport fastapi\n")
    assert "sqlalchemy" in _imports(bad)
