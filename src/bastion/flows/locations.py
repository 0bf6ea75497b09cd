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

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.direct import Query, Steps, per_dialect, run_in
from bastion.store.tables import TS, login_locations, unusual_sessions

BASELINE_SESSIONS = 3
UNKNOWN = "Unknown"

# Built once (every sign-in runs these).
_BASELINE = (
    select(login_locations.c.location)
    .where(login_locations.c.user_id == bindparam("user_id"))
    .order_by(login_locations.c.seq)
)
# Two sign-ins at the same moment may race for a seq: the loser adds nothing.
_ADD_TO_BASELINE = per_dialect(
    lambda insert: (
        insert(login_locations)
        .values(
            user_id=bindparam("user_id"),
            seq=bindparam("seq"),
            location=bindparam("place"),
            created_at=bindparam("now", type_=TS),
        )
        .on_conflict_do_nothing()
    )
)
_FLAG = unusual_sessions.insert().values(
    session_id=bindparam("session_id"),
    user_id=bindparam("user_id"),
    location=bindparam("place"),
    created_at=bindparam("now", type_=TS),
)


def noted(user_id: str, session_id: str, location: str | None, now: datetime) -> Steps[bool]:
    """Record the session's location; True when it was flagged as unusual."""
    place = (location or UNKNOWN)[:100]
    params: dict[str, Any] = {"user_id": user_id, "place": place, "now": now}
    baseline = [r["location"] for r in (yield Query(_BASELINE, params, rows=True))]
    if len(baseline) < BASELINE_SESSIONS:
        yield Query(_ADD_TO_BASELINE, {**params, "seq": len(baseline) + 1})
        return False
    if place == UNKNOWN or place in baseline:
        return False
    yield Query(_FLAG, {**params, "session_id": session_id})
    return True


async def note_session(
    conn: AsyncConnection,
    user_id: str,
    session_id: str,
    location: str | None,
    now: datetime,
) -> bool:
    return await run_in(conn, noted(user_id, session_id, location, now))
