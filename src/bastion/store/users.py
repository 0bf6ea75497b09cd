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


async def insert_new(
    conn: AsyncConnection,
    *,
    id: str,
    email: str,
    name: str | None,
    password_hash: str | None,
    role: str,
    email_verified: bool,
    now: datetime,
) -> None:
    """A new account as every way of creating one starts it (registration, social
    sign-in, ``bastion create-user``): no MFA, no failures, token version 0; a password,
    if any, set now."""
    await insert(
        conn,
        id=id,
        email=email,
        name=name,
        password_hash=password_hash,
        role=role,
        email_verified=email_verified,
        mfa_enabled=False,
        token_version=0,
        failed_login_attempts=0,
        created_at=now,
        updated_at=now,
        password_changed_at=now if password_hash is not None else None,
    )


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
