"""Session rows: only the SHA-256 of the token is stored (SPEC §7)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, any_, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.db import Database
from bastion.store.direct import (
    LazyRow,
    Query,
    Steps,
    first_direct_batched,
    insert_values,
    row_of,
    run_in,
)
from bastion.store.tables import sessions, users

# Built once: this is the hot path of every authenticated request.
_LOOKUP = (
    select(
        sessions.c.id.label("session_id"),
        sessions.c.expires_at,
        sessions.c.last_active_at,
        sessions.c.created_at.label("session_created_at"),
        users,
    )
    .join(users, users.c.id == sessions.c.user_id)
    .where(sessions.c.token_hash == bindparam("h"))
)
# The same columns for many token hashes at once, each row followed by its hash.
_LOOKUP_MANY = (
    select(*_LOOKUP.selected_columns, sessions.c.token_hash.label("batch_h"))
    .join_from(sessions, users, users.c.id == sessions.c.user_id)
    .where(sessions.c.token_hash == any_(bindparam("h_list", type_=ARRAY(String))))
)
_TOUCH = (
    update(sessions)
    .where(and_(sessions.c.id == bindparam("sid"), sessions.c.last_active_at < bindparam("before")))
    .values(last_active_at=bindparam("now"))
)


_INSERT = insert_values(sessions)


def add(**values: Any) -> Steps[None]:
    """Insert a session row (the columns not given are NULL)."""
    yield Query(_INSERT, row_of(sessions, **values))


async def insert(conn: AsyncConnection, **values: Any) -> None:
    await run_in(conn, add(**values))


async def lookup(conn: AsyncConnection, token_hash: str) -> RowMapping | None:
    """Session joined with its user, by token hash."""
    return (await conn.execute(_LOOKUP, {"h": token_hash})).mappings().first()


async def lookup_direct(db: Database, token_hash: str) -> RowMapping | LazyRow | None:
    """``lookup`` on the hot path (every cookie-authenticated request); on PostgreSQL the
    lookups of one loop iteration share a query (``_LOOKUP_MANY``)."""
    return await first_direct_batched(db, _LOOKUP, _LOOKUP_MANY, {"h": token_hash})


def touched(session_id: str, now: datetime, before: datetime) -> Steps[None]:
    """Last active set to ``now`` unless it was written since ``before`` (by another
    request or process): one statement, atomic by itself."""
    yield Query(_TOUCH, {"sid": session_id, "now": now, "before": before})


async def delete_by_id(conn: AsyncConnection, session_id: str, user_id: str | None = None) -> int:
    stmt = delete(sessions).where(sessions.c.id == session_id)
    if user_id is not None:
        stmt = stmt.where(sessions.c.user_id == user_id)
    return (await conn.execute(stmt)).rowcount or 0


async def delete_for_user(conn: AsyncConnection, user_id: str, keep: str | None = None) -> int:
    stmt = delete(sessions).where(sessions.c.user_id == user_id)
    if keep is not None:
        stmt = stmt.where(sessions.c.id != keep)
    return (await conn.execute(stmt)).rowcount or 0


async def list_for_user(conn: AsyncConnection, user_id: str, now: datetime) -> list[RowMapping]:
    stmt = (
        select(sessions)
        .where(sessions.c.user_id == user_id, sessions.c.expires_at > now)
        .order_by(sessions.c.last_active_at.desc())
    )
    return list((await conn.execute(stmt)).mappings().all())
