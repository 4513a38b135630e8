"""The AsyncAPI document and its page: generated from the protocol models, complete, and
self-contained (nothing loads from the network)."""

from __future__ import annotations

import gc
import json
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import httpx
import jsonschema_rs  # comes with schemathesis
import pytest
from pydantic import BaseModel

from worksession import __version__
from worksession.chat.typing import typing_frame
from worksession.decide import decide
from worksession.errors import WorksessionError
from worksession.eventlog.events import LoggedEvent
from worksession.eventlog.render import render
from worksession.geo import Fix
from worksession.kit.clock import utcnow
from worksession.kit.jwt import TokenVerifier
from worksession.main import create_app
from worksession.models import WorkSession
from worksession.ops import asyncapi
from worksession.orders.offers import open_order, pending_work
from worksession.pipeline.commands import (
    AcceptWork,
    AcknowledgeMessage,
    Actor,
    CancelSession,
    Command,
    CompleteSession,
    CreateWorkOrder,
    DeclineWork,
    ExpireOffers,
    ReportLocation,
    SelectMediums,
    SendMessage,
    ShareMediums,
    StartChat,
    WithdrawWork,
)
from worksession.pipeline.decision import AnsweredByEvent, AnswerFrame
from worksession.pipeline.rows import Policy
from worksession.pipeline.world import World
from worksession.protocol import inbound, outbound
from worksession.protocol.inbound import BadFrame, parse_frame
from worksession.realtime.gateway import _peek_request_id
from worksession.realtime.presence import presence_frame
from worksession.realtime.ratelimit import retry_after_ms
from worksession.sessions import lookup as sessions_lookup
from worksession.sessions import repository as session_repository
from worksession.sessions.location import distance_frame
from worksession.sessions.schemas import LocationRules

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
    assert names("provider", "client") == every_inbound - {"medium_selection", "cancel_work"}
    assert names("seeker", "client") == every_inbound - {
        "work_response",
        "medium_share",
        "complete_session",
    }
    seeker_in, provider_in = names("seeker", "server"), names("provider", "server")
    assert {"work_request", "work_unavailable", "work_declined"}.isdisjoint(seeker_in)
    assert {"work_rejected", "work_expired", "work_withdrawn"}.isdisjoint(provider_in)
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


# --- the frames actually sent, field by field ----------------------------------------------

REQUEST_ID = "req-1"
DOCUMENT_URI = "urn:worksession:asyncapi"
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
"""With microseconds, so that every time goes through the millisecond formatting."""
SESSION_A = uuid.UUID("6f1c3a52-0000-4000-8000-00000000000a")
SESSION_B = uuid.UUID("6f1c3a52-0000-4000-8000-00000000000b")
MESSAGE_ID = uuid.UUID("6f1c3a52-0000-4000-8000-0000000000c1")
HERE = (52.52, 13.405)
METRE = 1 / 111_320
"""About one metre north, in degrees of latitude."""

Sent = tuple[asyncapi.Role, str]
"""A frame as a socket is sent it: that socket's role and the frame's text."""


def _answer(frame: outbound.Outbound, request_id: str | None) -> str:
    """The text ``Connection.send`` writes for ``frame``."""
    text = outbound.encode(frame)
    return text if request_id is None else outbound.with_request_id(text, request_id)


def _error_text(error: WorksessionError, request_id: str | None) -> str:
    """The ``error`` frame the gateway's ``_send_error`` sends for ``error``."""
    fields: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
    if error.details:
        fields["details"] = error.details
    return _answer(outbound.ErrorFrame(**fields), request_id)


class _Batch:
    """Commands decided on an in-memory world as the pipeline decides and applies them, and
    the frames the sockets get for them: each logged event rendered for both roles, each
    notice for its recipients, and the requester's answer with its request_id where
    ``AnswerTo`` puts it (the last event of an ``AnsweredByEvent`` decision, the frame of an
    ``AnswerFrame``)."""

    def __init__(self) -> None:
        rules = LocationRules(
            move_threshold_m=50.0,
            nearby_m=300.0,
            arrived_m=50.0,
            max_accuracy_m=100.0,
            max_speed_kmh=200.0,
        )
        retention, ttl = timedelta(hours=24), timedelta(minutes=2)
        self.world = World.of(Policy(location=rules, retention=retention, offer_ttl=ttl))
        self.now = T0
        self.sent: list[Sent] = []

    def submit(self, command: Command, requester: asyncapi.Role | None = None) -> None:
        self.now += timedelta(seconds=1)
        decision = decide(self.world, command, self.now)
        self.world.apply(decision)
        answering = decision.events[-1] if isinstance(decision.reply, AnsweredByEvent) else None
        for item in decision.out:
            if isinstance(item, LoggedEvent):
                for role in asyncapi.ROLES:
                    frame = render(item, role)
                    if frame is None:
                        continue
                    self.sent.append((role, _answer(frame, None)))
                    if item is answering and role == requester:
                        self.sent.append((role, _answer(frame, REQUEST_ID)))
            else:
                self.sent.extend((role, _answer(item.frame, None)) for role, _ in item.recipients)
        if isinstance(decision.reply, AnswerFrame):
            assert requester is not None
            self.sent.append((requester, _answer(decision.reply.frame, None)))
            self.sent.append((requester, _answer(decision.reply.frame, REQUEST_ID)))

    def refuse(self, command: Command, requester: asyncapi.Role) -> None:
        """A command its deciding function refuses: the requester gets an ``error``."""
        with pytest.raises(WorksessionError) as refused:
            decide(self.world, command, self.now)
        self.sent.append((requester, _error_text(refused.value, REQUEST_ID)))


def _decided() -> _Batch:
    """Two work sessions from the order to their end, and orders that are declined, expire
    and are taken by another provider."""
    batch = _Batch()
    seeker, provider = Actor("seeker-1", "seeker"), Actor("provider-1", "provider")
    lat, lng = HERE
    details = {"service": "plumbing", "rooms": 2}
    batch.submit(CreateWorkOrder("seeker-1", ("provider-1", "provider-2"), details, HERE, 1))
    for work_id in (2, 3, 4):
        providers = (f"provider-{work_id + 1}",)
        batch.submit(CreateWorkOrder(f"seeker-{work_id}", providers, {}, None, work_id))
    batch.submit(DeclineWork(2, "provider-3"), "provider")  # declined, the order rejected
    batch.world.due_orders = (3,)
    batch.submit(ExpireOffers())  # expired for the seeker, unavailable for the provider
    batch.refuse(AcceptWork(3, "provider-4"), "provider")
    batch.submit(AcceptWork(1, "provider-1", SESSION_A), "provider")  # provider-2: unavailable
    batch.submit(SelectMediums(SESSION_A, "seeker-1", {"whatsapp": "5551234567"}), "seeker")
    batch.submit(ShareMediums(SESSION_A, "provider-1", {"phone": "5557654321"}), "provider")
    batch.refuse(ReportLocation(SESSION_A, seeker, Fix(91.0, lng, 5.0, None)), "seeker")
    batch.submit(ReportLocation(SESSION_A, seeker, Fix(lat, lng, 5.0, None)), "seeker")
    for metres in (250, 30):  # distance and nearby, then distance and arrived
        fix = Fix(lat + metres * METRE, lng, 5.0, None)
        batch.submit(ReportLocation(SESSION_A, provider, fix), "provider")
    batch.submit(StartChat(SESSION_A, seeker), "seeker")
    batch.submit(StartChat(SESSION_A, provider), "provider")  # again: chat_ready without seq
    batch.submit(SendMessage(SESSION_A, seeker, "hello", "c-1", MESSAGE_ID), "seeker")
    batch.submit(SendMessage(SESSION_A, seeker, "hello", "c-1"), "seeker")  # a retry: the ack
    batch.submit(SendMessage(SESSION_A, provider, "on my way"), "provider")
    batch.submit(AcknowledgeMessage(MESSAGE_ID, provider, "read"))  # the gateway: no request_id
    batch.submit(CompleteSession(SESSION_A, "provider-1"), "provider")
    batch.submit(AcceptWork(4, "provider-5", SESSION_B), "provider")
    batch.submit(CancelSession(SESSION_B, Actor("seeker-4", "seeker")), "seeker")
    # Withdrawn by its seeker: work_withdrawn for them, work_unavailable for the providers.
    batch.submit(CreateWorkOrder("seeker-6", ("provider-6", "provider-7"), {}, None, 6))
    batch.refuse(WithdrawWork(6, "seeker-7"), "seeker")
    batch.submit(WithdrawWork(6, "seeker-6"), "seeker")
    batch.refuse(WithdrawWork(6, "seeker-6"), "seeker")
    return batch


async def _connected_frames(orders: list[Any]) -> list[Sent]:
    """``connected`` as the gateway builds it: the snapshot from ``snapshot_for`` (over rows
    standing in for the database's), the open offers from ``pending_work``, a seeker's
    pending orders from ``open_order``."""
    rows = {
        ("seeker", "seeker-1"): WorkSession(
            session_id=SESSION_A,
            work_order_id=1,
            seeker_id="seeker-1",
            provider_id="provider-1",
            connection_state="active",
            last_seq=12,
            seeker_latitude=HERE[0],
            seeker_longitude=HERE[1],
            provider_latitude=HERE[0] + 1200 * METRE,
            provider_longitude=HERE[1],
            seeker_selected_mediums={"whatsapp": "5551234567"},
            provider_selected_mediums={"phone": "5557654321"},
            chat_room_id=uuid.UUID(int=7),
        ),
        ("provider", "provider-5"): WorkSession(
            session_id=SESSION_B,
            work_order_id=4,
            seeker_id="seeker-4",
            provider_id="provider-5",
            connection_state="waiting",
            last_seq=1,
        ),
    }

    async def live_session_of(db: Any, *, user_id: str, role: str) -> WorkSession | None:
        return rows.get((role, user_id))

    sent: list[Sent] = []
    users: list[tuple[asyncapi.Role, str]] = [
        ("seeker", "seeker-1"),
        ("provider", "provider-5"),
        ("seeker", "seeker-9"),  # no live session
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session_repository, "live_session_of", live_session_of)
        for role, user_id in users:
            snapshot = await sessions_lookup.snapshot_for(None, user_id=user_id, role=role)  # type: ignore[arg-type]
            frame = outbound.Connected(
                type="connected",
                user_type=role,
                server_time=utcnow(),
                session=snapshot,
                pending_work=[pending_work(o) for o in orders] if role == "provider" else [],
                open_orders=[open_order(o) for o in orders] if role == "seeker" else [],
            )
            sent.append((role, frame.model_dump_json()))
    return sent


def _socket_frames() -> list[Sent]:
    """What the gateway and the socket's writer send of their own (``pong``,
    ``auth_refreshed``, ``resumed``, errors) and the ephemeral frames built outside the
    pipeline (typing, the distance tick, presence)."""
    verifier = TokenVerifier(algorithms=["HS256"], hmac_secret="x" * 64, public_key=None)
    claims = verifier.verify(verifier.issue(sub="seeker-1", user_type="seeker"))
    dropped = json.dumps({"type": "ping", "request_id": REQUEST_ID})
    limited = outbound.ErrorFrame(
        type="error",
        code="rate_limited",
        message="Too many frames; this one was dropped",
        retry_after_ms=retry_after_ms(0.0125),
    )
    texts = [
        _answer(limited, _peek_request_id(dropped)),
        _answer(limited, None),
        _error_text(WorksessionError(), REQUEST_ID),  # a resume whose replay failed
    ]
    for request_id in (None, REQUEST_ID):
        texts += [
            _answer(outbound.Pong(type="pong", server_time=utcnow()), request_id),
            _answer(outbound.AuthRefreshed(type="auth_refreshed", exp=claims.exp), request_id),
            _answer(
                outbound.Resumed(type="resumed", session_id=str(SESSION_A), last_seq=12),
                request_id,
            ),
        ]
    bad_frames = [
        "not json",
        json.dumps({"type": "chat_message", "session_id": "nope", "request_id": REQUEST_ID}),
        json.dumps({"type": "work_response", "work_id": 1, "accepted": True}),
    ]
    sent: list[Sent] = [(role, text) for text in texts for role in asyncapi.ROLES]
    for raw in bad_frames:  # from a seeker
        with pytest.raises(BadFrame) as bad:
            parse_frame(raw, role="seeker")
        sent.append(("seeker", _error_text(bad.value.error, bad.value.request_id)))
    sent.append(("provider", _answer(typing_frame(SESSION_A, "seeker", True), None)))
    sent.append(("seeker", _answer(typing_frame(SESSION_A, "provider", False), None)))
    distance = distance_frame(SESSION_A, 1234.56, T0)
    sent += [(role, _answer(distance, None)) for role in asyncapi.ROLES]
    sent += [
        (role, _answer(presence_frame(SESSION_A, online), None))
        for role in asyncapi.ROLES
        for online in (True, False)
    ]
    return sent


class _Contract:
    """Checks frames against the document's server messages, found by ``type``: a Draft
    2020-12 validator of the payload (``$ref`` resolved in a registry holding the
    document), the keys of every object against its schema's ``properties`` and
    ``required``, every ``date-time`` a UTC time ending in Z. Disagreements accumulate in
    ``problems``; ``seen`` holds, per schema, the keys some frame had."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        messages = document["components"]["messages"]
        server = {k: m for k, m in messages.items() if m["x-direction"] == "server"}
        self.payloads = {m["name"]: m["payload"] for m in server.values()}
        registry = jsonschema_rs.Registry(
            [(DOCUMENT_URI, document)], draft=jsonschema_rs.Draft202012
        )
        self.validators = {
            name: jsonschema_rs.Draft202012Validator(
                {"$ref": DOCUMENT_URI + payload["$ref"]}, registry=registry, validate_formats=True
            )
            for name, payload in self.payloads.items()
        }
        self.receives = {
            role: {server[k]["name"] for k in document["channels"][role]["messages"] if k in server}
            for role in asyncapi.ROLES
        }
        self.problems: list[str] = []
        self.seen: dict[str, set[str]] = defaultdict(set)

    def check(self, role: asyncapi.Role, text: str) -> None:
        frame = json.loads(text)
        name = frame.get("type")
        where = f"{name} to {role}"
        if name not in self.payloads:
            self.problems.append(f"{where}: no server message of the document has this type")
            return
        if name not in self.receives[role]:
            self.problems.append(f"{where}: not a message of the {role} channel")
        for error in self.validators[name].iter_errors(frame):
            at = "/".join(map(str, error.instance_path))
            self.problems.append(f"{where}: {at or '(frame)'}: {error.message}")
        self._fields(frame, self.payloads[name], where)

    def _fields(self, value: Any, schema: dict[str, Any], where: str) -> None:
        name = None
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            schema = _resolve(self.document, schema["$ref"])
        if "anyOf" in schema:
            for branch in schema["anyOf"]:
                if self._admits(branch, value):
                    self._fields(value, branch, where)
            return
        if schema.get("format") == "date-time" and not (
            isinstance(value, str) and value.endswith("Z")
        ):
            self.problems.append(f"{where}: {value!r} is not a UTC time ending in Z")
        if isinstance(value, dict) and "properties" in schema:
            declared = schema["properties"]
            if extra := sorted(set(value) - set(declared)):
                self.problems.append(f"{where}: {extra} not among the declared properties")
            if missing := sorted(set(schema.get("required", ())) - set(value)):
                self.problems.append(f"{where}: required {missing} missing")
            if name is not None:
                self.seen[name].update(value)
            for key, item in value.items():
                if key in declared:
                    self._fields(item, declared[key], f"{where}.{key}")
        elif isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self._fields(item, schema["items"], f"{where}[{i}]")

    def _admits(self, branch: dict[str, Any], value: Any) -> bool:
        """Whether ``value`` is of the JSON type of this ``anyOf`` branch."""
        if "$ref" in branch:
            branch = _resolve(self.document, branch["$ref"])
        kinds: dict[str, Any] = {
            "null": type(None),
            "object": dict,
            "array": list,
            "string": str,
            "boolean": bool,
            "integer": int,
            "number": (int, float),
        }
        kind = branch.get("type")
        return kind is None or isinstance(value, kinds[kind])

    def unsent(self) -> dict[str, list[str]]:
        """Per schema some frame reached, the properties it declares that no frame had."""
        schemas = self.document["components"]["schemas"]
        gaps = {
            name: sorted(set(schemas[name]["properties"]) - keys)
            for name, keys in self.seen.items()
        }
        return {name: gap for name, gap in gaps.items() if gap}


@pytest.fixture(scope="module")
async def frames_sent() -> list[Sent]:
    """Frames of every kind, each from the code that sends it."""
    batch = _decided()
    orders = [batch.world.order(1), batch.world.order(2)]  # with and without a location
    rendered = [
        (role, _answer(frame, None))
        for event in _sample_events()
        for role in asyncapi.ROLES
        if (frame := render(event, role)) is not None
    ]
    return [*batch.sent, *rendered, *await _connected_frames(orders), *_socket_frames()]


@pytest.fixture(scope="module")
def checked(document: dict[str, Any], frames_sent: list[Sent]) -> _Contract:
    contract = _Contract(document)
    for role, text in frames_sent:
        contract.check(role, text)
    return contract


def test_every_frame_sent_is_what_the_document_says_field_by_field(checked: _Contract) -> None:
    assert checked.problems == []


def test_every_outbound_message_is_sent_by_some_code_path(checked: _Contract) -> None:
    unsent = [m.__name__ for m in outbound.OUTBOUND_MODELS if m.__name__ not in checked.seen]
    assert unsent == []
    assert {"PendingWork", "SessionSnapshot", "SnapshotMediums"} <= set(checked.seen)


def test_every_field_the_document_declares_is_sent(checked: _Contract) -> None:
    assert checked.unsent() == {}


def test_the_frame_check_catches_what_the_document_does_not_say(
    document: dict[str, Any],
) -> None:
    contract = _Contract(document)
    contract.check("seeker", '{"type":"pong","server_time":"2026-03-01T12:00:00+00:00","x":1}')
    contract.check("seeker", '{"type":"resumed","session_id":"s"}')
    contract.check("seeker", '{"type":"work_unavailable","work_id":1}')
    contract.check("provider", '{"type":"hello"}')
    problems = "\n".join(contract.problems)
    assert "pong to seeker: ['x'] not among the declared properties" in problems
    assert (
        "pong to seeker.server_time: '2026-03-01T12:00:00+00:00' is not a UTC time ending in Z"
        in problems
    )
    assert "resumed to seeker: required ['last_seq'] missing" in problems
    assert "work_unavailable to seeker: not a message of the seeker channel" in problems
    assert "hello to provider: no server message of the document has this type" in problems
    assert sum(p.startswith("pong to seeker: (frame)") for p in contract.problems) == 1
    assert contract.unsent()["Pong"] == ["request_id"]


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
