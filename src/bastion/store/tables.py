"""The schema, as SQLAlchemy Core tables.

Core rather than ORM: statements are built once and the hot paths (session lookup,
refresh rotation) stay close to the driver. Times are stored as timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = UTCDateTime()
BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(200), nullable=True),
    Column("password_hash", Text, nullable=True),
    Column("role", String(64), nullable=False),
    Column("email_verified", Boolean, nullable=False, default=False),
    Column("mfa_enabled", Boolean, nullable=False, default=False),
    Column("mfa_secret", Text, nullable=True),  # encrypted (core.secrets.Encryptor)
    Column("mfa_pending_secret", Text, nullable=True),  # encrypted, until confirmed
    Column("mfa_last_step", BigInteger, nullable=True),  # RFC 6238 §5.2 replay guard
    Column("token_version", Integer, nullable=False, default=0),
    # Anonymous-client lockout counter (SPEC §3); device-cookie clients use device_lockouts.
    Column("failed_login_attempts", Integer, nullable=False, default=0),
    Column("locked_until", TS, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("password_changed_at", TS, nullable=True),
    Index("ix_users_created_id", "created_at", "id"),  # 0002_admin: keyset pagination
    Index("ix_users_role", "role"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("last_active_at", TS, nullable=False),
    Column("ip_address", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("device_name", String(200), nullable=True),
    Column("device_type", String(32), nullable=True),
    Column("browser", String(100), nullable=True),
    Column("os", String(100), nullable=True),
    Column("location", String(100), nullable=True),
    Index("ix_sessions_user_created", "user_id", "created_at"),  # 0002_admin
    Index("ix_sessions_expires", "expires_at"),  # 0004_housekeeping
)

# Every browser/OS/device type a user ever signed in from, revoked sessions included,
# so that the new-device alert compares against history and not against the new login.
known_devices = Table(
    "known_devices",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("fingerprint", String(300), primary_key=True),
    Column("location", String(100), nullable=True),
    Column("first_seen_at", TS, nullable=False),
)

device_lockouts = Table(
    "device_lockouts",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("device_id", String(64), primary_key=True),
    Column("failed_login_attempts", Integer, nullable=False, default=0),
    Column("locked_until", TS, nullable=True),
)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False),
    Column("user_id", String(32), nullable=True),
    Column("ip_address", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("success", Boolean, nullable=False),
    Column("failure_reason", String(64), nullable=True),
    Column("created_at", TS, nullable=False),
    Index("ix_login_attempts_email_created", "email", "created_at"),
    Index("ix_login_attempts_ip_created", "ip_address", "created_at"),
    Index("ix_login_attempts_created", "created_at"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("action", String(64), nullable=False),
    Column("actor_id", String(32), nullable=True),
    Column("user_id", String(32), nullable=True),
    Column("ip_address", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("details", JSON, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_events_action_id", "action", "id"),
    Index("ix_audit_events_user_id_id", "user_id", "id"),
)

# Reset, email-verification and MFA-step tokens: hashed, expiring, consumed atomically.
one_time_tokens = Table(
    "one_time_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("used_at", TS, nullable=True),
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("data", JSON, nullable=True),
    Index("ix_one_time_tokens_user_purpose", "user_id", "purpose"),
    Index("ix_one_time_tokens_expires", "expires_at"),  # 0004_housekeeping
)

backup_codes = Table(
    "backup_codes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("used_at", TS, nullable=True),
    UniqueConstraint("user_id", "code_hash"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("family_id", String(32), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("session_id", String(32), nullable=True),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("used_at", TS, nullable=True),
    Column("revoked_at", TS, nullable=True),
    Column("replaced_by", String(32), nullable=True),
    Index("ix_refresh_tokens_family", "family_id"),
    Index("ix_refresh_tokens_user", "user_id"),
    Index("ix_refresh_tokens_expires", "expires_at"),  # 0005_refresh_token_expiry
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("private_key", Text, nullable=False),  # encrypted PEM
    Column("public_jwk", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("retired_at", TS, nullable=True),  # no longer signs; published until tokens expire
)

oauth_accounts = Table(
    "oauth_accounts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("email", String(254), nullable=True),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("provider", "subject"),
    Index("ix_oauth_accounts_user", "user_id"),
)

# Fixed-window counters for rate limits when Redis is not configured.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("window_ends_at", TS, nullable=False),
    Index("ix_rate_limits_window_ends", "window_ends_at"),  # 0004_housekeeping
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("recipient", String(254), nullable=False),
    Column("event", String(64), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("text_body", Text, nullable=False),
    Column("html_body", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending, sending, sent, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", TS, nullable=False),
    Column("claimed_until", TS, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("sent_at", TS, nullable=True),
    Index("ix_outbox_status_next", "status", "next_attempt_at"),
)


# SPEC §11 "sessions from a location the user had not used in their first three
# sessions": the locations of a user's first three sessions, kept after those sessions
# end, and the sessions that came from elsewhere, flagged when they were created
# (flows/locations.py), so that the report reads only flagged rows (0002_admin).
login_locations = Table(
    "login_locations",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("location", String(100), nullable=False),
    Column("created_at", TS, nullable=False),
)

unusual_sessions = Table(
    "unusual_sessions",
    metadata,
    Column(
        "session_id", String(32), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("location", String(100), nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_unusual_sessions_created", "created_at"),
)


# Partial indexes of the security report (0002_admin).
Index(
    "ix_users_no_mfa",
    users.c.created_at,
    users.c.id,
    postgresql_where=users.c.mfa_enabled == False,  # noqa: E712
    sqlite_where=users.c.mfa_enabled == False,  # noqa: E712
)
Index(
    "ix_users_locked_until",
    users.c.locked_until,
    postgresql_where=users.c.locked_until.is_not(None),
    sqlite_where=users.c.locked_until.is_not(None),
)
Index(
    "ix_device_lockouts_locked_until",
    device_lockouts.c.locked_until,
    postgresql_where=device_lockouts.c.locked_until.is_not(None),
    sqlite_where=device_lockouts.c.locked_until.is_not(None),
)
Index(
    "ix_login_attempts_failed_created",
    login_attempts.c.created_at,
    login_attempts.c.email,
    postgresql_where=login_attempts.c.success == False,  # noqa: E712
    sqlite_where=login_attempts.c.success == False,  # noqa: E712
)

# Emails with more than SUSPICIOUS_THRESHOLD failed logins within SUSPICIOUS_WINDOW,
# marked when the failure that crossed the threshold is logged (store/attempts.py): the
# security report reads these rows, not every failure of the last day (0003).
suspicious_emails = Table(
    "suspicious_emails",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("last_failed_at", TS, nullable=False),
    Index("ix_suspicious_emails_last_failed", "last_failed_at"),
)
