from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from worksession.config import DEFAULT_JWT_SECRET, Settings

ROOT = Path(__file__).resolve().parents[2]


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


def test_production_accepts_a_long_secret() -> None:
    assert Settings(env="production", jwt_secret="s" * 32).env == "production"


def test_production_needs_a_longer_secret_for_hs512() -> None:
    with pytest.raises(ValidationError, match="64 bytes"):
        Settings(env="production", jwt_secret="s" * 63, jwt_algorithms="HS256,HS512")
    assert Settings(env="production", jwt_secret="s" * 64, jwt_algorithms="HS512")


def test_production_with_public_keys_only_needs_no_secret() -> None:
    settings = Settings(env="production", jwt_algorithms="RS256", jwt_public_key="PEM")
    assert settings.allowed_algorithms == ("RS256",)


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
