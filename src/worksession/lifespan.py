"""Builds and tears down what a worker process needs: database, broker, hub, scheduler."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from worksession.chat.typing import TypingRelay
from worksession.config import Settings
from worksession.decide import CONSTRAINT_ERRORS, decide
from worksession.eventlog.outbox import Outbox, publish
from worksession.kit.broker import Broker, MemoryBroker
from worksession.kit.db import Database
from worksession.kit.jwt import TokenVerifier
from worksession.kit.leader import Leadership, RedisLease, SoleLeader
from worksession.pipeline.rows import Policy
from worksession.pipeline.runner import Pipeline
from worksession.pipeline.store import Store
from worksession.realtime.connections import CLOSE_RESTARTING, Hub
from worksession.realtime.gateway import close_all
from worksession.realtime.presence import Presence
from worksession.realtime.ratelimit import SharedBudget
from worksession.scheduler import Jobs, build_scheduler
from worksession.sessions import repository as sessions
from worksession.state import AppState
from worksession.webhooks.dispatcher import Dispatcher, online_in

logger = logging.getLogger(__name__)


def build_verifier(settings: Settings) -> TokenVerifier:
    """Participant tokens and, when a service key or audience is set, service tokens as a
    trust domain of their own (PROTOCOL 1, *1.1*)."""
    service: TokenVerifier | None = None
    if settings.has_service_key or settings.service_jwt_audience:
        # With a key of its own, service tokens are checked with it alone; with only an
        # audience of their own, with the participant key and that audience.
        own_key = settings.has_service_key
        service = TokenVerifier(
            algorithms=settings.service_algorithms if own_key else settings.allowed_algorithms,
            hmac_secret=settings.service_jwt_secret if own_key else settings.jwt_secret,
            public_key=settings.service_jwt_public_key if own_key else settings.jwt_public_key,
            issuer=settings.jwt_issuer,
            audience=settings.service_jwt_audience or settings.jwt_audience,
        )
    return TokenVerifier(
        algorithms=settings.allowed_algorithms,
        hmac_secret=settings.jwt_secret,
        public_key=settings.jwt_public_key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        service_domain=service,
    )


def build_broker(settings: Settings) -> tuple[Broker, Leadership]:
    """The broker and the scheduler's leadership: Redis for both, or this process alone."""
    if settings.redis_url:
        from worksession.kit.redis_broker import RedisBroker

        broker = RedisBroker(settings.redis_url, prefix=settings.redis_prefix)
        lease = RedisLease(broker.client, f"{settings.redis_prefix}:leader", settings.leader_ttl_s)
        return broker, lease
    return MemoryBroker(), SoleLeader()


def build_store(db: Database) -> Store:
    """The pipeline's store for the database ``db`` is on."""
    if db.dialect == "postgresql":
        from worksession.pipeline.postgres import PostgresStore

        return PostgresStore(db.url)
    from worksession.pipeline.sqlite import SqliteStore

    return SqliteStore(db.engine)


def build_pipeline(settings: Settings, db: Database, broker: Broker) -> Pipeline:
    return Pipeline(
        build_store(db),
        broker,
        Policy.from_settings(settings),
        decide,
        conflicts=CONSTRAINT_ERRORS,
    )


def build_dispatcher(settings: Settings, db: Database, broker: Broker) -> Dispatcher | None:
    """The webhook dispatcher, or None when webhooks are off (no URL)."""
    if not settings.webhook_url:
        return None
    # Settings refuse a URL without a secret.
    assert settings.webhook_secret is not None
    return Dispatcher(
        db,
        url=settings.webhook_url,
        secret=settings.webhook_secret,
        timeout_s=settings.webhook_timeout_s,
        online=online_in(broker),
    )


def describe_database(url: str) -> str:
    """The URL without its password, fit for a log line."""
    return make_url(url).render_as_string(hide_password=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    db = Database(settings.database_url)
    broker, leadership = build_broker(settings)

    async def publish_typing(outbox: Outbox) -> None:
        await publish(broker, outbox)

    typing = TypingRelay(publish_typing, timeout_s=settings.typing_timeout_s)
    hub = Hub(
        subscribe=broker.subscribe,
        unsubscribe=broker.unsubscribe,
        session_ended=typing.forget,
        join=broker.join,
        leave=broker.leave,
        max_sockets=settings.max_sockets_per_user,
        user_rate=settings.user_rate_limit_per_s,
        user_burst=settings.user_rate_limit_burst,
    )
    broker.watch_groups(hub.evict, hub.spread)

    async def live_participants(
        session_ids: Collection[uuid.UUID],
    ) -> dict[uuid.UUID, tuple[str, str]]:
        async with db.transaction() as s:
            return await sessions.live_participants(s, session_ids)

    state = AppState(
        settings=settings,
        db=db,
        broker=broker,
        verifier=build_verifier(settings),
        hub=hub,
        pipeline=build_pipeline(settings, db, broker),
        typing=typing,
        presence=Presence(broker, live_participants),
        rest_budget=SharedBudget(
            broker, rate=settings.rest_rate_limit_per_s, burst=settings.rest_rate_limit_burst
        ),
    )

    def broker_back() -> None:
        hub.resync()
        state.presence.broker_recovered()

    await broker.start(hub.deliver, broker_back)
    state.presence.start()
    state.webhooks = build_dispatcher(settings, db, broker)
    if state.webhooks is not None:
        state.pipeline.webhooks_written = state.webhooks.wake
        await state.webhooks.start()
    jobs = Jobs(settings, db, state.pipeline, broker, leadership)
    scheduler = build_scheduler(jobs, settings)
    scheduler.start()
    app.state.worksession = state
    logger.info(
        "worksession ready: database %s, broker %s",
        describe_database(settings.database_url),
        type(broker).__name__,
    )
    try:
        yield
    finally:
        scheduler.pause()
        await jobs.stop()
        scheduler.shutdown(wait=False)
        await leadership.release()
        if state.webhooks is not None:
            # Before the sockets close: their users are not offline, they are reconnecting.
            await state.webhooks.pause()
        await close_all(state, CLOSE_RESTARTING, "server restarting")
        await state.presence.close()
        await state.pipeline.wait_idle()
        if state.webhooks is not None:
            await state.webhooks.stop()
        state.typing.close()
        await broker.close()
        await state.pipeline.store.dispose()
        await db.dispose()
