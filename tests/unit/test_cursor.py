"""Opaque cursors: what is issued decodes back exactly; nothing else decodes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worksession.chat.history import HistoryCursor
from worksession.kit import cursor
from worksession.kit.cursor import InvalidCursor
from worksession.sessions.lookup import decode_session_cursor, encode_session_cursor


@pytest.mark.parametrize("values", [(0,), (1, 2), (2**63 - 1, 0, 7)])
def test_a_cursor_round_trips(values: tuple[int, ...]) -> None:
    token = cursor.encode("x1", *values)
    assert cursor.decode("x1", token, arity=len(values)) == values
    assert token.isascii()
    assert "=" not in token


def test_a_cursor_of_another_kind_or_arity_is_refused() -> None:
    token = cursor.encode("x1", 5, 6)
    with pytest.raises(InvalidCursor):
        cursor.decode("y1", token, arity=2)
    with pytest.raises(InvalidCursor):
        cursor.decode("x1", token, arity=1)


@pytest.mark.parametrize("values", [(-1,), (2**63,), (True,)])
def test_values_out_of_range_are_not_encoded(values: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        cursor.encode("x1", *values)


def test_the_history_cursor_keeps_microseconds_exactly() -> None:
    at = datetime(2026, 11, 25, 10, 30, 5, 123456, tzinfo=UTC)
    decoded = HistoryCursor.decode(HistoryCursor(at, 42).encode())
    assert decoded == HistoryCursor(at, 42)
    assert decoded.created_at.tzinfo is UTC


def test_the_session_cursor_round_trips_and_refuses_a_history_cursor() -> None:
    assert decode_session_cursor(encode_session_cursor(99)) == 99
    history = HistoryCursor(datetime(2026, 1, 1, tzinfo=UTC), 1).encode()
    with pytest.raises(InvalidCursor):
        decode_session_cursor(history)


def test_a_value_past_its_maximum_is_refused() -> None:
    token = cursor.encode("x1", 5, 2**31)
    assert cursor.decode("x1", token, arity=2) == (5, 2**31)
    with pytest.raises(InvalidCursor):
        cursor.decode("x1", token, arity=2, maxima=(2**63 - 1, cursor.MAX_INT4))
    edge = cursor.encode("x1", 5, cursor.MAX_INT4)
    assert cursor.decode("x1", edge, arity=2, maxima=(10, cursor.MAX_INT4)) == (5, 2**31 - 1)


def test_the_listings_bound_their_row_ids_to_int4() -> None:
    # PostgreSQL's integer: a larger id in a cursor is an error in the query, not a 422.
    with pytest.raises(InvalidCursor):
        decode_session_cursor(cursor.encode("s1", 2**31))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidCursor):
        HistoryCursor.decode(HistoryCursor(at, 2**31).encode())
