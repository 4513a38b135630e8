"""Alembic, driven from code so that an installed package can migrate itself."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from worksession.config import Settings


def _migrations_dir() -> Path:
    """Inside an installed wheel, ``worksession/migrations`` (the build puts them there);
    in a checkout, including an editable install, ``migrations/`` at its top."""
    packaged = Path(__file__).parent / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


MIGRATIONS_DIR = _migrations_dir()


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    # ConfigParser interpolation would choke on a "%" in a password.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Blocking: call it outside the event loop."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def ensure_schema(settings: Settings) -> None:
    """Make sure the schema is current before serving.

    The embedded SQLite default migrates itself, so that ``worksession serve`` works with no
    set-up at all. A shared database is migrated by an operator (``worksession migrate``),
    never by whichever worker starts first; serving against an old schema is refused.
    """
    if settings.is_sqlite:
        upgrade(settings.database_url)
        return
    current = current_revision(settings.database_url)
    head = current_head()
    if current != head:
        raise SystemExit(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `worksession migrate` first"
        )


def current_revision(database_url: str) -> str | None:
    import asyncio

    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.engine import Connection

    from worksession.kit.db import create_engine

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async def run() -> str | None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())
