from __future__ import annotations

import itertools

import pytest

from worksession.sessions.states import (
    ALLOWED_OFFER_TRANSITIONS,
    ALLOWED_ORDER_TRANSITIONS,
    ALLOWED_TRANSITIONS,
    ENDED_STATES,
    LIVE_STATES,
    MESSAGE_STATUS_RANK,
    MessageStatus,
    OfferStatus,
    SessionState,
    WorkOrderStatus,
    advances,
    can_transition,
    can_transition_offer,
    can_transition_order,
    is_final,
    is_live,
)

S = SessionState
W = WorkOrderStatus
O = OfferStatus  # noqa: E741
M = MessageStatus

SESSION_ALLOWED = {
    (S.WAITING, S.ACTIVE),
    (S.WAITING, S.CANCELLED),
    (S.WAITING, S.COMPLETED),
    (S.ACTIVE, S.CANCELLED),
    (S.ACTIVE, S.COMPLETED),
}
ORDER_ALLOWED = {
    (W.PENDING, W.ACCEPTED),
    (W.PENDING, W.REJECTED),
    (W.PENDING, W.EXPIRED),
    (W.PENDING, W.CANCELLED),
    (W.ACCEPTED, W.CANCELLED),
    (W.ACCEPTED, W.COMPLETED),
}
OFFER_ALLOWED = {
    (O.OFFERED, O.ACCEPTED),
    (O.OFFERED, O.DECLINED),
    (O.OFFERED, O.WITHDRAWN),
    (O.OFFERED, O.EXPIRED),
}


def test_wire_values() -> None:
    assert [s.value for s in S] == ["waiting", "active", "cancelled", "completed"]
    assert [w.value for w in W] == [
        "pending",
        "accepted",
        "rejected",
        "expired",
        "cancelled",
        "completed",
    ]
    assert [o.value for o in O] == ["offered", "accepted", "declined", "withdrawn", "expired"]
    assert [m.value for m in M] == ["sent", "delivered", "read"]
    assert S("active") is S.ACTIVE
    assert isinstance(S.ACTIVE, str)
    assert str(S.ACTIVE) == "active"
    assert f"{S.ACTIVE}" == "active"


# --- sessions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "new"), list(itertools.product(S, S)))
def test_session_transition_matrix(current: SessionState, new: SessionState) -> None:
    assert can_transition(current, new) is ((current, new) in SESSION_ALLOWED)


def test_session_table_covers_every_state() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(S)


def test_live_and_ended_partition_the_states() -> None:
    assert frozenset({S.WAITING, S.ACTIVE}) == LIVE_STATES
    assert frozenset({S.CANCELLED, S.COMPLETED}) == ENDED_STATES
    assert set(S) == LIVE_STATES | ENDED_STATES
    assert not LIVE_STATES & ENDED_STATES


@pytest.mark.parametrize("state", list(S))
def test_is_live_and_is_final(state: SessionState) -> None:
    assert is_live(state) is (state in LIVE_STATES)
    # Here every ended state is final and every live one can still move.
    assert is_final(state) is (state in ENDED_STATES)
    assert is_final(state) is not is_live(state)


def test_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        ALLOWED_TRANSITIONS[S.CANCELLED] = frozenset({S.ACTIVE})  # type: ignore[index]
    with pytest.raises(TypeError):
        ALLOWED_ORDER_TRANSITIONS[W.REJECTED] = frozenset()  # type: ignore[index]
    with pytest.raises(TypeError):
        MESSAGE_STATUS_RANK[M.READ] = -1  # type: ignore[index]


# --- work orders ------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "new"), list(itertools.product(W, W)))
def test_order_transition_matrix(current: WorkOrderStatus, new: WorkOrderStatus) -> None:
    assert can_transition_order(current, new) is ((current, new) in ORDER_ALLOWED)


def test_order_table_covers_every_status() -> None:
    assert set(ALLOWED_ORDER_TRANSITIONS) == set(W)


# --- offers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "new"), list(itertools.product(O, O)))
def test_offer_transition_matrix(current: OfferStatus, new: OfferStatus) -> None:
    assert can_transition_offer(current, new) is ((current, new) in OFFER_ALLOWED)


def test_offer_table_covers_every_status() -> None:
    assert set(ALLOWED_OFFER_TRANSITIONS) == set(O)


# --- message receipts -------------------------------------------------------------------


def test_message_ranks_are_in_order() -> None:
    assert MESSAGE_STATUS_RANK[M.SENT] < MESSAGE_STATUS_RANK[M.DELIVERED]
    assert MESSAGE_STATUS_RANK[M.DELIVERED] < MESSAGE_STATUS_RANK[M.READ]
    assert set(MESSAGE_STATUS_RANK) == set(M)


def test_names_do_not_sort_like_ranks() -> None:
    # Why ranks exist: comparing the names would put `sent` after `read`.
    assert sorted(m.value for m in M) != [m.value for m in M]


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (M.SENT, M.SENT, False),
        (M.SENT, M.DELIVERED, True),
        (M.SENT, M.READ, True),
        (M.DELIVERED, M.SENT, False),
        (M.DELIVERED, M.DELIVERED, False),
        (M.DELIVERED, M.READ, True),
        (M.READ, M.SENT, False),
        (M.READ, M.DELIVERED, False),
        (M.READ, M.READ, False),
    ],
)
def test_receipts_only_advance(current: MessageStatus, new: MessageStatus, expected: bool) -> None:
    assert advances(current, new) is expected
