"""emails marked when their failed logins cross the report's threshold (SPEC §11)

Revision ID: 0003_suspicious_emails
Revises: 0002_admin

The security report's "more than 5 failed logins in 24 h" used to aggregate every
failure of the last day, a cost that grows with traffic. Failures that bring an email
over the threshold now mark it here (store/attempts.py), and the report recounts only
marked emails. The upgrade marks the emails already over the threshold.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003_suspicious_emails"
down_revision = "0002_admin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suspicious_emails",
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email", name="pk_suspicious_emails"),
    )
    op.create_index("ix_suspicious_emails_last_failed", "suspicious_emails", ["last_failed_at"])
    # The emails over the threshold now, through the app's own column types (times are
    # stored differently on SQLite and PostgreSQL).
    from bastion.store.attempts import SUSPICIOUS_THRESHOLD, SUSPICIOUS_WINDOW
    from bastion.store.tables import login_attempts as t
    from bastion.store.tables import suspicious_emails

    since = datetime.now(UTC) - SUSPICIOUS_WINDOW
    over = (
        sa.select(t.c.email, sa.func.max(t.c.created_at))
        .where(t.c.success == sa.false(), t.c.created_at >= since)
        .group_by(t.c.email)
        .having(sa.func.count() > SUSPICIOUS_THRESHOLD)
    )
    op.get_bind().execute(suspicious_emails.insert().from_select(["email", "last_failed_at"], over))


def downgrade() -> None:
    op.drop_index("ix_suspicious_emails_last_failed", "suspicious_emails")
    op.drop_table("suspicious_emails")
