"""Fixed-window counters in the ``rate_limits`` table: one atomic upsert per hit."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.limits import Count
from bastion.store.db import Database
from bastion.store.direct import Query, Steps, first_direct
from bastion.store.tables import TS, rate_limits

# Built once: every sign-in peeks at its IP's failure count.
_PEEK = select(rate_limits.c.count, rate_limits.c.window_ends_at).where(
    rate_limits.c.key == bindparam("key"),
    rate_limits.c.window_ends_at > bindparam("now", type_=TS),
)


class DatabaseLimiter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert: Any = sqlite_insert if db.is_sqlite else pg_insert

    async def hit(self, key: str, window: int, now: datetime) -> Count:
        ends = now + timedelta(seconds=window)
        stmt = self._insert(rate_limits).values(key=key, count=1, window_ends_at=ends)
        expired = rate_limits.c.window_ends_at <= now
        stmt = stmt.on_conflict_do_update(
            index_elements=[rate_limits.c.key],
            set_={
                "count": case((expired, 1), else_=rate_limits.c.count + 1),
                "window_ends_at": case((expired, ends), else_=rate_limits.c.window_ends_at),
            },
        ).returning(rate_limits.c.count, rate_limits.c.window_ends_at)
        async with self.db.write() as conn:
            row = (await conn.execute(stmt)).one()
        return Count(int(row[0]), _seconds(row[1] - now))

    async def peek(self, key: str, now: datetime) -> Count:
        return _count(await first_direct(self.db, _PEEK, {"key": key, "now": now}), now)

    def peeked(self, key: str, now: datetime) -> Steps[Count]:
        """``peek`` as a step, to go out together with a sign-in's first statements."""
        return _count((yield Query(_PEEK, {"key": key, "now": now})), now)

    async def reset(self, key: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(rate_limits).where(rate_limits.c.key == key))

    async def ping(self) -> bool:
        return await self.db.ping()


def _count(row: Any, now: datetime) -> Count:
    if row is None:
        return Count(0, 0)
    return Count(int(row["count"]), _seconds(row["window_ends_at"] - now))


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))
