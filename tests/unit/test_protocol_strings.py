"""Client strings that UTF-8 or PostgreSQL cannot carry never reach an answer or a query
(issue 12, findings 2 and 3; PROTOCOL 3 *1.1*)."""

from __future__ import annotations

import json

import pytest

from worksession.errors import ValidationFailed
from worksession.protocol.inbound import BadFrame, is_client_label, parse_frame
from worksession.protocol.outbound import ErrorFrame, Pong, encode, with_request_id

SESSION = "6f1c2d2e-1111-4222-8333-444455556666"
BAD_LABELS = [
    pytest.param("\\ud800", id="lone-high-surrogate"),
    pytest.param("\\udc80", id="lone-low-surrogate"),
    pytest.param("a\\u0000b", id="nul"),
    pytest.param("a\\nb", id="newline"),
    pytest.param("\\u001b[31m", id="escape"),
    pytest.param("\\u007f", id="delete"),
    pytest.param("\\u202eabc", id="bidi-override"),
    pytest.param("\\u200b", id="zero-width-space"),
    pytest.param("x" * 65, id="65-chars"),
    pytest.param("", id="empty"),
]


def _refused(text: str, role: str = "seeker") -> BadFrame:
    with pytest.raises(BadFrame) as caught:
        parse_frame(text, role=role)
    return caught.value


@pytest.mark.parametrize("label", BAD_LABELS)
def test_a_bad_request_id_is_a_validation_error_that_does_not_echo_it(label: str) -> None:
    bad = _refused(f'{{"type":"ping","request_id":"{label}"}}')
    assert isinstance(bad.error, ValidationFailed)
    assert bad.request_id is None
    assert [d["loc"] for d in bad.error.details] == [["request_id"]]


@pytest.mark.parametrize("label", BAD_LABELS)
def test_a_bad_client_msg_id_is_a_validation_error(label: str) -> None:
    frame = (
        f'{{"type":"chat_message","session_id":"{SESSION}","message":"hi",'
        f'"client_msg_id":"{label}","request_id":"r-1"}}'
    )
    bad = _refused(frame)
    assert isinstance(bad.error, ValidationFailed)
    assert bad.request_id == "r-1"
    assert [d["loc"] for d in bad.error.details] == [["client_msg_id"]]


@pytest.mark.parametrize("label", ["r", "x" * 64, "req 42", "आईडी-७", "\U0001f44d", "a/b:c#d"])
def test_printable_labels_of_1_to_64_characters_pass(label: str) -> None:
    assert is_client_label(label)
    message = parse_frame(json.dumps({"type": "ping", "request_id": label}), role="seeker")
    assert message.request_id == label


@pytest.mark.parametrize(
    ("frame", "key"),
    [
        pytest.param(
            f'{{"type":"medium_selection","session_id":"{SESSION}","mediums":{{"\\udc80":"1"}}}}',
            "\udc80",
            id="unknown-medium",
        ),
        pytest.param('{"type":"ping","\\ud800x":1}', "\ud800x", id="unknown-field"),
        pytest.param('{"type":"ping","a\\u0000":1}', "a\x00", id="nul-field"),
        pytest.param('{"type":"ping","' + "k" * 5000 + '":1}', "k" * 5000, id="long-field"),
    ],
)
def test_details_never_carry_an_unencodable_or_long_client_key(frame: str, key: str) -> None:
    bad = _refused(frame)
    text = json.dumps(bad.error.details, ensure_ascii=False)
    text.encode("utf-8")  # raises on a lone surrogate
    assert key not in text
    assert "\x00" not in text
    assert len(text) < 1000


def test_a_frame_holding_a_lone_surrogate_still_encodes_as_valid_utf8_json() -> None:
    # Defence in depth: should a surrogate slip past the inbound checks, the frame goes out
    # escaped instead of failing in the writer (which closed the socket with 1011).
    frame = ErrorFrame(type="error", code="validation_error", message="m\ud800", details=[{}])
    text = encode(frame)
    text.encode("utf-8")
    assert json.loads(text)["message"] == "m\ud800"
    assert list(json.loads(text)) == ["type", "code", "message", "details"]


def test_a_request_id_with_a_lone_surrogate_still_encodes() -> None:
    text = with_request_id(encode(Pong(type="pong", server_time="2026-01-01T00:00:00Z")), "\udc80")
    text.encode("utf-8")
    assert json.loads(text)["request_id"] == "\udc80"


def test_a_non_ascii_request_id_is_sent_as_is() -> None:
    text = with_request_id('{"type":"pong"}', "आईडी")
    assert text == '{"type":"pong","request_id":"आईडी"}'


@pytest.mark.parametrize("depth", [33, 1000, 5000])
def test_nesting_past_32_levels_is_invalid_json_whatever_the_stack(depth: int) -> None:
    # The limit is the parser's own, so the same frame gets the same answer however deep
    # the caller already is (Python's recursion limit alone refused it near 1,000 levels,
    # and only sometimes: it depends on the stack in use).
    frame = '{"type":"ping","x":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    bad = _refused(frame)
    assert bad.error.code == "invalid_json"
    assert "nested" in bad.error.message


def test_nesting_up_to_32_levels_reaches_validation() -> None:
    frame = '{"type":"ping","x":' + "[" * 31 + "]" * 31 + "}"
    assert _refused(frame).error.code == "validation_error"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[{" * 400 + '\\"' + "[" * 10
    frame = json.dumps({"type": "chat_message", "session_id": SESSION, "message": text[:2000]})
    assert parse_frame(frame, role="seeker").type == "chat_message"


@pytest.mark.parametrize(
    "tail",
    ['"' + '\\"' * 8000, '"' + "[" * 40, '"abc\\'],
    ids=["escaped-quotes", "brackets", "trailing-backslash"],
)
def test_an_unterminated_string_is_invalid_json_and_its_brackets_do_not_count(
    tail: str,
) -> None:
    # Brackets after an unterminated string's quote are the string's, not nesting, and the
    # depth scan reads such a string once (it used to rescan from every escaped quote, a
    # second of CPU for this 16 KiB frame); the parser then refuses the frame as not JSON.
    assert _refused("[" * 5 + tail).error.code == "invalid_json"
    assert "nested" not in _refused("[" * 5 + tail).error.message
    assert "nested" in _refused("[" * 33 + tail).error.message
