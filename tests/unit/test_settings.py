from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from worksession.config import DEFAULT_JWT_SECRET, Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICE_SECRET = "service-" + "s" * 32


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WORKSESSION_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT / "tests")  # no stray .env file is read


def test_defaults_need_no_configuration() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./worksession.db"
    assert settings.redis_url is None
    assert settings.allowed_algorithms == ("HS256",)
    assert settings.distance_interval_s == 30
    assert settings.max_frame_bytes == 16384


@pytest.mark.parametrize(
    "secret",
    [DEFAULT_JWT_SECRET, "x" * 31, "é" * 15],  # 30 bytes although 15 characters
    ids=["default", "31-bytes", "short-utf8"],
)
def test_production_refuses_weak_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="WORKSESSION_JWT_SECRET"):
        Settings(env="production", jwt_secret=secret)


def test_production_accepts_long_secrets_of_each_domain() -> None:
    settings = Settings(env="production", jwt_secret="s" * 32, service_jwt_secret=SERVICE_SECRET)
    assert settings.env == "production"


def test_production_needs_a_longer_secret_for_hs512() -> None:
    with pytest.raises(ValidationError, match="64 bytes"):
        Settings(
            env="production",
            jwt_secret="s" * 63,
            jwt_algorithms="HS256,HS512",
            service_jwt_secret="t" * 64,
        )
    with pytest.raises(ValidationError, match="SERVICE_JWT_SECRET is shorter than 64 bytes"):
        Settings(
            env="production",
            jwt_secret="s" * 64,
            jwt_algorithms="HS512",
            service_jwt_secret="t" * 63,
        )
    assert Settings(
        env="production", jwt_secret="s" * 64, jwt_algorithms="HS512", service_jwt_secret="t" * 64
    )


def test_production_with_public_keys_only_needs_no_secret() -> None:
    settings = Settings(
        env="production",
        jwt_algorithms="RS256",
        jwt_public_key="PEM",
        service_jwt_public_key="SERVICE PEM",
    )
    assert settings.allowed_algorithms == ("RS256",)


def test_production_refuses_to_start_without_a_service_key() -> None:
    with pytest.raises(ValidationError, match=r"WORKSESSION_SERVICE_JWT_SECRET .* is not set"):
        Settings(env="production", jwt_secret="s" * 32)


def test_production_refuses_the_participant_secret_as_service_secret() -> None:
    with pytest.raises(ValidationError, match="SERVICE_JWT_SECRET is the participant secret"):
        Settings(env="production", jwt_secret="s" * 32, service_jwt_secret="s" * 32)


def test_production_refuses_the_participant_public_key_as_service_key() -> None:
    with pytest.raises(ValidationError, match="is the participant public key"):
        Settings(
            env="production",
            jwt_algorithms="RS256",
            jwt_public_key="PEM\n",
            service_jwt_public_key="PEM",
        )


def test_production_refuses_a_default_or_short_service_secret() -> None:
    for weak in (DEFAULT_JWT_SECRET, "x" * 31):
        with pytest.raises(ValidationError, match="WORKSESSION_SERVICE_JWT_SECRET"):
            Settings(env="production", jwt_secret="s" * 32, service_jwt_secret=weak)


def test_a_service_key_needs_an_algorithm_it_can_verify() -> None:
    # A service secret with only RS256 allowed could verify nothing: every service token
    # would be refused, which is a misconfiguration to report at start, not at 3 a.m.
    with pytest.raises(ValidationError, match="no algorithm the service key can verify"):
        Settings(jwt_algorithms="RS256", jwt_public_key="PEM", service_jwt_secret=SERVICE_SECRET)


def test_outside_production_the_service_key_is_optional() -> None:
    settings = Settings()
    assert not settings.has_service_key
    assert settings.service_algorithms == ()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_may_use_the_default_secret(host: str) -> None:
    assert Settings().exposure_refusal(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.internal"])  # noqa: S104
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, "WORKSESSION_JWT_SECRET is the development default"),
        ({"jwt_secret": "x" * 31}, "WORKSESSION_JWT_SECRET is shorter than 32 bytes"),
        (
            {"jwt_secret": "x" * 32, "service_jwt_secret": "short"},
            "WORKSESSION_SERVICE_JWT_SECRET is shorter than 32 bytes",
        ),
    ],
    ids=["default", "short", "short-service"],
)
def test_any_other_address_refuses_a_weak_secret_in_any_mode(
    host: str, overrides: dict[str, str], reason: str
) -> None:
    for env in ("dev", "test"):
        refusal = Settings(env=env, **overrides).exposure_refusal(host)  # type: ignore[arg-type]
        assert refusal == f"{reason}; refusing to listen on {host}"


def test_any_address_accepts_long_secrets() -> None:
    settings = Settings(jwt_secret="x" * 32, service_jwt_secret=SERVICE_SECRET, playground=False)
    assert settings.exposure_refusal("0.0.0.0") is None  # noqa: S104


def test_the_playground_is_on_in_dev_only_and_never_faces_a_network() -> None:
    strong = {"jwt_secret": "x" * 32, "service_jwt_secret": SERVICE_SECRET}
    assert Settings(env="dev").playground_enabled
    assert not Settings(env="test").playground_enabled
    assert Settings(env="test", playground=True).playground_enabled
    assert not Settings(env="dev", playground=False).playground_enabled
    refusal = Settings(env="dev", **strong).exposure_refusal("0.0.0.0")  # noqa: S104
    assert refusal is not None
    assert "WORKSESSION_PLAYGROUND=false" in refusal
    assert Settings(env="dev", **strong).exposure_refusal("127.0.0.1") is None


def test_production_refuses_the_playground() -> None:
    with pytest.raises(ValidationError, match="WORKSESSION_PLAYGROUND"):
        Settings(
            env="production",
            jwt_secret="x" * 32,
            service_jwt_secret=SERVICE_SECRET,
            playground=True,
        )
    production = Settings(env="production", jwt_secret="x" * 32, service_jwt_secret=SERVICE_SECRET)
    assert not production.playground_enabled


def test_public_keys_only_have_no_secret_to_refuse() -> None:
    settings = Settings(jwt_algorithms="ES256", jwt_public_key="PEM", playground=False)
    assert settings.exposure_refusal("0.0.0.0") is None  # noqa: S104


def test_asymmetric_algorithm_needs_a_public_key() -> None:
    with pytest.raises(ValidationError, match="PUBLIC_KEY"):
        Settings(jwt_algorithms="HS256,ES256")


def test_environment_prefix_and_empty_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKSESSION_OFFER_TTL_S", "5")
    monkeypatch.setenv("WORKSESSION_REDIS_URL", "")
    settings = Settings()
    assert settings.offer_ttl_s == 5
    assert settings.redis_url is None


def test_env_example_lists_every_setting_once() -> None:
    listed = re.findall(r"^WORKSESSION_([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    assert sorted(listed) == sorted(name.upper() for name in Settings.model_fields)


def test_a_webhook_url_must_be_http_and_in_production_https_with_a_long_secret() -> None:
    dev = Settings(webhook_url="http://localhost:9000/hooks", webhook_secret="short")
    assert dev.webhook_url == "http://localhost:9000/hooks"
    for url in ("localhost:9000", "mailto:ops@example.com", "https://", "http://h:x/"):
        with pytest.raises(ValidationError, match="WORKSESSION_WEBHOOK_URL"):
            Settings(webhook_url=url, webhook_secret="s")
    prod = {"env": "production", "jwt_secret": "s" * 32, "service_jwt_secret": "t" * 32}
    Settings(**prod, webhook_url="https://push.example/h", webhook_secret="w" * 32)
    with pytest.raises(ValidationError, match="not https"):
        Settings(**prod, webhook_url="http://push.example/h", webhook_secret="w" * 32)
    with pytest.raises(ValidationError, match="WORKSESSION_WEBHOOK_SECRET is shorter than 32"):
        Settings(**prod, webhook_url="https://push.example/h", webhook_secret="w" * 31)
