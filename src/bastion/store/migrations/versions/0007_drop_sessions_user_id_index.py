"""drop ix_sessions_user_id: ix_sessions_user_created (user_id, created_at) serves it

Revision ID: 0007_drop_sessions_user_id_index
Revises: 0006_audit_link_function

Every query that looked sessions up by user (a user's session list, revoking them all,
the admin pages) can use the composite index of 0002, whose first column is the user:
the single-column one only cost an index entry per session created (each sign-in) and
its pages in the cache.
"""

from __future__ import annotations

from alembic import op

revision = "0007_drop_sessions_user_id_index"
down_revision = "0006_audit_link_function"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_sessions_user_id", "sessions")


def downgrade() -> None:
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
