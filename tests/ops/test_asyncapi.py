"""The AsyncAPI document and its page: generated from the protocol models, complete, and
self-contained (nothing loads from the network)."""

from __future__ import annotations

import gc
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import httpx
import jsonschema_rs  # comes with schemathesis
import pytest
from pydantic import BaseModel

from worksession import __version__
from worksession.errors import WorksessionError
from worksession.main import create_app
from worksession.ops import asyncapi
from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.render import render
from worksession.protocol import inbound, outbound

EXPECTED_CLOSE_CODES = {1000, 1007, 1008, 1009, 1011, 1012, 4401, 4403}
SPEC_SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi.build_document(host="api.example.test:8000")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # The documentation routes need no database: no lifespan.
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://docs.test") as client:
        yield client


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert part in node, f"{ref} does not resolve at {part!r}"
        node = node[part]
    return node


def _subclasses(base: type[BaseModel]) -> Iterator[type[BaseModel]]:
    for sub in base.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _has_type_literal(model: type[BaseModel]) -> bool:
    field = model.model_fields.get("type")
    return field is not None and get_origin(field.annotation) is Literal


def missing_models(document: dict[str, Any]) -> list[str]:
    """Message models (a ``type`` literal) under Inbound or Outbound that no message of the
    document has as its payload. Building blocks without ``type`` are not messages."""
    payloads = {
        message["payload"]["$ref"].rsplit("/", 1)[1]
        for message in document["components"]["messages"].values()
    }
    models = {
        m
        for base in (inbound.Inbound, outbound.Outbound)
        for m in _subclasses(base)
        if _has_type_literal(m)
    }
    return sorted(m.__name__ for m in models if m.__name__ not in payloads)


# --- the document ------------------------------------------------------------------------


def test_the_document_is_asyncapi_3_with_this_version(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["version"] == __version__
    assert document["servers"]["this"] == {
        "host": "api.example.test:8000",
        "protocol": "ws",
        "description": "The server that served this document.",
        "security": [
            {"$ref": "#/components/securitySchemes/bearer"},
            {"$ref": "#/components/securitySchemes/queryToken"},
        ],
    }
    assert {c["address"] for c in document["channels"].values()} == {
        "/ws/work/seeker/",
        "/ws/work/provider/",
    }


def test_the_document_validates_against_the_asyncapi_3_schema(document: dict[str, Any]) -> None:
    validator = jsonschema_rs.validator_for(json.loads(SPEC_SCHEMA.read_text()))
    errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    broken = json.loads(json.dumps(document))
    broken["operations"]["sendToSeeker"]["action"] = "publish"  # AsyncAPI 2's word
    assert not validator.is_valid(broken)


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    refs = [node["$ref"] for node in _walk(document) if isinstance(node, dict) and "$ref" in node]
    assert len(refs) > 100  # the walk sees the schemas, messages, channels and operations
    for ref in refs:
        _resolve(document, ref)


def test_every_message_model_is_in_the_document(document: dict[str, Any]) -> None:
    assert missing_models(document) == []


def test_a_message_model_missing_from_the_document_is_caught(document: dict[str, Any]) -> None:
    class Unlisted(outbound.Outbound):
        type: Literal["unlisted"]

    try:
        assert missing_models(document) == ["Unlisted"]
    finally:
        del Unlisted
        gc.collect()  # __subclasses__ holds weak references
    assert missing_models(document) == []


def test_messages_are_named_by_their_type(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    for model in (*inbound.INBOUND_MODELS, *outbound.OUTBOUND_MODELS):
        (type_,) = get_args(model.model_fields["type"].annotation)
        named = [
            m for m in messages.values() if m["payload"]["$ref"].endswith(f"/{model.__name__}")
        ]
        assert [m["name"] for m in named] == [type_]
        assert named[0]["description"], f"{model.__name__} needs a docstring"


def test_each_channel_lists_what_its_role_may_send_and_receive(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]

    def names(role: str, direction: str) -> set[str]:
        keys = document["channels"][role]["messages"]
        return {messages[k]["name"] for k in keys if messages[k]["x-direction"] == direction}

    every_inbound = set(inbound.INBOUND_TYPES)
    assert names("provider", "client") == every_inbound - {"medium_selection"}
    assert names("seeker", "client") == every_inbound - {
        "work_response",
        "medium_share",
        "complete_session",
    }
    seeker_in, provider_in = names("seeker", "server"), names("provider", "server")
    assert {"work_request", "work_unavailable", "work_declined"}.isdisjoint(seeker_in)
    assert {"work_rejected", "work_expired"}.isdisjoint(provider_in)
    every_outbound = {
        get_args(m.model_fields["type"].annotation)[0] for m in outbound.OUTBOUND_MODELS
    }
    assert seeker_in | provider_in == every_outbound


def _sample_events() -> list[LoggedEvent]:
    session_id, at = uuid.uuid4(), datetime(2026, 1, 1, tzinfo=UTC)
    message_id = str(uuid.uuid4())
    data: list[tuple[str, dict[str, Any]]] = [
        ("work_accepted", {"work_id": 1, "connection_state": "waiting"}),
        ("mediums_selected", {"mediums": {}, "connection_state": "active"}),
        ("mediums_shared", {"mediums": {}}),
        ("chat_ready", {"chat_room_id": str(uuid.uuid4())}),
        *[
            (
                "chat_message",
                {
                    "message_id": message_id,
                    "sender_type": sender,
                    "message": "hi",
                    "client_msg_id": None,
                },
            )
            for sender in ("seeker", "provider")
        ],
        *[
            ("message_status", {"message_id": message_id, "status": "read", "sender_type": s})
            for s in ("seeker", "provider")
        ],
        ("provider_nearby", {"distance_meters": 250.0}),
        ("provider_arrived", {"distance_meters": 40.0}),
        ("connection_cancelled", {"cancelled_by": "seeker"}),
        ("session_completed", {}),
    ]
    return [
        LoggedEvent(session_id=session_id, seq=i, kind=kind, data=d, created_at=at)
        for i, (kind, d) in enumerate(data, start=1)
    ]


@pytest.mark.parametrize("role", ["seeker", "provider"])
def test_every_logged_event_renders_to_a_frame_its_channel_lists(
    document: dict[str, Any], role: str
) -> None:
    messages = document["components"]["messages"]
    receives = {
        messages[k]["name"]
        for k in document["channels"][role]["messages"]
        if messages[k]["x-direction"] == "server"
    }
    rendered = {frame.type for e in _sample_events() if (frame := render(e, role))}
    assert rendered <= receives
    assert len(rendered) >= 10


def test_operations_are_from_the_application_point_of_view(document: dict[str, Any]) -> None:
    for operation in document["operations"].values():
        direction = "client" if operation["action"] == "receive" else "server"
        assert operation["action"] in ("send", "receive")
        assert operation["messages"]
        for ref in operation["messages"]:
            assert ref["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            assert _resolve(document, ref["$ref"])["$ref"].startswith("#/components/messages/")
            message = _resolve(document, _resolve(document, ref["$ref"])["$ref"])
            assert message["x-direction"] == direction
    assert set(document["operations"]) == {
        "receiveFromSeeker",
        "sendToSeeker",
        "receiveFromProvider",
        "sendToProvider",
    }


def test_every_error_code_is_documented(document: dict[str, Any]) -> None:
    codes: set[str] = set()
    pending: list[type[WorksessionError]] = [WorksessionError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    documented = {e["code"] for e in document["info"]["x-error-codes"]}
    assert documented == codes
    error_schema = document["components"]["schemas"]["ErrorFrame"]
    assert set(error_schema["properties"]["code"]["enum"]) == codes
    for code in codes:
        assert f"`{code}`" in document["info"]["description"]


def test_the_close_codes_are_documented(document: dict[str, Any]) -> None:
    listed = document["info"]["x-close-codes"]
    assert {c["code"] for c in listed} == EXPECTED_CLOSE_CODES
    assert all(c["meaning"] and c["clientShould"] for c in listed)
    for code in EXPECTED_CLOSE_CODES:
        assert f"| {code} |" in document["info"]["description"]


def test_the_description_explains_auth_request_id_seq_and_resume(
    document: dict[str, Any],
) -> None:
    description = document["info"]["description"]
    for needle in ("Authorization: Bearer", "?token=", "request_id", "`seq`", "resume"):
        assert needle in description


def test_request_id_is_the_correlation_id_of_messages_that_carry_it(
    document: dict[str, Any],
) -> None:
    messages = document["components"]["messages"]
    assert "correlationId" in messages["chat_message_ack"]
    assert "correlationId" in messages["ping"]
    assert "correlationId" not in messages["distance_update"]


# --- over HTTP ---------------------------------------------------------------------------


async def test_the_json_document_names_the_server_that_served_it(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/asyncapi.json", headers={"host": "ws.example.test"})
    assert response.status_code == 200
    assert response.json()["servers"]["this"]["host"] == "ws.example.test"
    assert response.json()["asyncapi"] == "3.0.0"


async def test_the_page_lists_every_message_and_loads_nothing_from_outside(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/asyncapi")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for model in (*inbound.INBOUND_MODELS, *outbound.OUTBOUND_MODELS):
        (type_,) = get_args(model.model_fields["type"].annotation)
        assert f"<code>{type_}</code>" in page, type_
        assert model.__name__ in page
    for code in EXPECTED_CLOSE_CODES:
        assert f"<code>{code}</code>" in page
    assert "<code>session_not_found</code>" in page
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert "<link" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", page)


async def test_the_page_escapes_the_host_header(http: httpx.AsyncClient) -> None:
    response = await http.get("/asyncapi", headers={"host": "<b>evil</b>"})
    assert "<b>evil</b>" not in response.text
    assert "&lt;b&gt;evil&lt;/b&gt;" in response.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_openapi_pages_load_their_assets_from_this_service(
    http: httpx.AsyncClient, page: str
) -> None:
    response = await http.get(page)
    assert response.status_code == 200
    assert "cdn" not in response.text.lower()
    assert "http://" not in response.text
    assert "https://" not in response.text
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", response.text)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        fetched = await http.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 1000


async def test_only_the_vendored_assets_are_served(http: httpx.AsyncClient) -> None:
    assert (await http.get("/docs/assets/core.py")).status_code == 404
    assert (await http.get("/docs/assets/..%2F__init__.py")).status_code == 404
