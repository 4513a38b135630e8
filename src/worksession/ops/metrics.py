"""Prometheus metrics: what the service counts, and the text exposition of it.

Only prometheus-client here, no web framework: services record through the small functions
below, and ``ops.health`` serves ``GET /metrics``. Label values are always from a closed
set chosen by the server (frame types it knows, error codes, outcomes), never from client
input, so a client cannot blow up the number of series.

Several workers (``worksession serve --workers N``): prometheus-client's multi-process
mode. ``PROMETHEUS_MULTIPROC_DIR`` must name an empty directory before the workers start
(the ``serve`` command makes a fresh one per start and removes it at exit); each worker
writes its values there and a scrape of any worker reads them all. The open-socket gauge
sums the live workers (``livesum``); a worker marks itself dead when it stops.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import assert_never

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from worksession.pipeline.decision import (
    DistanceSent,
    FixDropped,
    MessageDelivered,
    Observation,
    OfferOutcome,
    SessionEnded,
)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

ROLES = ("seeker", "provider")

OPEN_SOCKETS = Gauge(
    "worksession_open_sockets",
    "Authenticated WebSockets open now, by role.",
    ["role"],
    multiprocess_mode="livesum",
)
FRAMES_IN = Counter(
    "worksession_frames_in",
    "Client frames that passed validation, by type (rejected ones count under errors).",
    ["type"],
)
FRAMES_OUT = Counter(
    "worksession_frames_out",
    "Frames written to sockets, by type (each socket counts its own copy).",
    ["type"],
)
ERRORS = Counter(
    "worksession_errors",
    "error frames sent to WebSocket clients, by code.",
    ["code"],
)
DELIVERY_LATENCY = Histogram(
    "worksession_message_delivery_seconds",
    "Chat message latency from sent (stored) to delivered (the recipient's receipt).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400),
)
DISTANCE_UPDATES = Counter(
    "worksession_distance_updates",
    "distance_update pairs sent (one per session: both participants), by trigger.",
    ["trigger"],
)
SESSION_DURATION = Histogram(
    "worksession_session_duration_seconds",
    "Time from accept to the end of a session, by outcome.",
    ["outcome"],
    buckets=(60, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400),
)
SESSION_OUTCOMES = Counter(
    "worksession_session_outcomes",
    "Sessions ended, by outcome.",
    ["outcome"],
)
OFFER_OUTCOMES = Counter(
    "worksession_offer_outcomes",
    "Work offers answered (accepted, declined by a provider) and work orders that found "
    "nobody (rejected: every provider declined; expired: nobody answered in time; "
    "withdrawn: the seeker took the order back).",
    ["outcome"],
)
TICK_DURATION = Histogram(
    "worksession_distance_tick_seconds",
    "Duration of one run of the 30-second distance ticker (on the leader worker).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BROKER_RECONNECTS = Counter(
    "worksession_broker_reconnects",
    "Times a worker's broker subscription came back after an outage.",
)
PIPELINE_BATCH = Histogram(
    "worksession_pipeline_batch_commands",
    "Commands per batch of the write pipeline (each batch is one transaction).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PIPELINE_SPLITS = Counter(
    "worksession_pipeline_splits",
    "Batches that failed in the database and were run again command by command.",
)
WEBHOOK_DELIVERIES = Counter(
    "worksession_webhook_deliveries",
    "Webhook attempts by outcome: delivered (2xx), failed (will be retried), dead (retried "
    "for 24 hours), online_recheck (the user had a socket open when it was due: checked "
    "again later), skipped_online (a socket open at that re-check too).",
    ["outcome"],
)
WEBHOOK_QUEUE_DEPTH = Gauge(
    "worksession_webhook_queue_depth",
    "Webhooks pending (waiting, in flight or waiting for a retry), over all workers.",
    multiprocess_mode="livemax",
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "worksession_webhook_oldest_pending_seconds",
    "Age of the oldest pending webhook (0 when none), over all workers.",
    multiprocess_mode="livemax",
)
WEBHOOK_RECEIVER_FAILING = Gauge(
    "worksession_webhook_receiver_failing",
    "1 while a worker has stopped sending webhooks because the receiver keeps failing "
    "(it sends one probe now and then until the receiver answers again), else 0.",
    multiprocess_mode="livemax",
)
FIXES_DROPPED = Counter(
    "worksession_location_fixes_dropped",
    "Location fixes dropped as noise, by verdict.",
    ["verdict"],
)

for _role in ROLES:
    OPEN_SOCKETS.labels(_role)
for _outcome in ("cancelled", "completed"):
    SESSION_OUTCOMES.labels(_outcome)
for _outcome in ("accepted", "declined", "rejected", "expired", "withdrawn"):
    OFFER_OUTCOMES.labels(_outcome)
WEBHOOK_OUTCOMES = ("delivered", "failed", "dead", "skipped_online")
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_DELIVERIES.labels(_outcome)

_FRAME_PREFIX = '{"type":"'
_MAX_TYPE_CHARS = 40


def frame_type(text: str) -> str:
    """The ``type`` of a frame the server encoded (``outbox.dumps`` puts it first)."""
    if text.startswith(_FRAME_PREFIX):
        end = text.find('"', len(_FRAME_PREFIX), len(_FRAME_PREFIX) + _MAX_TYPE_CHARS + 1)
        if end > 0:
            return text[len(_FRAME_PREFIX) : end]
    return "other"


# ``labels()`` builds and looks up a key under a lock on every call: a noticeable share of a
# frame's CPU. The label sets here are closed, so each child is looked up once.
_FRAMES_IN_BY_TYPE: dict[str, Counter] = {}
_FRAMES_OUT_BY_TYPE: dict[str, Counter] = {}


def frame_in(type_: str) -> None:
    counter = _FRAMES_IN_BY_TYPE.get(type_)
    if counter is None:
        counter = _FRAMES_IN_BY_TYPE[type_] = FRAMES_IN.labels(type_)
    counter.inc()


def frame_out(text: str) -> None:
    type_ = frame_type(text)
    counter = _FRAMES_OUT_BY_TYPE.get(type_)
    if counter is None:
        counter = _FRAMES_OUT_BY_TYPE[type_] = FRAMES_OUT.labels(type_)
    counter.inc()


def error_sent(code: str) -> None:
    ERRORS.labels(code).inc()


def message_delivered(*, created_at: datetime, delivered_at: datetime) -> None:
    DELIVERY_LATENCY.observe(max(0.0, (delivered_at - created_at).total_seconds()))


def distance_updates(trigger: str, sessions: int = 1) -> None:
    """``trigger``: ``move`` (a participant moved 50 m) or ``tick`` (the periodic ticker)."""
    if sessions:
        DISTANCE_UPDATES.labels(trigger).inc(sessions)


def session_ended(outcome: str, *, started_at: datetime, ended_at: datetime) -> None:
    SESSION_OUTCOMES.labels(outcome).inc()
    SESSION_DURATION.labels(outcome).observe(max(0.0, (ended_at - started_at).total_seconds()))


def offer_outcome(outcome: str, count: int = 1) -> None:
    if count:
        OFFER_OUTCOMES.labels(outcome).inc(count)


def fix_dropped(verdict: str) -> None:
    FIXES_DROPPED.labels(verdict).inc()


def webhook_outcome(outcome: str, count: int = 1) -> None:
    WEBHOOK_DELIVERIES.labels(outcome).inc(count)


def webhook_receiver_failing(failing: bool) -> None:
    WEBHOOK_RECEIVER_FAILING.set(1 if failing else 0)


def webhook_queue(depth: int, oldest_age_s: float) -> None:
    WEBHOOK_QUEUE_DEPTH.set(depth)
    WEBHOOK_OLDEST_PENDING.set(oldest_age_s)


def observe(observation: Observation) -> None:
    """Count what a committed decision reports (never before the COMMIT: a batch that
    rolls back must not count)."""
    match observation:
        case FixDropped(verdict):
            fix_dropped(verdict)
        case DistanceSent(trigger, sessions):
            distance_updates(trigger, sessions)
        case MessageDelivered(created_at, delivered_at):
            message_delivered(created_at=created_at, delivered_at=delivered_at)
        case SessionEnded(outcome, started_at, ended_at):
            session_ended(outcome, started_at=started_at, ended_at=ended_at)
        case OfferOutcome(outcome, count):
            offer_outcome(outcome, count)
        case _:
            assert_never(observation)


def batch_run(commands: int) -> None:
    PIPELINE_BATCH.observe(commands)


def batch_split() -> None:
    PIPELINE_SPLITS.inc()


_reconnects_seen = 0


def sync_broker_reconnects(total: int) -> None:
    """Bring the counter up to ``total``, this worker's broker's own count (``kit`` may not
    know about metrics, so its count is read rather than pushed)."""
    global _reconnects_seen
    if total > _reconnects_seen:
        BROKER_RECONNECTS.inc(total - _reconnects_seen)
        _reconnects_seen = total


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The Prometheus text format of every metric (of every worker in multi-process mode)
    and its content type."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_this_process_dead() -> None:
    """Drop this worker's live gauges from the shared directory (at worker shutdown)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def socket_opened(role: str) -> None:
    OPEN_SOCKETS.labels(role).inc()


def socket_closed(role: str) -> None:
    OPEN_SOCKETS.labels(role).dec()
