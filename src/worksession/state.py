"""The objects one worker process shares between requests, built by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from worksession.chat.typing import TypingRelay
from worksession.config import Settings
from worksession.kit.broker import Broker
from worksession.kit.db import Database
from worksession.kit.jwt import TokenVerifier
from worksession.pipeline.runner import Pipeline
from worksession.realtime.connections import Hub
from worksession.realtime.presence import Presence
from worksession.realtime.ratelimit import SharedBudget
from worksession.webhooks.dispatcher import Dispatcher


@dataclass(slots=True)
class AppState:
    settings: Settings
    db: Database
    """For reads (snapshots, history, lookups); every write goes through ``pipeline``."""
    broker: Broker
    verifier: TokenVerifier
    hub: Hub
    pipeline: Pipeline
    typing: TypingRelay
    presence: Presence
    rest_budget: SharedBudget
    """PROTOCOL 7 (*1.1*): each participant's REST requests, over every worker."""
    webhooks: Dispatcher | None = None
    """The webhook dispatcher, when ``WORKSESSION_WEBHOOK_URL`` is set."""


def get_state(connection: HTTPConnection) -> AppState:
    state = connection.app.state.worksession
    assert isinstance(state, AppState)
    return state
