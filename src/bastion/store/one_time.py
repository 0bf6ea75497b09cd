"""One-time tokens (reset, email verification, the MFA sign-in step).

Only the SHA-256 of a token is stored. Consumption is one conditional UPDATE, so a token
is used once even when many requests present it at the same moment (the Ory Kratos
habit: ``UPDATE ... WHERE used_at IS NULL AND expires_at > now RETURNING``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.core import secrets as core_secrets
from bastion.store.tables import one_time_tokens as t


async def issue(
    conn: AsyncConnection,
    *,
    user_id: str,
    purpose: str,
    now: datetime,
    ttl: int,
    data: dict[str, Any] | None = None,
    void_older: bool = True,
) -> str:
    """Create a token; by default a new one voids the user's older ones of that purpose."""
    if void_older:
        await conn.execute(
            update(t)
            .where(t.c.user_id == user_id, t.c.purpose == purpose, t.c.used_at.is_(None))
            .values(used_at=now)
        )
    token = core_secrets.new_token()
    await conn.execute(
        t.insert().values(
            id=core_secrets.new_id(),
            token_hash=core_secrets.token_hash(token),
            user_id=user_id,
            purpose=purpose,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            used_at=None,
            failed_attempts=0,
            data=data,
        )
    )
    return token


def _live(token: str, purpose: str, now: datetime) -> Any:
    return and_(
        t.c.token_hash == core_secrets.token_hash(token),
        t.c.purpose == purpose,
        t.c.used_at.is_(None),
        t.c.expires_at > now,
    )


async def consume(
    conn: AsyncConnection, token: str, purpose: str, now: datetime
) -> RowMapping | None:
    """Mark the token used and return its row, or None if unknown, used or expired."""
    if not token or len(token) > 200:
        return None
    stmt = update(t).where(_live(token, purpose, now)).values(used_at=now).returning(t)
    row: RowMapping | None = (await conn.execute(stmt)).mappings().first()
    return row


async def peek(conn: AsyncConnection, token: str, purpose: str, now: datetime) -> RowMapping | None:
    """The live token's row without consuming it."""
    if not token or len(token) > 200:
        return None
    return (await conn.execute(select(t).where(_live(token, purpose, now)))).mappings().first()


async def count_failure(
    conn: AsyncConnection, token: str, purpose: str, now: datetime, limit: int
) -> bool:
    """Add a failed use; the token dies at ``limit`` failures. True when it just died."""
    stmt = (
        update(t)
        .where(_live(token, purpose, now))
        .values(failed_attempts=t.c.failed_attempts + 1)
        .returning(t.c.failed_attempts)
    )
    row = (await conn.execute(stmt)).first()
    if row is None:
        return False
    if int(row[0]) >= limit:
        await conn.execute(update(t).where(_live(token, purpose, now)).values(used_at=now))
        return True
    return False
