"""Settings from the environment (names as in PRODUCT.md); CLI flags override some of them.

Empty values count as unset, because MCP Bundle hosts pass `""` for options the user left blank.
"""

from __future__ import annotations

from datetime import tzinfo
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from smsrent.domain.ids import LONG_PERIODS
from smsrent.domain.values import parse_timezone
from smsrent.providers.getatext import DEFAULT_BASE_URL as GETATEXT_DEFAULT_URL
from smsrent.providers.gotsms import DEFAULT_BASE_URL as GOTSMS_DEFAULT_URL

SETTLE_AFTER = 180.0  # seconds a lost purchase the provider does not show blocks it; then it is settled
REQUEST_STATE_KEY_BYTES = 32  # the SDK's floor for a request-state key (AES-256 is derived from it)
PositiveMoney = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=4)]


def _user_data_dir() -> Path:
    import platformdirs  # only when SMSRENT_DATA_DIR is unset

    return Path(platformdirs.user_data_dir("smsrent", appauthor=False))


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Everything the server can be configured with; the README's configuration table says what each means."""

    model_config = SettingsConfigDict(env_ignore_empty=True, populate_by_name=True, extra="ignore", frozen=True)

    gotsms_api_token: SecretStr | None = Field(None, validation_alias=_env("GOTSMS_API_TOKEN"))
    gotsms_base_url: str = Field(GOTSMS_DEFAULT_URL, validation_alias=_env("GOTSMS_BASE_URL"))
    getatext_api_key: SecretStr | None = Field(None, validation_alias=_env("GETATEXT_API_KEY"))
    getatext_base_url: str = Field(GETATEXT_DEFAULT_URL, validation_alias=_env("GETATEXT_BASE_URL"))
    getatext_timezone: str = Field("-04:00", validation_alias=_env("GETATEXT_TIMEZONE"))
    getatext_use_handler_api: bool = Field(False, validation_alias=_env("GETATEXT_USE_HANDLER_API"))
    getatext_long_rental_prices: Annotated[dict[str, Decimal], NoDecode] = Field(
        default_factory=dict, validation_alias=_env("GETATEXT_LONG_RENTAL_PRICES")
    )

    data_dir: Path = Field(default_factory=_user_data_dir, validation_alias=_env("SMSRENT_DATA_DIR"))
    database_url: SecretStr | None = Field(None, validation_alias=_env("SMSRENT_DATABASE_URL"))
    max_price: PositiveMoney | None = Field(None, validation_alias=_env("SMSRENT_MAX_PRICE"))
    daily_budget: PositiveMoney | None = Field(None, validation_alias=_env("SMSRENT_DAILY_BUDGET"))
    confirm_above: Annotated[Decimal, Field(ge=0)] | None = Field(None, validation_alias=_env("SMSRENT_CONFIRM_ABOVE"))
    allow_auto_renew: bool = Field(False, validation_alias=_env("SMSRENT_ALLOW_AUTO_RENEW"))
    read_only: bool = Field(False, validation_alias=_env("SMSRENT_READ_ONLY"))
    sandbox: bool = Field(False, validation_alias=_env("SMSRENT_SANDBOX"))

    http_token: SecretStr | None = Field(None, validation_alias=_env("SMSRENT_HTTP_TOKEN"))
    http_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("SMSRENT_HTTP_ALLOWED_HOSTS")
    )
    request_state_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), validation_alias=_env("SMSRENT_REQUEST_STATE_KEYS")
    )
    agents_file: Path | None = Field(None, validation_alias=_env("SMSRENT_AGENTS_FILE"))
    oauth_issuer: str | None = Field(None, validation_alias=_env("SMSRENT_OAUTH_ISSUER"))
    public_url: str | None = Field(None, validation_alias=_env("SMSRENT_PUBLIC_URL"))
    agent_daily_budget: PositiveMoney | None = Field(None, validation_alias=_env("SMSRENT_AGENT_DAILY_BUDGET"))
    agent_max_price: PositiveMoney | None = Field(None, validation_alias=_env("SMSRENT_AGENT_MAX_PRICE"))
    webhook_secret: SecretStr | None = Field(None, validation_alias=_env("SMSRENT_WEBHOOK_SECRET"))
    webhook_allowed_ips: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias=_env("SMSRENT_WEBHOOK_IPS"))
    webhook_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("SMSRENT_WEBHOOK_PORT"))
    provider_timeout: float = Field(20.0, gt=0, le=300, validation_alias=_env("SMSRENT_PROVIDER_TIMEOUT"))
    settle_after: float = Field(SETTLE_AFTER, ge=0, validation_alias=_env("SMSRENT_SETTLE_AFTER"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias=_env("SMSRENT_LOG_LEVEL")
    )
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("SMSRENT_LOG_FORMAT"))
    otel_endpoint: str | None = Field(None, validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Only a PostgreSQL URL (never echoed: it may hold a password)."""
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("SMSRENT_DATABASE_URL must be a PostgreSQL URL: postgresql://user@host:5432/database")
        return value

    @field_validator("getatext_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value

    @field_validator("getatext_long_rental_prices", mode="before")
    @classmethod
    def _long_prices(cls, value: object) -> object:
        """`1w=10.55,1m=30` into `{"1w": "10.55", "1m": "30"}`."""
        if not isinstance(value, str):
            return value
        prices: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            period, _, price = part.partition("=")
            if period.strip() not in LONG_PERIODS or not price.strip():
                raise ValueError(f"expected entries like 1w=10.55 with periods {', '.join(LONG_PERIODS)}, got {part!r}")
            prices[period.strip()] = price.strip()
        return prices

    @field_validator("webhook_allowed_ips", "http_allowed_hosts", mode="before")
    @classmethod
    def _split_ips(cls, value: object) -> object:
        return tuple(filter(None, (v.strip() for v in value.split(",")))) if isinstance(value, str) else value

    @field_validator("request_state_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """`new,old` into its keys, each at least 32 bytes (never echoed: they are secrets)."""
        if not isinstance(value, str):
            return value
        keys = [key.strip() for key in value.split(",") if key.strip()]
        for n, key in enumerate(keys, 1):
            if len(key.encode()) < REQUEST_STATE_KEY_BYTES:
                raise ValueError(
                    f"SMSRENT_REQUEST_STATE_KEYS key {n} of {len(keys)} is {len(key.encode())} bytes and each needs at"
                    f" least {REQUEST_STATE_KEY_BYTES}: generate one with"
                    ' python -c "import secrets; print(secrets.token_hex(32))"'
                )
            if key in keys[: n - 1]:
                raise ValueError(f"SMSRENT_REQUEST_STATE_KEYS key {n} repeats an earlier one: give each key once")
        return tuple(keys)

    @field_validator("oauth_issuer", "public_url")
    @classmethod
    def _web_address(cls, value: str | None) -> str | None:
        """An http(s) URL without query or fragment; plain http only for a loopback host (tests, a local proxy)."""
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ValueError(f"expected an https:// URL without query or fragment, got {value!r}")
        if url.scheme == "http" and not is_loopback(url.hostname):
            raise ValueError(f"use https:// for {url.hostname} (plain http is accepted for loopback addresses only)")
        return value

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return None if value is None else value.rstrip("/")

    @model_validator(mode="after")
    def _issuer_needs_public_url(self) -> Settings:
        if self.oauth_issuer is not None and self.public_url is None:
            raise ValueError(
                "SMSRENT_OAUTH_ISSUER needs SMSRENT_PUBLIC_URL, how clients reach this server (e.g."
                " https://smsrent.example.org): tokens must be issued for <it>/mcp"
            )
        return self

    @model_validator(mode="after")
    def _settle_after_outlasts_a_late_answer(self) -> Settings:
        """Not seeing a purchase counts as proof only well after a late answer could still have landed."""
        if self.settle_after < 2 * self.provider_timeout:
            raise ValueError(
                f"SMSRENT_SETTLE_AFTER ({self.settle_after:g} s) must be at least twice SMSRENT_PROVIDER_TIMEOUT"
                f" ({self.provider_timeout:g} s): a purchase the provider finishes late would be taken as not bought"
            )
        return self

    @property
    def http_auth(self) -> bool:
        """Whether HTTP callers must present a credential: the owner token, an agent key, or an OAuth token."""
        return self.http_token is not None or self.agents_file is not None or self.oauth_issuer is not None

    @property
    def provider_tz(self) -> tzinfo:
        return parse_timezone(self.getatext_timezone)

    @property
    def use_sandbox(self) -> bool:
        """The sandbox serves when forced, or when no provider credentials are configured."""
        return self.sandbox or (self.gotsms_api_token is None and self.getatext_api_key is None)

    @property
    def ledger_path(self) -> Path:
        """The SQLite ledger of the real providers when no SMSRENT_DATABASE_URL is set (the in-process sandbox keeps
        a temporary one, like its own state)."""
        return self.data_dir / "ledger.sqlite3"

    @property
    def ledger_name(self) -> str:
        """The ledger as a message may name it: the SQLite file, or the PostgreSQL database (never a password)."""
        if self.database_url is None:
            return str(self.ledger_path)
        from smsrent.service.ledger.postgres.base import describe

        return describe(self.database_url)
