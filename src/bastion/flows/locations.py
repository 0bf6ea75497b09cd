"""Where a user signs in from, for the security report (SPEC §11): "sessions from a
location the user had not used in their first three sessions".

Called in the sign-in transaction, right after the session row is written. The first
three sessions of a user set the baseline (kept in ``login_locations`` after those
sessions end, so that signing out does not move it); a later session from a known
location that is not in the baseline is flagged in ``unusual_sessions``. "Unknown"
locations (private and loopback addresses) are part of a baseline but are never flagged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import login_locations, unusual_sessions

BASELINE_SESSIONS = 3
UNKNOWN = "Unknown"


async def note_session(
    conn: AsyncConnection,
    user_id: str,
    session_id: str,
    location: str | None,
    now: datetime,
) -> bool:
    """Record the session's location; True when it was flagged as unusual."""
    place = (location or UNKNOWN)[:100]
    stmt = (
        select(login_locations.c.location)
        .where(login_locations.c.user_id == user_id)
        .order_by(login_locations.c.seq)
    )
    baseline = [r[0] for r in (await conn.execute(stmt)).all()]
    if len(baseline) < BASELINE_SESSIONS:
        ins: Any = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
        # Two sign-ins at the same moment may race for a seq: the loser adds nothing.
        await conn.execute(
            ins(login_locations)
            .values(user_id=user_id, seq=len(baseline) + 1, location=place, created_at=now)
            .on_conflict_do_nothing()
        )
        return False
    if place == UNKNOWN or place in baseline:
        return False
    await conn.execute(
        unusual_sessions.insert().values(
            session_id=session_id, user_id=user_id, location=place, created_at=now
        )
    )
    return True
