"""User rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import users


async def get_by_id(conn: AsyncConnection, user_id: str) -> RowMapping | None:
    return (await conn.execute(select(users).where(users.c.id == user_id))).mappings().first()


async def get_by_email(conn: AsyncConnection, email: str) -> RowMapping | None:
    return (await conn.execute(select(users).where(users.c.email == email))).mappings().first()


async def insert(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(users.insert().values(**values))


async def update_fields(conn: AsyncConnection, user_id: str, **values: Any) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(**values))


async def bump_token_version(conn: AsyncConnection, user_id: str, now: datetime) -> None:
    await conn.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(token_version=users.c.token_version + 1, updated_at=now)
    )


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())
