"""indexes for the sweep of expired rows (flows/housekeeping.py)

Revision ID: 0004_housekeeping
Revises: 0003_suspicious_emails

The periodic sweep deletes expired sessions, one-time tokens and rate-limit windows in
batches picked by their expiry; these indexes keep each batch from scanning its table.
"""

from __future__ import annotations

from alembic import op

revision = "0004_housekeeping"
down_revision = "0003_suspicious_emails"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_sessions_expires", "sessions", "expires_at"),
    ("ix_one_time_tokens_expires", "one_time_tokens", "expires_at"),
    ("ix_rate_limits_window_ends", "rate_limits", "window_ends_at"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table)
