"""The ``worksession`` command: serve, migrate, sweep, token, webhook-verify."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from worksession.config import Settings

cli = typer.Typer(
    help="worksession: live work sessions between a seeker and a provider.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold tokens or message text
)
logger = logging.getLogger("worksession.cli")


class TokenUserType(StrEnum):
    seeker = "seeker"
    provider = "provider"
    service = "service"


# sysexits.h EX_CONFIG: a supervisor can tell "fix the configuration" from a crash.
EXIT_CONFIG = 78


def refuse(reason: str) -> NoReturn:
    """Stop before serving anything, with one line that says why (an operator reads it in
    a container's log; a traceback would bury it, and pydantic's would print the input)."""
    typer.echo(f"worksession: refusing to start: {reason}", err=True)
    raise typer.Exit(EXIT_CONFIG)


def _reason(error: ValidationError) -> str:
    reasons = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        field = ".".join(str(part) for part in item["loc"])
        reasons.append(f"WORKSESSION_{field.upper()}: {message}" if field else message)
    return " ".join("; ".join(reasons).split())


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        refuse(_reason(exc))
    except SettingsError as exc:
        refuse(" ".join(str(exc).split()))


def _settings() -> Settings:
    from worksession.ops.logs import configure_logging

    settings = load_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the service (uvicorn with uvloop and httptools)."""
    from worksession import serving
    from worksession.lifespan import describe_database
    from worksession.migrate import ensure_schema

    settings = _settings()
    exposed = settings.exposure_refusal(host)
    if exposed:
        refuse(exposed)
    if settings.internal_port == port:
        refuse("WORKSESSION_INTERNAL_PORT is the public port (--port)")
    if workers > 1 and not settings.redis_url:
        # The in-process broker cannot reach another process's sockets, and every process
        # would lead the periodic jobs: N distance ticks, N typing stops.
        raise typer.BadParameter(
            "several workers need WORKSESSION_REDIS_URL (the in-process broker serves one)",
            param_hint="--workers",
        )
    logger.info("database: %s", describe_database(settings.database_url))
    ensure_schema(settings)
    with _metrics_directory(workers):
        serving.run(settings, host=host, port=port, workers=workers)


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """Several workers share their metrics through a directory (prometheus-client's
    multi-process mode) that must be empty when they start: a fresh one per start, removed
    at exit. The variable is set before uvicorn spawns the workers, which inherit it. An
    operator's own ``PROMETHEUS_MULTIPROC_DIR`` is used as it is."""
    from worksession.ops.metrics import MULTIPROC_DIR_ENV

    if workers < 2 or os.environ.get(MULTIPROC_DIR_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="worksession-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_DIR_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


@cli.command()
def migrate() -> None:
    """Bring the database schema to the newest revision (Alembic upgrade head)."""
    from worksession import migrate as migrations

    settings = _settings()
    migrations.upgrade(settings.database_url)
    typer.echo("database schema is at the newest revision")


@cli.command()
def sweep() -> None:
    """Delete expired chat messages and the history of sessions past retention, and erase
    the personal data of sessions and orders past retention, now."""
    from worksession.kit.broker import MemoryBroker
    from worksession.kit.db import Database
    from worksession.lifespan import build_pipeline
    from worksession.pipeline.commands import SweepExpired

    settings = _settings()

    async def run() -> None:
        db = Database(settings.database_url)
        # Nothing to publish: a sweep logs no event.
        pipeline = build_pipeline(settings, db, MemoryBroker())
        try:
            outcome = await pipeline.submit(SweepExpired())
        finally:
            await pipeline.store.dispose()
            await db.dispose()
        messages = sum(s.messages for s in outcome.swept)
        events = sum(s.events for s in outcome.swept)
        sessions = sum(s.sessions for s in outcome.swept)
        orders = sum(s.orders for s in outcome.swept)
        typer.echo(
            f"deleted {messages} chat messages, {events} session events; erased the personal "
            f"data of {sessions} sessions and {orders} work orders"
        )

    asyncio.run(run())


@cli.command()
def token(
    sub: Annotated[str, typer.Option(help="User id (the JWT sub).")],
    user_type: Annotated[TokenUserType, typer.Option(help="Who the token is for.")],
    ttl: Annotated[int, typer.Option(min=1, help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a signed token, for trying the service out."""
    from worksession.lifespan import build_verifier

    verifier = build_verifier(load_settings())
    try:
        signed = verifier.issue(sub=sub, user_type=user_type.value, ttl_s=ttl)
    except ValueError as exc:
        # A key this command cannot sign with (a public key only): say so in one line.
        typer.echo(f"worksession: cannot sign a {user_type.value} token: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(signed)


@cli.command("webhook-verify")
def webhook_verify(
    body: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="The saved raw request body.")
    ],
    header: Annotated[str, typer.Option(help="The Worksession-Signature header's value.")],
    max_age: Annotated[
        float, typer.Option(min=0, help="Seconds a signature stays valid; 0: any age.")
    ] = 300,
) -> None:
    """Check a saved webhook body and its signature header against
    WORKSESSION_WEBHOOK_SECRET (read from the environment, never from an argument)."""
    from worksession.webhooks.verify import verify_worksession_signature

    secret = os.environ.get("WORKSESSION_WEBHOOK_SECRET")
    if not secret:
        typer.echo("worksession: WORKSESSION_WEBHOOK_SECRET is not set", err=True)
        raise typer.Exit(2)
    raw = body.read_bytes()
    any_age = float("inf")
    if verify_worksession_signature(raw, header, secret, tolerance_s=max_age or any_age):
        typer.echo("valid")
        return
    if verify_worksession_signature(raw, header, secret, tolerance_s=any_age):
        if _signed_at(header) > time.time():
            reason = f"timestamp in the future (more than {max_age:g} s ahead)"
        else:
            reason = f"stale timestamp (older than {max_age:g} s)"
    elif "t=" in header and "v1=" in header:
        reason = "signature mismatch"
    else:
        reason = "malformed header"
    typer.echo(f"invalid: {reason}", err=True)
    raise typer.Exit(1)


def _signed_at(header: str) -> int:
    """The header's ``t`` as the verifier reads it (the last well-formed one); only called
    on a header that verified with any age, which has one."""
    found = 0
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            found = int(value)
    return found


def main() -> None:
    cli()
