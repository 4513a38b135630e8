"""What outlives its retention: expired chat, the history of old sessions, personal data.

PROTOCOL 5: 24 hours (the retention) after a session ended its chat and its event log are
deleted and its personal data erased, its mediums (phone numbers) and both positions; an
order that ended as long ago loses its ``details`` and the seeker's location. What stays
is ids, states and times. The store does each in one set-based statement (see
``pipeline.store.Transaction.sweep``).
"""

from __future__ import annotations

from datetime import datetime

from worksession.pipeline.commands import SweepExpired
from worksession.pipeline.decision import Decision, Sweep
from worksession.pipeline.world import World


def decide_sweep(world: World, command: SweepExpired, now: datetime) -> Decision:
    """Delete expired chat messages; for what ended more than the retention ago, delete
    the event log (it holds the chat text too) and erase the personal data."""
    del command
    return Decision(writes=(Sweep(now=now, ended_before=now - world.policy.retention),))
