"""The objects one worker process shares between requests, built by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from worksession.chat.batch import ChatBatcher
from worksession.config import Settings
from worksession.kit.broker import Broker
from worksession.kit.db import Database
from worksession.kit.jwt import TokenVerifier
from worksession.realtime.connections import Hub


@dataclass(slots=True)
class AppState:
    settings: Settings
    db: Database
    broker: Broker
    verifier: TokenVerifier
    hub: Hub
    chat_batcher: ChatBatcher | None = None
    """Group commit of chat frames; None on SQLite, whose one connection takes frames
    one at a time anyway."""


def get_state(connection: HTTPConnection) -> AppState:
    state = connection.app.state.worksession
    assert isinstance(state, AppState)
    return state
