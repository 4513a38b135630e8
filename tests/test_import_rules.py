"""The layering of DESIGN.md, checked on the source: transport never touches SQL or Redis,
services never know about HTTP, and ``kit`` depends on nothing of ours."""

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
    return rel.endswith(("service.py", "repository.py", "render.py", "events.py")) or (
        rel.startswith(("sessions/", "orders/", "chat/", "availability/"))
        and not _is_transport(rel)
    )


def _top(name: str) -> str:
    return name.split(".", 1)[0]


TRANSPORT = _modules(_is_transport)
SERVICES = _modules(_is_service)
KIT = _modules(lambda rel: rel.startswith("kit/"))


def test_the_rules_see_the_code() -> None:
    # A rule that matches no file passes vacuously; make sure each one bites.
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


@pytest.mark.parametrize("path", KIT, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_kit_imports_nothing_of_ours(path: Path) -> None:
    ours = {n for n in _imports(path) if n.startswith("worksession") and ".kit" not in n}
    assert not ours, f"{path.name} imports {sorted(ours)}"


def test_a_violation_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.py"
    bad.write_text("from sqlalchemy import select\nimport fastapi\n")
    assert "sqlalchemy" in _imports(bad)
