"""The login-attempt log (SPEC §3), and the marks of emails under repeated failures
that the security report lists (SPEC §11)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.direct import Query, Steps, insert_values, per_dialect, run_in
from bastion.store.tables import TS, login_attempts, suspicious_emails

SUSPICIOUS_WINDOW = timedelta(hours=24)
SUSPICIOUS_THRESHOLD = 5  # "more than 5 failed logins in 24 h"

# Built once: the failures of one email in the window, read up to the threshold + 1
# (index on email, created_at).
_RECENT_FAILURES = select(func.count().label("failures")).select_from(
    select(login_attempts.c.id)
    .where(
        and_(
            login_attempts.c.email == bindparam("email"),
            login_attempts.c.success == False,  # noqa: E712
            login_attempts.c.created_at >= bindparam("since", type_=TS),
        )
    )
    .limit(SUSPICIOUS_THRESHOLD + 1)
    .subquery()
)


_INSERT = insert_values(login_attempts, skip=("id",))


def _mark(insert: Any) -> Any:
    stmt = insert(suspicious_emails).values(
        email=bindparam("email"), last_failed_at=bindparam("now", type_=TS)
    )
    return stmt.on_conflict_do_update(
        index_elements=[suspicious_emails.c.email],
        set_={"last_failed_at": stmt.excluded.last_failed_at},
    )


_MARK = per_dialect(_mark)


def logged(
    *,
    email: str,
    user_id: str | None,
    ip_address: str | None,
    user_agent: str | None,
    success: bool,
    failure_reason: str | None,
    now: datetime,
) -> Steps[None]:
    """Log one attempt; a failure that brings its email over the threshold marks the
    email for the security report (one indexed count per failure)."""
    email = email[:254]
    yield Query(
        _INSERT,
        {
            "email": email,
            "user_id": user_id,
            "ip_address": ip_address,
            "user_agent": (user_agent or "")[:512] or None,
            "success": success,
            "failure_reason": failure_reason,
            "created_at": now,
        },
    )
    if success:
        return
    since = now - SUSPICIOUS_WINDOW
    failures = (yield Query(_RECENT_FAILURES, {"email": email, "since": since}))["failures"]
    if failures is not None and failures > SUSPICIOUS_THRESHOLD:
        yield Query(_MARK, {"email": email, "now": now})


async def record(conn: AsyncConnection, **fields: Any) -> None:
    """``logged`` in the caller's transaction."""
    await run_in(conn, logged(**fields))


async def mark_suspicious(conn: AsyncConnection, email: str, now: datetime) -> None:
    await conn.execute(_MARK[conn.dialect.name], {"email": email, "now": now})
