"""Settings, read once from the environment (prefix ``WORKSESSION_``) or a ``.env`` file."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import Literal
from urllib.parse import urlsplit

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
    # Service tokens (the internal API) as a trust domain of their own (PROTOCOL 1, *1.1*).
    service_jwt_secret: str | None = None
    service_jwt_public_key: str | None = None
    service_jwt_audience: str | None = None

    # A port of its own for /internal/* and /metrics, kept off the public network.
    internal_port: int | None = Field(default=None, ge=1, le=65535)
    # uvicorn's guards against clients that hold connections open for nothing.
    limit_concurrency: int | None = Field(default=None, ge=1)
    timeout_keep_alive_s: int = Field(default=5, ge=1)
    header_timeout_s: float = Field(default=10.0, gt=0)
    max_header_bytes: int = Field(default=65536, ge=1024)

    distance_interval_s: float = Field(default=30.0, gt=0)
    move_threshold_m: float = Field(default=50.0, ge=0)
    nearby_m: float = Field(default=300.0, ge=0)
    arrived_m: float = Field(default=50.0, ge=0)
    max_accuracy_m: float = Field(default=100.0, gt=0)
    max_speed_kmh: float = Field(default=200.0, gt=0)
    typing_timeout_s: float = Field(default=6.0, gt=0)
    offer_ttl_s: float = Field(default=120.0, gt=0)
    message_retention_hours: float = Field(default=24.0, gt=0)
    sweep_interval_s: float = Field(default=3600.0, gt=0)
    # A live session neither participant has sent a frame for this long is cancelled by
    # the system (PROTOCOL 5, *1.1*).
    abandon_after_s: float = Field(default=43200.0, gt=0)

    @property
    def touch_interval_s(self) -> float:
        """How often at most a socket's typing or ``resume`` for a session is written down
        as a sign of life: a minute, or a quarter of ``abandon_after_s`` if that is less."""
        return min(60.0, self.abandon_after_s / 4)

    max_frame_bytes: int = Field(default=16384, ge=256)
    rate_limit_per_s: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=40, ge=1)
    # Limits per user, over all of their sockets and every worker (PROTOCOL 2, 3, 7, *1.1*).
    max_sockets_per_user: int = Field(default=5, ge=1)
    user_rate_limit_per_s: float = Field(default=40.0, gt=0)
    user_rate_limit_burst: int = Field(default=80, ge=1)
    rest_rate_limit_per_s: float = Field(default=10.0, gt=0)
    rest_rate_limit_burst: int = Field(default=20, ge=1)
    replay_page_size: int = Field(default=200, ge=1, le=10_000)
    max_messages_per_session: int = Field(default=5000, ge=1)

    # Webhooks for users with no socket open (contract 1.1, section 8): off without a URL.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_chat_coalesce_s: float = Field(default=30.0, ge=0)
    webhook_timeout_s: float = Field(default=5.0, gt=0)

    # The playground page and its token mint (``ops.playground``): None means on in dev
    # only. It hands out tokens for any user, so production refuses it outright.
    playground: bool | None = None

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @cached_property
    def allowed_algorithms(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.jwt_algorithms.split(",") if a.strip())

    @property
    def playground_enabled(self) -> bool:
        return self.env == "dev" if self.playground is None else self.playground

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @model_validator(mode="after")
    def _refuse_unsafe_configuration(self) -> Settings:
        if not self.allowed_algorithms:
            raise ValueError("WORKSESSION_JWT_ALGORITHMS lists no algorithm")
        uses_public_key = any(not a.startswith("HS") for a in self.allowed_algorithms)
        if uses_public_key and not self.jwt_public_key:
            raise ValueError("an asymmetric JWT algorithm needs WORKSESSION_JWT_PUBLIC_KEY")
        self._check_service_domain()
        self._check_webhooks()
        return self

    def _check_webhooks(self) -> None:
        if not self.webhook_url:
            return
        if not self.webhook_secret:
            # An unsigned webhook could be forged by anyone who can reach the receiver.
            raise ValueError("WORKSESSION_WEBHOOK_URL is set without WORKSESSION_WEBHOOK_SECRET")
        # A URL the dispatcher cannot POST to would fail every attempt of every webhook.
        try:
            url = urlsplit(self.webhook_url)
            url.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("WORKSESSION_WEBHOOK_URL is not a URL") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("WORKSESSION_WEBHOOK_URL is not an http:// or https:// URL")
        if self.env != "production":
            return
        if url.scheme != "https":
            # The body names a user; the signature stops forgery, not eavesdropping.
            raise ValueError("WORKSESSION_WEBHOOK_URL is not https: in production it must be")
        if len(self.webhook_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"WORKSESSION_WEBHOOK_SECRET is shorter than {MIN_SECRET_BYTES} bytes")

    @property
    def has_service_key(self) -> bool:
        return bool(self.service_jwt_secret or self.service_jwt_public_key)

    @cached_property
    def service_algorithms(self) -> tuple[str, ...]:
        """The allowed algorithms the service key can verify (HS* for a secret, the
        others for a public key)."""
        return tuple(
            a
            for a in self.allowed_algorithms
            if (self.service_jwt_secret if a.startswith("HS") else self.service_jwt_public_key)
        )

    def _check_service_domain(self) -> None:
        if self.has_service_key and not self.service_algorithms:
            raise ValueError(
                "WORKSESSION_JWT_ALGORITHMS allows no algorithm the service key can verify"
            )
        if self.env != "production":
            return
        if self.playground:
            raise ValueError(
                "WORKSESSION_PLAYGROUND is on: its endpoint mints a token for any user, "
                "which production must never serve"
            )
        weak = self.weak_secret()
        if weak:
            raise ValueError(weak)
        if not self.has_service_key:
            raise ValueError(
                "WORKSESSION_SERVICE_JWT_SECRET (or WORKSESSION_SERVICE_JWT_PUBLIC_KEY) is not "
                "set: in production service tokens need a key of their own"
            )
        if self.service_jwt_secret and self.service_jwt_secret == self.jwt_secret:
            raise ValueError("WORKSESSION_SERVICE_JWT_SECRET is the participant secret")
        if self.service_jwt_public_key and (
            self.service_jwt_public_key.strip() == (self.jwt_public_key or "").strip()
        ):
            raise ValueError("WORKSESSION_SERVICE_JWT_PUBLIC_KEY is the participant public key")

    def weak_secret(self) -> str | None:
        """Why an HMAC secret in use is not fit to face a network (the development
        default, or shorter than RFC 7518 asks for its algorithms), or None."""
        hmac_algorithms = [a for a in self.allowed_algorithms if a.startswith("HS")]
        if not hmac_algorithms:
            return None
        needed = max(HMAC_MIN_KEY_BYTES.get(a, MIN_SECRET_BYTES) for a in hmac_algorithms)
        for name, secret in (
            ("WORKSESSION_JWT_SECRET", self.jwt_secret),
            ("WORKSESSION_SERVICE_JWT_SECRET", self.service_jwt_secret),
        ):
            if secret is None:
                continue
            if secret == DEFAULT_JWT_SECRET:
                return f"{name} is the development default"
            if len(secret.encode()) < needed:
                return f"{name} is shorter than {needed} bytes"
        return None

    def exposure_refusal(self, host: str) -> str | None:
        """Why the service must not listen on ``host``, whatever ``env`` says: anything but
        a loopback address reaches a network, where a default or short secret lets anyone
        mint tokens."""
        if is_loopback(host):
            return None
        weak = self.weak_secret()
        if weak:
            return f"{weak}; refusing to listen on {host}"
        if self.playground_enabled:
            return (
                "the playground (on by default in dev) mints a token for any user who can "
                f"reach it; set WORKSESSION_PLAYGROUND=false to listen on {host}"
            )
        return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A host name other than localhost may resolve to any interface.
        return False
