from __future__ import annotations

from typing import Any

import pytest

from worksession.sessions.mediums import (
    MEDIUM_KINDS,
    InvalidMediums,
    normalise_mediums,
    normalise_phone,
)

BARE = "9876543210"


def test_medium_kinds() -> None:
    assert MEDIUM_KINDS == ("telegram", "whatsapp", "call")


def test_invalid_mediums_is_a_value_error() -> None:
    assert issubclass(InvalidMediums, ValueError)


@pytest.mark.parametrize(
    "raw",
    [
        "9876543210",
        "98765 43210",
        "98765-43210",
        "+91 98765-43210",
        "+919876543210",
        "+91-98765-43210",
        "919876543210",
        "91 98765 43210",
        "09876543210",
        "0 98765 43210",
        "  9876543210  ",
    ],
)
def test_accepted_forms(raw: str) -> None:
    assert normalise_phone(raw) == BARE


@pytest.mark.parametrize("first", ["6", "7", "8", "9"])
def test_every_mobile_leading_digit(first: str) -> None:
    number = first + "123456789"
    assert normalise_phone(number) == number
    assert normalise_phone("+91" + number) == number


def test_a_number_that_itself_starts_with_91_keeps_its_digits() -> None:
    assert normalise_phone("9198765432") == "9198765432"
    assert normalise_phone("+919198765432") == "9198765432"
    assert normalise_phone("919198765432") == "9198765432"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("5876543210", id="leading-5"),
        pytest.param("0876543210", id="leading-0-10-digits"),
        pytest.param("1234567890", id="leading-1"),
        pytest.param("987654321", id="9-digits"),
        pytest.param("98765432101", id="11-digits-without-0"),
        pytest.param("987654321012", id="12-digits-without-91"),
        pytest.param("9876a43210", id="letter"),
        pytest.param("phone", id="word"),
        pytest.param("+1 9876543210", id="plus-1"),
        pytest.param("+19876543210", id="plus-1-compact"),
        pytest.param("+9876543210", id="bare-plus"),
        pytest.param("+91", id="prefix-only"),
        pytest.param("+91 09876543210", id="two-prefixes"),
        pytest.param("+91919876543210", id="plus91-then-91"),
        pytest.param("0919876543210", id="0-then-91"),
        pytest.param(
            "\uff19\uff18\uff17\uff16\uff15\uff14\uff13\uff12\uff11\uff10", id="fullwidth"
        ),
        pytest.param(
            "\u096f\u096e\u096d\u096c\u096b\u096a\u0969\u0968\u0967\u0966", id="devanagari"
        ),
        pytest.param(
            "\u0669\u0668\u0667\u0666\u0665\u0664\u0663\u0662\u0661\u0660", id="arabic-indic"
        ),
        pytest.param("987654321\u0660", id="one-arabic-indic-digit"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces-only"),
        pytest.param("9876543210\n", id="trailing-newline"),
        pytest.param("98765\t43210", id="tab"),
        pytest.param("(98765) 43210", id="parentheses"),
        pytest.param("98765.43210", id="dots"),
    ],
)
def test_refused_forms(raw: str) -> None:
    with pytest.raises(InvalidMediums) as caught:
        normalise_phone(raw)
    assert caught.value.details == [{"loc": ["mediums"], "msg": str(caught.value)}]


def test_phone_error_does_not_echo_the_number() -> None:
    with pytest.raises(InvalidMediums) as caught:
        normalise_phone("5876543210")
    assert "5876543210" not in str(caught.value)
    assert "5876543210" not in repr(caught.value.details)


@pytest.mark.parametrize("raw", [9876543210, None, b"9876543210"])
def test_normalise_phone_refuses_non_strings(raw: object) -> None:
    with pytest.raises(InvalidMediums, match="string"):
        normalise_phone(raw)  # type: ignore[arg-type]


# --- mediums objects --------------------------------------------------------------------


def test_empty_object_is_accepted() -> None:
    assert normalise_mediums({}) == {}


def test_all_three_are_normalised_and_ordered() -> None:
    result = normalise_mediums(
        {"call": "09876543210", "whatsapp": "+91 98765-43210", "telegram": "8123456789"}
    )
    assert result == {"telegram": "8123456789", "whatsapp": BARE, "call": BARE}
    assert list(result) == ["telegram", "whatsapp", "call"]


@pytest.mark.parametrize("kind", MEDIUM_KINDS)
def test_each_kind_alone(kind: str) -> None:
    assert normalise_mediums({kind: "919876543210"}) == {kind: BARE}


def test_input_is_not_mutated() -> None:
    value = {"call": "+91 98765 43210"}
    normalise_mediums(value)
    assert value == {"call": "+91 98765 43210"}


def _details(value: object) -> list[dict[str, Any]]:
    with pytest.raises(InvalidMediums) as caught:
        normalise_mediums(value)
    return caught.value.details


@pytest.mark.parametrize("value", [None, [], ["call"], "9876543210", 9876543210, (("call", BARE),)])
def test_non_object_is_refused(value: object) -> None:
    assert _details(value) == [{"loc": ["mediums"], "msg": "must be an object"}]


@pytest.mark.parametrize(
    ("value", "loc"),
    [
        ({"call": 9876543210}, ["mediums", "call"]),
        ({"whatsapp": None}, ["mediums", "whatsapp"]),
        ({"telegram": ["9876543210"]}, ["mediums", "telegram"]),
        ({"call": True}, ["mediums", "call"]),
    ],
)
def test_non_string_value_is_refused(value: dict[str, object], loc: list[str]) -> None:
    assert _details(value) == [{"loc": loc, "msg": "must be a string"}]


@pytest.mark.parametrize("bad", ["5876543210", "", "+1 9876543210", "98765"])
def test_bad_number_is_reported_under_its_key(bad: str) -> None:
    details = _details({"telegram": BARE, "call": bad})
    assert len(details) == 1
    assert details[0]["loc"] == ["mediums", "call"]
    assert "Indian mobile" in details[0]["msg"]


def test_unknown_key_is_refused() -> None:
    details = _details({"signal": BARE})
    assert len(details) == 1
    assert details[0]["loc"] == ["mediums", "signal"]
    assert "unknown medium" in details[0]["msg"]


@pytest.mark.parametrize("key", ["Call", "CALL", " call", "sms", ""])
def test_keys_are_exact(key: str) -> None:
    assert _details({key: BARE})[0]["loc"] == ["mediums", key]


def test_non_string_key_is_refused_without_echo() -> None:
    details = _details({9876543210: BARE})
    assert details == [{"loc": ["mediums"], "msg": "unknown medium; use telegram, whatsapp, call"}]


def test_four_keys_are_refused() -> None:
    value = {"telegram": BARE, "whatsapp": BARE, "call": BARE, "signal": BARE}
    details = _details(value)
    locs = [d["loc"] for d in details]
    assert ["mediums", "signal"] in locs
    assert {"loc": ["mediums"], "msg": "at most 3 mediums"} in details


def test_every_problem_is_reported_at_once() -> None:
    details = _details({"signal": BARE, "call": "5876543210", "whatsapp": 98})
    assert [d["loc"] for d in details] == [
        ["mediums", "signal"],
        ["mediums", "whatsapp"],
        ["mediums", "call"],
    ]


def test_mediums_errors_never_echo_numbers() -> None:
    with pytest.raises(InvalidMediums) as caught:
        normalise_mediums({"call": "5876543210", "whatsapp": "+1 5551234567"})
    rendered = str(caught.value) + repr(caught.value.details)
    assert "5876543210" not in rendered
    assert "5551234567" not in rendered


def test_error_message_is_the_first_detail() -> None:
    with pytest.raises(InvalidMediums) as caught:
        normalise_mediums({"call": None})
    assert str(caught.value) == "must be a string"


def test_error_without_details_still_has_a_message() -> None:
    assert str(InvalidMediums([])) == "invalid mediums"
