"""drop ix_sessions_created: nothing reads sessions in creation order across users

Revision ID: 0008_drop_sessions_created_index
Revises: 0007_drop_sessions_user_id_index

0002 added it for "recent sessions" across users, which no query reads: the security
report reads only the sessions flagged at sign-in (``unusual_sessions``, with its own
index), a user's sessions are read through ``ix_sessions_user_created`` and expired ones
are swept through ``ix_sessions_expires``. It only cost an entry per session created
(each sign-in) and its pages in the cache.
"""

from __future__ import annotations

from alembic import op

revision = "0008_drop_sessions_created_index"
down_revision = "0007_drop_sessions_user_id_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_sessions_created", "sessions")


def downgrade() -> None:
    op.create_index("ix_sessions_created", "sessions", ["created_at"])
