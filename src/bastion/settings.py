"""All configuration (SPEC §1): one pydantic-settings class, validated at start.

Every variable is prefixed ``BASTION_`` and may also come from a ``.env`` file.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bastion.core import secrets as core_secrets
from bastion.core.passwords import Argon2Params
from bastion.core.rbac import DEFAULT_ROLES

log = logging.getLogger("bastion.settings")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A bad configuration value, reported as one line at start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BASTION_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite:///bastion.db"
    redis_url: str | None = None
    # PostgreSQL connections per process (and as many again in bursts).
    db_pool_size: int = Field(default=10, ge=1, le=500)
    secret_key: str | None = Field(default=None, min_length=16)
    # Older keys still accepted for verification and decryption (rotation), comma-separated.
    old_secret_keys: Annotated[list[str], NoDecode] = []
    data_dir: Path = Path(".bastion")
    base_url: str = "http://127.0.0.1:8000"
    cookie_secure: bool | None = None
    trusted_proxies: Annotated[list[IpNetwork], NoDecode] = []
    smtp_url: str | None = None
    email_from: str = "Bastion <no-reply@localhost>"
    # Mail delivery (mail/worker.py): first retry after MAIL_RETRY_BASE s, doubling up to
    # MAIL_RETRY_MAX s; a message still undelivered MAIL_GIVE_UP_AFTER s after it was
    # queued is marked failed.
    mail_retry_base: float = Field(default=5.0, gt=0)
    mail_retry_max: int = Field(default=600, ge=1)
    mail_give_up_after: int = Field(default=86_400, ge=1)
    lockout_threshold: int = Field(default=5, ge=1)
    lockout_duration: int = Field(default=900, ge=1)
    ip_failure_limit: int = Field(default=10, ge=1)
    ip_failure_window: int = Field(default=900, ge=1)
    session_ttl: int = Field(default=2_592_000, ge=60)
    # Seconds between sweeps of expired rows (flows/housekeeping.py); 0 turns them off.
    housekeeping_interval: float = Field(default=3600, ge=0)
    # Days the sweep keeps login attempts, and mail delivered or given up; 0 keeps them.
    login_attempt_retention_days: int = Field(default=90, ge=0)
    outbox_retention_days: int = Field(default=7, ge=0)
    access_token_ttl: int = Field(default=900, ge=1)
    refresh_token_ttl: int = Field(default=604_800, ge=1)
    refresh_reuse_grace: int = Field(default=0, ge=0)
    reset_token_ttl: int = Field(default=3600, ge=1)
    verify_token_ttl: int = Field(default=86_400, ge=1)
    mfa_token_ttl: int = Field(default=300, ge=1)
    password_policy: Literal["standard", "nist"] = "standard"  # noqa: S105
    roles: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_ROLES))
    default_role: str = "viewer"
    jwt_audience: str = "bastion"
    introspection_token: str | None = None
    oauth_providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    require_verified_email: bool = False
    # Optional MaxMind DB (.mmdb, e.g. GeoLite2-City) for city-level session locations.
    geoip_database: Path | None = None
    # Per-endpoint budgets, JSON {"name": [limit, window]}; see limits/policy.py.
    rate_limits: dict[str, list[int]] = Field(default_factory=dict)
    # Hashing cost: OWASP's minimum by default; raise it on bigger machines.
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_memory_cost: int = Field(default=19456, ge=19456)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Password-hashing threads per process; 0: one per core, or with `bastion serve
    # --workers N` the cores shared out among the workers (runtime.py).
    hash_threads: int = Field(default=0, ge=0, le=256)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    log_level: str = "INFO"

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return [ipaddress.ip_network(v, strict=False) if isinstance(v, str) else v for v in value]

    @field_validator("old_secret_keys", mode="before")
    @classmethod
    def _parse_old_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("geoip_database")
    @classmethod
    def _check_geoip(cls, value: Path | None) -> Path | None:
        if value is None or str(value) == "":
            return None
        try:
            import maxminddb

            maxminddb.open_database(str(value)).close()
        except Exception as exc:  # noqa: BLE001 - InvalidDatabaseError, OSError...: one line
            raise ValueError(f"cannot open MaxMind DB {value}: {type(exc).__name__}") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis:// or rediss://")
        return value or None

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp(cls, value: str | None) -> str | None:
        if value and not value.startswith(("smtp://", "smtps://")):
            raise ValueError("must start with smtp:// or smtps://")
        if value:
            from bastion.mail.smtp import parse_url

            parse_url(value)  # host, port and ?starttls checked at start, not at first mail
        return value or None

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("roles", mode="before")
    @classmethod
    def _parse_roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict) or not value:
            raise ValueError("must be a non-empty JSON object of role -> [permissions]")
        for role, perms in value.items():
            if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
                raise ValueError(f"role {role!r} must map to a list of permission names")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _check_rate_limits(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        from bastion.limits.policy import DEFAULTS

        for name, pair in value.items():
            if name != "*" and name not in DEFAULTS:
                raise ValueError(f"unknown rate limit {name!r}")
            if len(pair) != 2 or min(pair) < 1:
                raise ValueError(f"rate limit {name!r} must be [limit >= 1, window >= 1]")
        return value

    @field_validator("oauth_providers")
    @classmethod
    def _check_oauth_providers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from bastion.core.oauth_config import parse_providers

        parse_providers(value)  # SPEC §9: a bad provider stops the server at start
        return value

    @model_validator(mode="after")
    def _check_default_role(self) -> Settings:
        if self.default_role not in self.roles:
            raise ValueError(f"DEFAULT_ROLE {self.default_role!r} is not in ROLES")
        return self

    # Derived values -------------------------------------------------------------------

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return not self.base_url.startswith("http://")

    @property
    def argon2(self) -> Argon2Params:
        return Argon2Params(self.argon2_time_cost, self.argon2_memory_cost, self.argon2_parallelism)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def root_secret(self) -> str:
        """SECRET_KEY, or a generated one persisted in DATA_DIR for development."""
        if self.secret_key:
            return self.secret_key
        return _dev_secret(self.data_dir)

    @property
    def secret_ring(self) -> list[str]:
        return [self.root_secret, *self.old_secret_keys]


def _dev_secret(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    candidate = core_secrets.new_token(48)
    try:
        # O_EXCL: two workers starting together agree on one key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(candidate)
    log.warning("BASTION_SECRET_KEY is not set: generated one in %s. Production must set it.", path)
    return candidate


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning a validation failure into a one-line ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "configuration"
        name = f"BASTION_{field.upper()}" if first["loc"] else "configuration"
        raise ConfigError(f"invalid {name}: {first['msg']}") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
