"""The states' wire values and the live/ended split. Which moves between states are allowed
is decided by the deciding functions, and tested there (``tests/unit/test_decide.py``)."""

from __future__ import annotations

import pytest

from worksession.sessions.states import (
    LIVE_STATES,
    MessageStatus,
    OfferStatus,
    SessionState,
    WorkOrderStatus,
    is_live,
)

S = SessionState
W = WorkOrderStatus
O = OfferStatus  # noqa: E741
M = MessageStatus


def test_wire_values() -> None:
    assert [s.value for s in S] == ["waiting", "active", "cancelled", "completed"]
    assert [w.value for w in W] == [
        "pending",
        "accepted",
        "rejected",
        "expired",
        "cancelled",
        "completed",
        "withdrawn",
    ]
    assert [o.value for o in O] == ["offered", "accepted", "declined", "withdrawn", "expired"]
    assert [m.value for m in M] == ["sent", "delivered", "read"]
    assert S("active") is S.ACTIVE
    assert isinstance(S.ACTIVE, str)
    assert str(S.ACTIVE) == "active"
    assert f"{S.ACTIVE}" == "active"


def test_waiting_and_active_are_the_live_states() -> None:
    assert frozenset({S.WAITING, S.ACTIVE}) == LIVE_STATES


@pytest.mark.parametrize("state", list(S))
def test_is_live(state: SessionState) -> None:
    assert is_live(state) is (state in LIVE_STATES)
