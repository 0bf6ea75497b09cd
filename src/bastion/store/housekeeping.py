"""Deleting rows that can no longer mean anything (flows/housekeeping.py runs it).

Each statement deletes at most ``BATCH`` rows, picked by an index on the expiry column
(0004_housekeeping, 0005_refresh_token_expiry), so that one sweep never holds a lock for
long (on SQLite, the single writer) and never scans a table. What goes, and why nothing
visible changes:

- sessions that expired more than ``GRACE`` ago: an expired session already answers
  401 and is listed nowhere; its ``unusual_sessions`` flag goes with it (the report
  reads only live ones), its locations stay in ``login_locations`` (the baseline);
- one-time tokens (reset, verification, MFA step) expired more than ``GRACE`` ago:
  they already answer ``invalid_token``;
- rate-limit windows that ended more than ``GRACE`` ago: a counter whose window has
  ended already counts as zero (limits/database.py);
- suspicious-email marks older than the report's 24 h window (store/attempts.py);
- refresh tokens of a family whose every token expired more than ``GRACE`` ago: none
  of them can be exchanged any more, and its session ended with them (a refresh
  token never outlives its session). A family with one live token keeps all of its
  spent ones, because presenting a spent token is what gives a stolen one away
  (flows/tokens.py revokes the family); a family lasts at most its session's
  ``SESSION_TTL``, so that history is bounded.

And, past their retention (settings; 0 keeps them for ever):

- login attempts older than ``LOGIN_ATTEMPT_RETENTION_DAYS`` (90): the history of the
  admin API's attempt list; the report reads 24 hours of it;
- mail delivered or given up whose last attempt is older than ``OUTBOX_RETENTION_DAYS``
  (7): nothing will send it again, and its bodies hold addresses and (spent or
  expired) links.

Kept: the audit trail (hash-chained: deleting from it breaks the chain), mail still to
be sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, exists, select
from sqlalchemy.sql import ColumnElement

from bastion.store.attempts import SUSPICIOUS_WINDOW
from bastion.store.db import Database
from bastion.store.tables import (
    TS,
    login_attempts,
    one_time_tokens,
    outbox,
    rate_limits,
    refresh_tokens,
    sessions,
    suspicious_emails,
)

BATCH = 1000
GRACE = timedelta(hours=1)  # clock differences between hosts


def _purge(table: Any, key: Any, expiry: Any, *also: ColumnElement[bool]) -> Any:
    """Delete up to BATCH rows whose expiry column is before :cutoff."""
    doomed = select(key).where(expiry < bindparam("cutoff", type_=TS), *also).limit(BATCH)
    return delete(table).where(key.in_(doomed.scalar_subquery()))


# A token whose family holds no token unexpired at the cutoff (index on expiry picks the
# candidates, the family index answers the NOT EXISTS).
_live = refresh_tokens.alias("live")
_DEAD_REFRESH_FAMILIES = _purge(
    refresh_tokens,
    refresh_tokens.c.id,
    refresh_tokens.c.expires_at,
    ~exists().where(
        _live.c.family_id == refresh_tokens.c.family_id,
        _live.c.expires_at >= bindparam("cutoff", type_=TS),
    ),
)

# Built once: (what, statement, how long after its expiry a row goes).
_PURGES = (
    ("sessions", _purge(sessions, sessions.c.id, sessions.c.expires_at), GRACE),
    (
        "one_time_tokens",
        _purge(one_time_tokens, one_time_tokens.c.id, one_time_tokens.c.expires_at),
        GRACE,
    ),
    ("refresh_tokens", _DEAD_REFRESH_FAMILIES, GRACE),
    ("rate_limits", _purge(rate_limits, rate_limits.c.key, rate_limits.c.window_ends_at), GRACE),
    (
        "suspicious_emails",
        _purge(suspicious_emails, suspicious_emails.c.email, suspicious_emails.c.last_failed_at),
        SUSPICIOUS_WINDOW,
    ),
)


# Past a retention in days (None: kept for ever). The outbox's statement uses its
# (status, next_attempt_at) index: a finished message's last attempt.
_ATTEMPTS = _purge(login_attempts, login_attempts.c.id, login_attempts.c.created_at)
_FINISHED_MAIL = _purge(
    outbox, outbox.c.id, outbox.c.next_attempt_at, outbox.c.status.in_(("sent", "failed"))
)


def _days(n: int) -> timedelta | None:
    return timedelta(days=n) if n > 0 else None


async def purge_expired(
    db: Database, now: datetime, *, attempts_days: int = 0, outbox_days: int = 0
) -> dict[str, int]:
    """Delete what has expired, and what is older than its retention (``*_days``, 0:
    kept), a batch per transaction; the rows deleted per table."""
    deleted: dict[str, int] = {}
    purges = [
        *_PURGES,
        ("login_attempts", _ATTEMPTS, _days(attempts_days)),
        ("outbox", _FINISHED_MAIL, _days(outbox_days)),
    ]
    for name, stmt, keep in purges:
        if keep is None:
            deleted[name] = 0
            continue
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
