"""The one table from a command to the function that decides it.

Every rule of the service lives in one of these functions, each pure: ``(world, command,
now) -> Decision``. The pipeline calls :func:`decide` for every command of a batch; the
unit tests call the functions directly, with no database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from worksession.availability.flags import decide_set
from worksession.chat.messages import decide_send, decide_start_chat
from worksession.chat.receipts import decide_acknowledge
from worksession.errors import WorksessionError
from worksession.orders.offers import (
    CONFLICTS,
    decide_accept,
    decide_create,
    decide_decline,
    decide_expire,
    decide_withdraw,
)
from worksession.pipeline import commands as c
from worksession.pipeline.decision import Decision
from worksession.pipeline.world import World
from worksession.sessions.lifecycle import (
    decide_abandoned,
    decide_cancel,
    decide_complete,
    decide_touch,
)
from worksession.sessions.location import decide_fix
from worksession.sessions.mediums import decide_select, decide_share
from worksession.sessions.retention import decide_sweep

DECIDERS: dict[type[Any], Callable[[World, Any, datetime], Decision]] = {
    c.CreateWorkOrder: decide_create,
    c.AcceptWork: decide_accept,
    c.DeclineWork: decide_decline,
    c.WithdrawWork: decide_withdraw,
    c.ExpireOffers: decide_expire,
    c.SelectMediums: decide_select,
    c.ShareMediums: decide_share,
    c.ReportLocation: decide_fix,
    c.CancelSession: decide_cancel,
    c.CancelAbandoned: decide_abandoned,
    c.CompleteSession: decide_complete,
    c.TouchSession: decide_touch,
    c.StartChat: decide_start_chat,
    c.SendMessage: decide_send,
    c.AcknowledgeMessage: decide_acknowledge,
    c.SetAvailability: decide_set,
    c.SweepExpired: decide_sweep,
}

CONSTRAINT_ERRORS: dict[str, type[WorksessionError]] = dict(CONFLICTS)
"""A unique rule broken by a concurrent transaction, and the error it means."""


def decide(world: World, command: c.Command, now: datetime) -> Decision:
    return DECIDERS[type(command)](world, command, now)
