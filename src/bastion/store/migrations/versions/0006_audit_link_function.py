"""PostgreSQL: link an audit event to the chain inside the insert (one round trip)

Revision ID: 0006_audit_link_function
Revises: 0005_refresh_token_expiry

An append used to be two statements: the advisory lock, then an ``INSERT ... SELECT``
reading the last hash (its snapshot had to be taken after the lock). This function
takes the same lock and then reads the last hash; PL/pgSQL gives each statement of a
VOLATILE function a fresh snapshot, so the read sees every event committed before the
lock was granted, and ``INSERT ... SELECT ... FROM bastion_audit_link(...)`` appends in
one statement (store/audit.py). Same lock, same hash: servers of the previous version
and this one can append side by side. SQLite needs nothing (its writers are serial).
"""

from __future__ import annotations

from alembic import op

revision = "0006_audit_link_function"
down_revision = "0005_refresh_token_expiry"
branch_labels = None
depends_on = None

# AUDIT_LOCK_ID and GENESIS of store/audit.py, and its ``_chained`` in SQL.
FUNCTION = """
CREATE OR REPLACE FUNCTION bastion_audit_link(content text, OUT prev_hash text, OUT hash text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7373726002);
    SELECT e.hash INTO prev_hash FROM audit_events AS e ORDER BY e.id DESC LIMIT 1;
    prev_hash := coalesce(prev_hash, repeat('0', 64));
    hash := encode(sha256(convert_to('["' || prev_hash || '"' || content, 'UTF8')), 'hex');
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS bastion_audit_link(text)")
