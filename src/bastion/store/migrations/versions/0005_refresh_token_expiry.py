"""index refresh tokens by expiry, for the sweep of dead token families

Revision ID: 0005_refresh_token_expiry
Revises: 0004_housekeeping

Housekeeping deletes a refresh-token family once every token of it has expired
(store/housekeeping.py); the index picks the candidates without scanning the table.
"""

from __future__ import annotations

from alembic import op

revision = "0005_refresh_token_expiry"
down_revision = "0004_housekeeping"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_refresh_tokens_expires", "refresh_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_expires", "refresh_tokens")
