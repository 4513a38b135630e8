"""Deleting what has outlived its retention: expired chat and the history of old sessions."""

from __future__ import annotations

from datetime import datetime

from worksession.pipeline.commands import SweepExpired
from worksession.pipeline.decision import Decision, Sweep
from worksession.pipeline.world import World


def decide_sweep(world: World, command: SweepExpired, now: datetime) -> Decision:
    """Delete expired chat messages and the event log of sessions that ended more than the
    retention ago (it holds the chat text too)."""
    del command
    return Decision(writes=(Sweep(now=now, ended_before=now - world.policy.retention),))
