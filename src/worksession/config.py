"""Settings, read once from the environment (prefix ``WORKSESSION_``) or a ``.env`` file."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_JWT_SECRET = "dev-only-insecure-secret-change-me-in-production"  # noqa: S105 - refused in production below
MIN_SECRET_BYTES = 32
# RFC 7518 3.2: an HMAC key at least as long as the hash output.
HMAC_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WORKSESSION_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    env: Literal["dev", "test", "production"] = "dev"
    database_url: str = "sqlite+aiosqlite:///./worksession.db"
    redis_url: str | None = None
    redis_prefix: str = Field(default="worksession", min_length=1, max_length=64)
    leader_ttl_s: float = Field(default=10.0, ge=1)

    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_algorithms: str = "HS256"
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    distance_interval_s: float = Field(default=30.0, gt=0)
    move_threshold_m: float = Field(default=50.0, ge=0)
    nearby_m: float = Field(default=300.0, ge=0)
    arrived_m: float = Field(default=50.0, ge=0)
    max_accuracy_m: float = Field(default=100.0, gt=0)
    max_speed_kmh: float = Field(default=200.0, gt=0)
    typing_timeout_s: float = Field(default=6.0, gt=0)
    offer_ttl_s: float = Field(default=120.0, gt=0)
    message_retention_hours: float = Field(default=24.0, gt=0)
    max_frame_bytes: int = Field(default=16384, ge=256)
    rate_limit_per_s: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=40, ge=1)
    # Limits per user, over all of their sockets and every worker (PROTOCOL 2, 3, 7, *1.1*).
    max_sockets_per_user: int = Field(default=5, ge=1)
    user_rate_limit_per_s: float = Field(default=40.0, gt=0)
    user_rate_limit_burst: int = Field(default=80, ge=1)
    rest_rate_limit_per_s: float = Field(default=10.0, gt=0)
    rest_rate_limit_burst: int = Field(default=20, ge=1)

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @cached_property
    def allowed_algorithms(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.jwt_algorithms.split(",") if a.strip())

    @property
    sweep_interval_s: float = Field(default=3600.0, gt=0)
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @model_validator(mode="after")
    def _refuse_weak_secrets_in_production(self) -> Settings:
        if not self.allowed_algorithms:
            raise ValueError("WORKSESSION_JWT_ALGORITHMS lists no algorithm")
        hmac_algorithms = [a for a in self.allowed_algorithms if a.startswith("HS")]
        if self.env == "production" and hmac_algorithms:
            if self.jwt_secret == DEFAULT_JWT_SECRET:
                raise ValueError("WORKSESSION_JWT_SECRET is the development default")
            needed = max(HMAC_MIN_KEY_BYTES.get(a, MIN_SECRET_BYTES) for a in hmac_algorithms)
            if len(self.jwt_secret.encode()) < needed:
                raise ValueError(f"WORKSESSION_JWT_SECRET is shorter than {needed} bytes")
        uses_public_key = any(not a.startswith("HS") for a in self.allowed_algorithms)
        if uses_public_key and not self.jwt_public_key:
            raise ValueError("an asymmetric JWT algorithm needs WORKSESSION_JWT_PUBLIC_KEY")
        return self
