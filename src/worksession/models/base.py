"""Declarative base with an explicit constraint naming convention.

Alembic needs stable constraint names to drop or alter them later, and SQLite's batch mode
cannot find an unnamed constraint at all.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from worksession.kit.clock import utcnow
from worksession.kit.sqltypes import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

USER_ID_LENGTH = 64
"""User ids are the JWT ``sub``: opaque strings owned by another service, never foreign keys."""

USER_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""No control characters in a user id: PostgreSQL cannot even store a NUL in text, and an
id that reaches a query with one is a database error (a 500) instead of a 422."""

UserId = String(USER_ID_LENGTH)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
