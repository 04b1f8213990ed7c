"""Typed settings for every askq process: one object, read once, passed down.

Values come from keyword arguments, then `ASKQ_*` environment variables, then a `.env`
file. Nested values use `__` (``ASKQ_BREAKER__COOLDOWN_S=30``); lists such as the provider
ladder are JSON (``ASKQ_PROVIDERS='[{"name": "openai", ...}]'``). Only `ASKQ_*` names are
askq's: the host application's own variables (``DATABASE_URL`` in the environment or in the
same `.env`) are none of askq's business and are left alone. An unknown `ASKQ_*` name, or an
unknown keyword, is rejected with the name, so a typo fails loudly instead of silently
meaning a default.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from askq.config.logging import register_secrets
from askq.errors import ConfigError, describe_validation

ENV_PREFIX = "ASKQ_"
SIM_PORT = 8700
SIM_URL = f"http://127.0.0.1:{SIM_PORT}/v1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """Bounded retries for one provider tier: exponential backoff with full jitter."""

    max_attempts: int = Field(3, ge=1, le=20)
    base_s: float = Field(0.2, ge=0)
    cap_s: float = Field(2.0, ge=0)
    # A wait (backoff or Retry-After) longer than this moves the job to the next tier.
    budget_s: float = Field(5.0, ge=0)


class ProviderSettings(_Strict):
    """One OpenAI-compatible endpoint in the fallback ladder."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base_url: str
    model: str
    api_key: SecretStr = SecretStr("sk-askq-simulator")
    # The whole request's deadline (connect, headers, body, parsing), not a per-read timeout:
    # a provider trickling its reply a byte at a time is cut here too.
    timeout_s: float = Field(10.0, gt=0)
    prompt: Literal["full", "short"] = "full"
    retry: RetryPolicy = RetryPolicy()
    # Approximate characters the model accepts; longer prompts skip this tier.
    max_context_chars: int | None = Field(None, gt=0)
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    # Largest response body accepted, counted after decompression (a gzip bomb is cut as it
    # inflates); a declared Content-Length over it is refused before reading.
    max_response_bytes: int = Field(1_048_576, ge=1024)
    # Longest answer accepted (about 16k tokens, more than common models give in one reply),
    # so no result or cache entry is larger.
    max_answer_chars: int = Field(65_536, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # A wrong scheme is a settings error when the process starts, not a failure of every call.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            got = f"a {parts.scheme}:// URL" if "://" in value else "no scheme"
            raise ValueError(f"must be an http:// or https:// URL with a host (https://api.openai.com/v1), got {got}")
        return value


class BreakerSettings(_Strict):
    """Circuit breaker shared by all workers through Redis."""

    window_s: float = Field(30.0, gt=0)
    min_requests: int = Field(5, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)
    cooldown_s: float = Field(10.0, gt=0)
    # How long the single half-open probe may run before another may be sent.
    probe_timeout_s: float = Field(30.0, gt=0)


class ConsoleSettings(_Strict):
    """The operators' console served by `askq api` under /console (askq/producers/console/)."""

    # How long a console login (its cookie) lasts; removing the token from api.tokens ends it at once.
    session_s: int = Field(8 * 3600, ge=60, le=7 * 86400)
    # Dead letters a page shows, and so the most ids one bulk action carries.
    page_size: int = Field(200, ge=1, le=1000)
    # Replays (single, bulk and edited) all console users together may start per minute.
    replays_per_minute: int = Field(600, ge=1)
    # Audit entries kept (newest first); older ones are dropped.
    audit_records: int = Field(1000, ge=10, le=100_000)


class ApiSettings(_Strict):
    """The HTTP API (`askq api`): where it listens, who may call it, how much it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # Bearer tokens accepted; with none configured the API only starts on a loopback address.
    tokens: list[SecretStr] = Field(default_factory=list)
    max_batch: int = Field(100, ge=1, le=10000)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # Deepest nesting of arrays/objects a body may have (a job needs 4); deeper is a 422.
    max_json_depth: int = Field(32, ge=4, le=256)
    # Longest long-poll a caller may ask for on GET /v1/jobs/{id}/result?wait=.
    max_wait_s: float = Field(60.0, gt=0, le=600)
    # A connection must send a request's complete headers within this (from opening, or from the
    # end of its previous response), else it gets a 408 and is closed (askq/producers/server.py).
    header_timeout_s: float = Field(10.0, gt=0, le=300)
    # A request's body must arrive within this once its headers have, else a 408.
    body_timeout_s: float = Field(30.0, gt=0, le=600)
    # Idle time after a response before the connection is closed (uvicorn's timeout_keep_alive).
    keep_alive_s: int = Field(5, ge=1, le=300)
    # Connections still sending headers; past this the oldest is dropped (idle sockets cannot pile up).
    max_pending_connections: int = Field(512, ge=1)
    # All connections together; past this uvicorn answers 503 (keep it under the process's `ulimit -n`).
    max_connections: int = Field(4096, ge=16)
    console: ConsoleSettings = ConsoleSettings()
    # One line per request (uvicorn's access log: client, method, path, status), JSON with log_json.
    access_log: bool = True


class FlowerSettings(_Strict):
    """Flower (`askq flower`): basic auth is required, its state persists under var_dir."""

    address: str = "127.0.0.1"
    port: int = Field(5555, ge=1, le=65535)
    user: str | None = Field(None, min_length=1, pattern=r"^[^:]+$")
    password: SecretStr | None = None

    @field_validator("user", mode="before")
    @classmethod
    def _user_not_blank(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be blank (set a user name for Flower's basic auth)")
        return value

    @field_validator("password")
    @classmethod
    def _password_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # A blank password would let `user:` (or `user:   `) through Flower's basic auth.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be blank (set a password for Flower's basic auth)")
        return value


class HealthSettings(_Strict):
    """`askq health` and /healthz: how far back the sliding window reaches."""

    window_s: float = Field(300.0, ge=10, le=3600)


_HOST_ENTRY = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$|^[0-9a-f:.]+$")


class CallbackSettings(_Strict):
    """Completion callbacks (`callback_url`): who may be called, how they are signed, how hard askq tries."""

    # Hosts a callback_url may name: an exact host name or IP address, or `*.example.com` for
    # its subdomains. Empty: no job may carry a callback_url (refused at submission).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Standard Webhooks secret, `whsec_` + base64 of 24 to 64 random bytes. Workers need it to
    # sign; producers do not.
    secret: SecretStr | None = None
    # One attempt's whole deadline (connect, send, status line and headers).
    timeout_s: float = Field(10.0, gt=0, le=300)
    # Attempts in flight per worker process; more due deliveries wait their turn.
    concurrency: int = Field(16, ge=1, le=1000)
    # Backoff between attempts: full jitter, base * 2**n capped at cap_s.
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(300.0, gt=0)
    # A delivery still failing this long after the job ended is dead-lettered `callback_failed`.
    give_up_after_s: float = Field(86400.0, gt=0)
    # How often each worker process looks for due deliveries.
    poll_s: float = Field(0.5, gt=0, le=60)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = []
        for entry in value:
            host = entry.strip().lower().strip("[]")
            if not _HOST_ENTRY.match(host):
                raise ValueError(f"{entry[:80]!a} is not a host name, IP address or *.domain")
            hosts.append(host)
        return hosts

    @field_validator("secret")
    @classmethod
    def _secret_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            callback_key(value)  # the error never quotes the value
        return value


def callback_key(secret: SecretStr) -> bytes:
    """The HMAC key of a `whsec_...` secret; ValueError (never quoting it) when it has another form."""
    text = secret.get_secret_value()
    if not text.startswith("whsec_"):
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64")
    try:
        key = base64.b64decode(text[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be whsec_ followed by valid base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"must decode to 24 to 64 bytes, got {len(key)}")
    return key


def _default_providers() -> list[ProviderSettings]:
    return [
        ProviderSettings(name="primary", base_url=SIM_URL, model="primary", timeout_s=10.0),
        ProviderSettings(
            name="secondary",
            base_url=SIM_URL,
            model="secondary",
            prompt="short",
            timeout_s=10.0,
            retry=RetryPolicy(max_attempts=2),
        ),
    ]


class Settings(BaseSettings):
    """Everything askq can be told; defaults run on the embedded Redis and the simulator."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    # Broker and job store. None means: use (or start) the embedded Redis under var_dir.
    redis_url: SecretStr | None = None
    var_dir: Path = Path("var")
    queue: str = "askq"
    # Kombu's own redelivery of unacked messages; askq's leases recover jobs much sooner.
    visibility_timeout_s: int = Field(3600, ge=60)
    # When a submit returns. relaxed: once Redis holds the job (the AOF reaches disk within a
    # second: a power loss can lose that second). strict: once the job is in the primary's AOF on
    # disk (WAITAOF) and received by durability_replicas replicas (WAIT), else DurabilityError
    # after durability_timeout_s (the job may be in: submit again with the same idempotency key).
    durability: Literal["relaxed", "strict"] = "relaxed"
    durability_replicas: int = Field(0, ge=0)
    durability_timeout_s: float = Field(1.0, gt=0, le=60)

    providers: list[ProviderSettings] = Field(default_factory=_default_providers, min_length=1)
    breaker: BreakerSettings = BreakerSettings()
    rate_limit_wait_s: float = Field(2.0, ge=0)

    cache_enabled: bool = True
    cache_fast_path: bool = True
    cache_ttl_s: int = Field(86400, ge=1)
    prompt_version: str = "v1"
    default_answer: str = (
        "We could not answer your question right now. A member of our team will follow up."
    )
    # When every tier failed transiently: answer with the default, or retry the job later.
    on_exhausted: Literal["default", "retry"] = "default"
    durable_retry_base_s: float = Field(5.0, gt=0)
    durable_retry_cap_s: float = Field(300.0, gt=0)
    max_job_age_s: float = Field(3600.0, gt=0)

    worker_concurrency: int = Field(200, ge=1, le=2000)
    # With these defaults a killed worker's job is running elsewhere within ~12 s (promise: 30 s).
    lease_s: float = Field(10.0, gt=0)
    heartbeat_s: float = Field(3.0, gt=0)
    reaper_interval_s: float = Field(2.0, gt=0)
    max_deliveries: int = Field(3, ge=1)
    # A worker running one job longer than this is shown `stalled` (askq workers, metrics).
    job_deadline_s: float = Field(120.0, gt=0)
    # A dead worker (no heartbeat) stays in `askq workers` this long, then its entry is removed.
    worker_retention_s: float = Field(3600.0, gt=0)
    # A run still going after this is cut and the job goes to a durable retry: the hard cap.
    run_timeout_s: float = Field(600.0, gt=0)

    max_question_chars: int = Field(8000, ge=1)
    max_context_docs: int = Field(20, ge=0)
    max_context_chars: int = Field(32000, ge=0)
    # How long a finished job (its result, and so its idempotency key) is kept.
    result_ttl_s: int = Field(7 * 86400, ge=1)
    dlq_max_records: int = Field(10000, ge=1)
    dlq_max_age_s: int = Field(30 * 86400, ge=1)

    api: ApiSettings = ApiSettings()
    flower: FlowerSettings = FlowerSettings()
    health: HealthSettings = HealthSettings()
    callbacks: CallbackSettings = CallbackSettings()

    # Celery task events (task-received/started/succeeded) for Flower's task views; each costs
    # a Redis PUBLISH per task. Off by default: a running Flower turns them on in every worker by
    # itself (its `enable_events` broadcast, every 5 s by default), so they are paid for only
    # while somebody watches. True sends them from the start.
    task_events: bool = False

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False
    # Test-only hook: a question containing "[[askq:crash]]" kills its worker process.
    chaos_hooks: bool = False

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here so a wrong URL is one settings error, not redis-py's traceback at first use;
        # the message never quotes the URL (it may hold the password).
        if value is None:
            return value
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix"):
            got = f"a {parts.scheme}:// URL" if "://" in value.get_secret_value() else "no scheme"
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL "
                             f"(redis://:PASSWORD@HOST:6379/0), got {got}")
        try:
            parts.port  # noqa: B018 - urllib checks the port's range when it is read
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("names no host (redis://HOST:6379/0)")
        return value

    @field_validator("providers")
    @classmethod
    def _unique_names(cls, value: list[ProviderSettings]) -> list[ProviderSettings]:
        names = [p.name for p in value]
        reserved = {"cache", "default"} & set(names)
        if reserved:
            raise ValueError(f"provider names {sorted(reserved)} are reserved for fallback tiers")
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names}")
        return value

    @model_validator(mode="after")
    def _caps(self) -> Settings:
        if self.durable_retry_cap_s >= self.visibility_timeout_s:
            raise ValueError("durable_retry_cap_s must stay below visibility_timeout_s")
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("heartbeat_s must be shorter than lease_s so leases are renewed in time")
        if self.callbacks.retry_base_s > self.callbacks.retry_cap_s:
            raise ValueError("callbacks.retry_base_s must not exceed callbacks.retry_cap_s")
        if self.worker_retention_s <= 3 * self.heartbeat_s:
            raise ValueError("worker_retention_s must exceed three heartbeat_s, or live workers would be dropped")
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return _askq_sources(settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings)

    def provider(self, name: str) -> ProviderSettings:
        for p in self.providers:
            if p.name == name:
                return p
        raise ConfigError(f"no provider named {name!r}; configured: {[p.name for p in self.providers]}")


class _AskqDotEnv(DotEnvSettingsSource):
    """The `.env` file's `ASKQ_*` entries only: a `.env` shared with the host application holds
    its keys too, which pydantic-settings would otherwise report as extra inputs."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        prefix = ENV_PREFIX.lower()
        return {k: v for k, v in super()._load_env_vars().items() if k.lower().startswith(prefix)}


def _askq_sources(
    settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
    file_secret_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    dotenv = dotenv_settings
    if isinstance(dotenv_settings, DotEnvSettingsSource):
        dotenv = _AskqDotEnv(settings_cls, env_file=dotenv_settings.env_file,
                             env_file_encoding=dotenv_settings.env_file_encoding)
    return init_settings, env_settings, dotenv, file_secret_settings


class _ExplicitSettings(Settings):
    """Settings from keyword arguments and defaults only: no environment, no `.env`."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _dotenv_askq_keys(path: Path = Path(".env")) -> list[str]:
    """The `ASKQ_*` names in a `.env` file (upper-cased, as in the environment)."""
    try:
        from dotenv import dotenv_values  # pydantic-settings' own dependency
    except ImportError:  # pragma: no cover - pydantic-settings always brings it
        return []
    if not path.is_file():
        return []
    return [k.upper() for k in dotenv_values(path) if k.upper().startswith(ENV_PREFIX)]


def _unknown_env_keys(environ: dict[str, str]) -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    unknown = []
    for key in environ:
        if not key.startswith(ENV_PREFIX):
            continue
        head = key[len(ENV_PREFIX):].split("__", 1)[0]
        if head not in known:
            unknown.append(key)
    return sorted(unknown)


def load_settings(**overrides: Any) -> Settings:
    """Read settings, turning every validation problem into one ConfigError that names the key."""
    unknown = _unknown_env_keys(dict(os.environ))
    if unknown:
        raise ConfigError(f"unknown askq setting(s) in the environment: {', '.join(unknown)}")
    unknown = _unknown_env_keys(dict.fromkeys(_dotenv_askq_keys(), ""))
    if unknown:
        raise ConfigError(f"unknown askq setting(s) in .env: {', '.join(unknown)}")
    return _validated(Settings, overrides)


def explicit_settings(**values: Any) -> Settings:
    """Settings from these values and the defaults alone, reading no environment and no `.env`
    (a client living inside another application: `Client.from_url`)."""
    return _validated(_ExplicitSettings, values)


def _validated(cls: type[Settings], values: dict[str, Any]) -> Settings:
    try:
        settings = cls(**values)
    except ValidationError as exc:
        # Field and problem only: pydantic's own text echoes input values, api keys included.
        raise ConfigError(f"invalid askq settings: {describe_validation(exc, 'settings')}") from None
    except SettingsError as exc:  # a source could not parse a value (e.g. bad JSON); names the field only
        raise ConfigError(f"invalid askq settings: {exc}") from None
    register_secrets(settings_secrets(settings))
    return settings


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value in the settings, so logs and records can mask them wherever they appear."""
    found = [p.api_key.get_secret_value() for p in settings.providers]
    if settings.redis_url is not None:
        password = urlsplit(settings.redis_url.get_secret_value()).password
        if password:
            found.append(password)
    for value in vars(settings).values():
        if isinstance(value, BaseModel):
            for field in vars(value).values():
                if isinstance(field, SecretStr):
                    found.append(field.get_secret_value())
                    if isinstance(value, CallbackSettings) and field is value.secret:
                        # Its base64 part alone is the key too: masked wherever it appears.
                        found.append(field.get_secret_value().removeprefix("whsec_"))
                elif isinstance(field, list | tuple):
                    found += [x.get_secret_value() for x in field if isinstance(x, SecretStr)]
    return found
