from __future__ import annotations

import pytest

from worksession.chat.text import MAX_MESSAGE_CHARS, InvalidMessageText, validate_message_text


def _refused(text: object) -> InvalidMessageText:
    with pytest.raises(InvalidMessageText) as caught:
        validate_message_text(text)
    return caught.value


def test_limit_is_2000() -> None:
    assert MAX_MESSAGE_CHARS == 2000


def test_invalid_message_text_is_a_value_error() -> None:
    assert issubclass(InvalidMessageText, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "Hello",
        "x" * MAX_MESSAGE_CHARS,
        "line one\nline two",
        "col\tcol",
        "\n\tindented",
        " padded ",
        "नमस्ते",
        "ನಮಸ್ಕಾರ",
        "مرحبا",
        "\U0001f44d",
        "I\u2019m here \u2764\ufe0f",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\u200bhi",
        "a\u2028b",
        "\u00a0x",
    ],
)
def test_accepted_and_returned_unchanged(text: str) -> None:
    assert validate_message_text(text) is text


def test_exactly_one_character() -> None:
    assert validate_message_text(".") == "."


def test_one_over_the_limit() -> None:
    error = _refused("x" * (MAX_MESSAGE_CHARS + 1))
    assert "2000" in str(error)


def test_empty() -> None:
    assert "empty" in str(_refused(""))


def test_emoji_count_as_code_points() -> None:
    thumbs = "\U0001f44d"
    assert len(thumbs.encode("utf-16-le")) == 4
    assert validate_message_text(thumbs * MAX_MESSAGE_CHARS) == thumbs * MAX_MESSAGE_CHARS
    _refused(thumbs * (MAX_MESSAGE_CHARS + 1))


def test_zwj_sequence_counts_each_part() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert len(family) == 5
    assert validate_message_text(family * 400) == family * 400
    _refused(family * 400 + "x")


@pytest.mark.parametrize(
    "text",
    [
        " ",
        "   ",
        "\n",
        "\t",
        "\n\t \n",
        "\u00a0",
        "\u3000",
        "\u2028\u2029",
        "\u200b",
        "\u200b\u200c\u200d",
        "\ufeff",
        "\u2060",
        "\u3164",
        "\u2800",
        " \u200b\n",
    ],
)
def test_blank_is_refused(text: str) -> None:
    assert "white space" in str(_refused(text))


@pytest.mark.parametrize(
    "char",
    ["\x00", "\x07", "\r", "\x1b", "\x0b", "\x0c", "\x7f", "\x85", "\x9f"],
)
def test_control_characters_are_refused(char: str) -> None:
    assert "control" in str(_refused(f"hello{char}world"))
    assert "control" in str(_refused(f"{char}hello"))


def test_crlf_is_refused() -> None:
    _refused("line one\r\nline two")


def test_lone_surrogate_is_refused() -> None:
    assert "surrogate" in str(_refused("hi \ud800 there"))


@pytest.mark.parametrize(
    "char",
    ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"],
)
def test_bidi_overrides_and_isolates_are_refused(char: str) -> None:
    # "invoice_\u202egnp.exe" shows as "invoice_exe.png": the trick the rule exists for.
    assert "bidirectional" in str(_refused(f"invoice_{char}gnp.exe"))
    assert "bidirectional" in str(_refused(f"{char}hello"))


@pytest.mark.parametrize("mark", ["\u200e", "\u200f", "\u061c"])
def test_bidi_marks_that_only_nudge_neutrals_are_allowed(mark: str) -> None:
    assert (
        validate_message_text(f"\u05e9\u05dc\u05d5\u05dd{mark} 42")
        == f"\u05e9\u05dc\u05d5\u05dd{mark} 42"
    )


@pytest.mark.parametrize("text", [None, 42, 4.2, b"Hello", ["Hello"], {"message": "Hello"}])
def test_non_string_is_refused(text: object) -> None:
    assert "string" in str(_refused(text))


@pytest.mark.parametrize(
    "text",
    [
        "secret-word\x00",
        "secret-word" * 200,
        "secret-word\r",
    ],
)
def test_errors_never_echo_the_text(text: str) -> None:
    error = _refused(text)
    assert "secret" not in str(error)
    assert "secret" not in repr(error)
