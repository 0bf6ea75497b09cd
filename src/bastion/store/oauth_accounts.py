"""Links between a user and an account at a social login provider (SPEC §9)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.core import secrets as core_secrets
from bastion.store.tables import oauth_accounts as t


async def find(conn: AsyncConnection, provider: str, subject: str) -> RowMapping | None:
    stmt = select(t).where(t.c.provider == provider, t.c.subject == subject)
    return (await conn.execute(stmt)).mappings().first()


async def link(
    conn: AsyncConnection,
    *,
    user_id: str,
    provider: str,
    subject: str,
    email: str | None,
    now: datetime,
) -> str:
    link_id = core_secrets.new_id()
    await conn.execute(
        t.insert().values(
            id=link_id,
            user_id=user_id,
            provider=provider,
            subject=subject,
            email=email,
            created_at=now,
        )
    )
    return link_id


async def update_email(conn: AsyncConnection, link_id: str, email: str | None) -> None:
    await conn.execute(update(t).where(t.c.id == link_id).values(email=email))


async def for_user(conn: AsyncConnection, user_id: str) -> list[RowMapping]:
    stmt = select(t).where(t.c.user_id == user_id).order_by(t.c.created_at, t.c.provider)
    return list((await conn.execute(stmt)).mappings().all())
