"""Signing key rows (SPEC §8). The private key is stored encrypted; the public JWK in
clear. Changes to the set are serialised: an advisory lock on PostgreSQL, and on SQLite
the write transaction is ``BEGIN IMMEDIATE`` already, so two workers that start at once
(or a rotation racing a start) never both add a key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import signing_keys as k

KEYS_LOCK_ID = 7_373_726_008

_ALL = select(k).order_by(k.c.created_at, k.c.kid)


async def lock(conn: AsyncConnection) -> None:
    """Serialise key set changes until the transaction ends."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"SELECT pg_advisory_xact_lock({KEYS_LOCK_ID})"))


async def all_keys(conn: AsyncConnection) -> list[RowMapping]:
    """Every stored key, oldest first."""
    return list((await conn.execute(_ALL)).mappings().all())


async def active(conn: AsyncConnection) -> list[RowMapping]:
    stmt = select(k).where(k.c.retired_at.is_(None)).order_by(k.c.created_at, k.c.kid)
    return list((await conn.execute(stmt)).mappings().all())


async def insert(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(k.insert().values(**values))


async def retire_active(conn: AsyncConnection, now: datetime) -> list[str]:
    """Retire every signing key; return their kids."""
    stmt = update(k).where(k.c.retired_at.is_(None)).values(retired_at=now).returning(k.c.kid)
    return [str(r[0]) for r in (await conn.execute(stmt)).all()]


async def delete_retired_before(conn: AsyncConnection, cutoff: datetime) -> int:
    """Drop keys retired long enough ago that no token they signed can still be valid."""
    stmt = delete(k).where(k.c.retired_at.is_not(None), k.c.retired_at < cutoff)
    return (await conn.execute(stmt)).rowcount or 0
