"""User rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.db import Database
from bastion.store.direct import Query, Steps, first_direct, run_in
from bastion.store.tables import users

_BY_ID = select(users).where(users.c.id == bindparam("id"))
_BY_EMAIL = select(users).where(users.c.email == bindparam("email"))


def by_id(user_id: str) -> Steps[RowMapping | None]:
    row: RowMapping | None = yield Query(_BY_ID, {"id": user_id})
    return row


def by_email(email: str) -> Steps[RowMapping | None]:
    row: RowMapping | None = yield Query(_BY_EMAIL, {"email": email})
    return row


async def get_by_id(conn: AsyncConnection, user_id: str) -> RowMapping | None:
    return await run_in(conn, by_id(user_id))


async def get_by_email(conn: AsyncConnection, email: str) -> RowMapping | None:
    return await run_in(conn, by_email(email))


async def get_by_email_direct(db: Database, email: str) -> RowMapping | None:
    """``get_by_email`` outside a transaction, on the driver (every sign-in). Its row
    reads like the engine's."""
    return cast(RowMapping | None, await first_direct(db, _BY_EMAIL, {"email": email}))


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
