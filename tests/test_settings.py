"""Settings are typed and strict: unknown keys and bad values fail loudly with the key named."""

from __future__ import annotations

import pickle  # only to prove askq's exceptions survive Celery's storage; askq never unpickles messages
from pathlib import Path

import pytest

from askq.config.logging import scrub
from askq.config.settings import explicit_settings, load_settings
from askq.errors import (
    AskqError,
    BadAnswerError,
    ConfigError,
    ContextTooLongError,
    DurabilityError,
    JobDeadError,
    JobDeferredError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)


def test_defaults_point_at_the_simulator_and_need_no_key() -> None:
    settings = load_settings()
    assert [p.name for p in settings.providers] == ["primary", "secondary"]
    assert all(p.base_url.startswith("http://127.0.0.1:") for p in settings.providers)
    assert settings.redis_url is None


def test_unknown_environment_key_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASKQ_LEASE_SECONDS", "10")
    with pytest.raises(ConfigError, match="ASKQ_LEASE_SECONDS"):
        load_settings()


def test_unknown_keyword_and_nested_key_are_rejected() -> None:
    with pytest.raises(ConfigError, match="lease_seconds"):
        load_settings(lease_seconds=3)
    with pytest.raises(ConfigError, match="cooldown"):
        load_settings(breaker={"cooldown": 3})


def test_unknown_key_in_dotenv_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("ASKQ_QUEUE=jobs\nASKQ_QUEUEE=typo\nDATABASE_URL=postgres://app\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown askq setting\(s\) in \.env: ASKQ_QUEUEE$"):
        load_settings()


def test_the_host_applications_own_keys_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Django-style .env and environment: only the ASKQ_ names are askq's.
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgres://app:pw@db/app\nSECRET_KEY=abc\ndebug=true\nQUEUE=not-askqs\n"
        "ASKQ_QUEUE=shop\naskq_max_context_docs=5\nASKQ_BREAKER__COOLDOWN_S=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "postgres://env")
    monkeypatch.setenv("REDIS_URL", "redis://not-askqs:1/0")
    settings = load_settings()
    assert (settings.queue, settings.max_context_docs, settings.breaker.cooldown_s) == ("shop", 5, 7)
    assert settings.redis_url is None


def test_a_nested_unknown_askq_key_in_dotenv_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=x\nASKQ_BREAKER__COOLDOWN=3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="cooldown"):
        load_settings()


def test_explicit_settings_read_no_environment_and_no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("ASKQ_QUEUE=from-dotenv\nASKQ_QUEUEE=typo\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASKQ_MAX_CONTEXT_DOCS", "3")
    settings = explicit_settings(redis_url="redis://127.0.0.1:1/0", queue="shop")
    assert (settings.queue, settings.max_context_docs) == ("shop", 20)
    with pytest.raises(ConfigError, match="queuee"):
        explicit_settings(queuee="typo")


def test_dotenv_and_nested_environment_values_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("ASKQ_QUEUE=jobs\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASKQ_BREAKER__COOLDOWN_S", "42")
    settings = load_settings()
    assert settings.queue == "jobs"
    assert settings.breaker.cooldown_s == 42


def test_bad_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match="worker_concurrency"):
        load_settings(worker_concurrency=0)
    with pytest.raises(ConfigError, match="unique"):
        load_settings(providers=[{"name": "a", "base_url": "http://x/v1", "model": "m"}] * 2)
    with pytest.raises(ConfigError, match="reserved"):
        load_settings(providers=[{"name": "cache", "base_url": "http://x/v1", "model": "m"}])


def test_api_key_is_secret_in_repr() -> None:
    settings = load_settings(
        providers=[{"name": "openai", "base_url": "https://api.example/v1", "model": "m", "api_key": "sk-live-123456"}]
    )
    assert "sk-live-123456" not in repr(settings)
    assert "sk-live-123456" not in settings.model_dump_json()


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("bad"),
        ProviderError("boom", "primary", 500),
        TransientProviderError("503", "primary", 503),
        RateLimitedError("slow down", "primary", 429, 2.5),
        PermanentProviderError("401", "primary", 401),
        ContextTooLongError("too long", "primary", 400),
        BadAnswerError("truncated", "secondary"),
        JobDeadError("permanent_error: primary: 401"),
        JobDeferredError("durable retry: primary: 503"),
        DurabilityError("not confirmed durable; may be in", ("a1", "b2")),
    ],
)
def test_exceptions_pickle_with_their_fields(exc: AskqError) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert vars(copy) == vars(exc)


def test_transient_and_permanent_are_distinct_branches() -> None:
    assert issubclass(RateLimitedError, TransientProviderError)
    assert not issubclass(TransientProviderError, PermanentProviderError)
    assert issubclass(ContextTooLongError, PermanentProviderError)


def test_scrub_masks_credentials() -> None:
    text = "Authorization: Bearer abc.def-123 key sk-proj-ABCDEF123456 url redis://:hunter2@host:6379/0"
    cleaned = scrub(text)
    assert "abc.def-123" not in cleaned
    assert "sk-proj-ABCDEF123456" not in cleaned
    assert "hunter2" not in cleaned
