"""Deleting rows that can no longer mean anything (flows/housekeeping.py runs it).

Each statement deletes at most ``BATCH`` rows, picked by an index on the expiry column
(0004_housekeeping), so that one sweep never holds a lock for long (on SQLite, the
single writer) and never scans a table. What goes, and why nothing visible changes:

- sessions that expired more than ``GRACE`` ago: an expired session already answers
  401 and is listed nowhere; its ``unusual_sessions`` flag goes with it (the report
  reads only live ones), its locations stay in ``login_locations`` (the baseline);
- one-time tokens (reset, verification, MFA step) expired more than ``GRACE`` ago:
  they already answer ``invalid_token``;
- rate-limit windows that ended more than ``GRACE`` ago: a counter whose window has
  ended already counts as zero (limits/database.py);
- suspicious-email marks older than the report's 24 h window (store/attempts.py).

Kept: refresh tokens (a spent token is what detects its reuse, and its family may hold
live tokens), the login-attempt log and the audit trail (history; the trail is
hash-chained), the outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select

from bastion.store.attempts import SUSPICIOUS_WINDOW
from bastion.store.db import Database
from bastion.store.tables import TS, one_time_tokens, rate_limits, sessions, suspicious_emails

BATCH = 1000
GRACE = timedelta(hours=1)  # clock differences between hosts


def _purge(table: Any, key: Any, expiry: Any) -> Any:
    """Delete up to BATCH rows whose expiry column is before :cutoff."""
    doomed = select(key).where(expiry < bindparam("cutoff", type_=TS)).limit(BATCH)
    return delete(table).where(key.in_(doomed.scalar_subquery()))


# Built once: (what, statement, how long after its expiry a row goes).
_PURGES = (
    ("sessions", _purge(sessions, sessions.c.id, sessions.c.expires_at), GRACE),
    (
        "one_time_tokens",
        _purge(one_time_tokens, one_time_tokens.c.id, one_time_tokens.c.expires_at),
        GRACE,
    ),
    ("rate_limits", _purge(rate_limits, rate_limits.c.key, rate_limits.c.window_ends_at), GRACE),
    (
        "suspicious_emails",
        _purge(suspicious_emails, suspicious_emails.c.email, suspicious_emails.c.last_failed_at),
        SUSPICIOUS_WINDOW,
    ),
)


async def purge_expired(db: Database, now: datetime) -> dict[str, int]:
    """Delete what has expired, a batch per transaction; the rows deleted per table."""
    deleted: dict[str, int] = {}
    for name, stmt, keep in _PURGES:
        total = 0
        while True:
            async with db.write() as conn:
                n = (await conn.execute(stmt, {"cutoff": now - keep})).rowcount or 0
            total += n
            # Until a batch finds nothing: a short one may only mean that a sweep in
            # another process took those rows first.
            if n == 0:
                break
        deleted[name] = total
    return deleted
