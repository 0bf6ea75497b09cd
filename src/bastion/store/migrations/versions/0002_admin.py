"""admin API and security report indexes (SPEC §10, §11)

Revision ID: 0002_admin
Revises: 0001

Every query of the admin API and the security report is served by an index, so that they
stay fast with a million users (bench/report_million.py):

- users (created_at, id): keyset pagination of the user list;
- users (role): counting admins for the last-admin rule;
- users (created_at, id) WHERE mfa_enabled = false: users without MFA, listed and counted;
- users / device_lockouts (locked_until) WHERE locked_until IS NOT NULL: locked accounts;
- login_attempts (created_at, email) WHERE success = false: failed logins in 24 h;
- sessions (user_id, created_at) and (created_at): first sessions of a user, recent ones;
- login_locations / unusual_sessions: the first three sign-in locations of each user and
  the sessions flagged as coming from elsewhere, so the report reads only flagged rows;
- PostgreSQL with pg_trgm: trigram indexes for the substring search ``q`` of the user list.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002_admin"
down_revision = "0001"
branch_labels = None
depends_on = None


def _false(dialect: str) -> sa.TextClause:
    return sa.text("mfa_enabled = false" if dialect == "postgresql" else "mfa_enabled = 0")


def _failed(dialect: str) -> sa.TextClause:
    return sa.text("success = false" if dialect == "postgresql" else "success = 0")


def upgrade() -> None:
    bind = op.get_bind()
    d = bind.dialect.name
    op.create_table(
        "login_locations",
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("location", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_login_locations_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "seq", name="pk_login_locations"),
    )
    op.create_table(
        "unusual_sessions",
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("location", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_unusual_sessions_session_id_sessions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_unusual_sessions_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", name="pk_unusual_sessions"),
    )
    op.create_index("ix_unusual_sessions_created", "unusual_sessions", ["created_at"])
    op.create_index("ix_users_created_id", "users", ["created_at", "id"])
    op.create_index("ix_users_role", "users", ["role"])
    where: dict[str, Any] = {f"{d}_where": _false(d)}
    op.create_index("ix_users_no_mfa", "users", ["created_at", "id"], **where)
    where = {f"{d}_where": sa.text("locked_until IS NOT NULL")}
    op.create_index("ix_users_locked_until", "users", ["locked_until"], **where)
    op.create_index("ix_device_lockouts_locked_until", "device_lockouts", ["locked_until"], **where)
    where = {f"{d}_where": _failed(d)}
    op.create_index(
        "ix_login_attempts_failed_created", "login_attempts", ["created_at", "email"], **where
    )
    op.create_index("ix_sessions_user_created", "sessions", ["user_id", "created_at"])
    op.create_index("ix_sessions_created", "sessions", ["created_at"])
    if d == "postgresql":
        # Substring search needs trigrams. The extension may not be creatable by the
        # migrating role; the search then still works, by a scan.
        bind.exec_driver_sql("SAVEPOINT bastion_trgm")
        try:
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except Exception:  # noqa: BLE001
            bind.exec_driver_sql("ROLLBACK TO SAVEPOINT bastion_trgm")
            return
        bind.exec_driver_sql("RELEASE SAVEPOINT bastion_trgm")
        bind.exec_driver_sql(
            "CREATE INDEX ix_users_email_trgm ON users USING gin (email gin_trgm_ops)"
        )
        bind.exec_driver_sql(
            "CREATE INDEX ix_users_name_trgm ON users USING gin (lower(name) gin_trgm_ops)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP INDEX IF EXISTS ix_users_email_trgm")
        bind.exec_driver_sql("DROP INDEX IF EXISTS ix_users_name_trgm")
    op.drop_index("ix_unusual_sessions_created", "unusual_sessions")
    op.drop_table("unusual_sessions")
    op.drop_table("login_locations")
    op.drop_index("ix_sessions_created", "sessions")
    op.drop_index("ix_sessions_user_created", "sessions")
    op.drop_index("ix_login_attempts_failed_created", "login_attempts")
    op.drop_index("ix_device_lockouts_locked_until", "device_lockouts")
    op.drop_index("ix_users_locked_until", "users")
    op.drop_index("ix_users_no_mfa", "users")
    op.drop_index("ix_users_role", "users")
    op.drop_index("ix_users_created_id", "users")
