"""The login-attempt log (SPEC §3), and the marks of emails under repeated failures
that the security report lists (SPEC §11)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import TS, login_attempts, suspicious_emails

SUSPICIOUS_WINDOW = timedelta(hours=24)
SUSPICIOUS_THRESHOLD = 5  # "more than 5 failed logins in 24 h"

# Built once: the failures of one email in the window, read up to the threshold + 1
# (index on email, created_at).
_RECENT_FAILURES = select(func.count()).select_from(
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


async def record(
    conn: AsyncConnection,
    *,
    email: str,
    user_id: str | None,
    ip_address: str | None,
    user_agent: str | None,
    success: bool,
    failure_reason: str | None,
    now: datetime,
) -> None:
    """Log one attempt; a failure that brings its email over the threshold marks the
    email for the security report (one indexed count per failure)."""
    email = email[:254]
    await conn.execute(
        login_attempts.insert(),
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
    failures = (await conn.execute(_RECENT_FAILURES, {"email": email, "since": since})).scalar()
    if failures is not None and failures > SUSPICIOUS_THRESHOLD:
        await mark_suspicious(conn, email, now)


async def mark_suspicious(conn: AsyncConnection, email: str, now: datetime) -> None:
    ins: Any = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    stmt = ins(suspicious_emails).values(email=email, last_failed_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[suspicious_emails.c.email],
        set_={"last_failed_at": stmt.excluded.last_failed_at},
    )
    await conn.execute(stmt)
