"""Schemathesis against ``/openapi.json`` of a real server: generated requests for every
operation, valid and invalid, with the right kind of token; never a 500, and every
response as documented.

The operations are listed from the application itself at collection time (one test per
operation and mode); the schema the requests are generated from is the one the running
server serves. Schemathesis's own pytest loader (``from_fixture``) is not used: it
breaks on pytest 9 (it reads a private attribute of the test item).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.realtime.conftest import Server
from worksession.main import create_app

_PATHS = create_app().openapi()["paths"]
OPERATIONS = sorted(f"{method.upper()} {path}" for path, item in _PATHS.items() for method in item)
# Invalid input needs an input: an operation without parameters or body has none to spoil.
WITH_INPUTS = sorted(
    f"{method.upper()} {path}"
    for path, item in _PATHS.items()
    for method, operation in item.items()
    if operation.get("parameters") or operation.get("requestBody")
)
CASES = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + [
    (label, GenerationMode.NEGATIVE) for label in WITH_INPUTS
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", timeout=10)


def _auth(server: Server, path: str) -> dict[str, str]:
    """The token each API wants: a service token for the internal API, a seeker's for the
    rest (operations without auth ignore it)."""
    user_type = "service" if path.startswith("/internal/") else "seeker"
    return {"Authorization": f"Bearer {server.token(f'schemathesis-{user_type}', user_type)}"}


def test_every_operation_is_tested() -> None:
    assert len(OPERATIONS) >= 10
    assert "GET /metrics" in OPERATIONS
    assert "POST /internal/v1/work-orders" in WITH_INPUTS


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_server_errors_and_documented_responses(
    api_schema: schemathesis.BaseSchema, server: Server, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served /openapi.json"
    headers = _auth(server, operation.path)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=server.base_url, headers=headers, checks=CHECKS, timeout=10)

    run()


NUL_REQUESTS = {
    "seeker_id": (
        "POST",
        "/internal/v1/work-orders",
        {"seeker_id": "s\x00", "provider_ids": ["p"]},
    ),
    "provider_id": (
        "POST",
        "/internal/v1/work-orders",
        {"seeker_id": "s", "provider_ids": ["\x00"]},
    ),
    "details-value": (
        "POST",
        "/internal/v1/work-orders",
        {"seeker_id": "s", "provider_ids": ["p"], "details": {"note": "a\x00b"}},
    ),
    "details-key": (
        "POST",
        "/internal/v1/work-orders",
        {"seeker_id": "s", "provider_ids": ["p"], "details": {"k\x00": [1]}},
    ),
    "availability-get": ("GET", "/internal/v1/users/a%00b/availability", None),
    "availability-put": ("PUT", "/internal/v1/users/a%00b/availability", {"provider_active": True}),
    "session-lookup": ("GET", "/internal/v1/sessions?user_id=a%00b", None),
}


@pytest.mark.parametrize("request_", NUL_REQUESTS.values(), ids=NUL_REQUESTS.keys())
async def test_a_nul_character_is_refused_not_a_server_error(
    server: Server, request_: tuple[str, str, dict[str, object] | None]
) -> None:
    # Found by this suite: PostgreSQL cannot store a NUL in text or jsonb, nor compare one.
    method, path, body = request_
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.request(method, path, json=body, headers=_auth(server, "/internal/"))
    assert response.status_code == 422, response.text
