"""Refresh token rows (SPEC §8). Only the SHA-256 of a token is stored.

Rotation is one conditional UPDATE (``WHERE used_at IS NULL AND revoked_at IS NULL AND
expires_at > now RETURNING``), so of many requests presenting one token at the same
moment, on one process or many, exactly one wins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, bindparam, exists, func, select, text, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.db import Database
from bastion.store.direct import (
    Query,
    Steps,
    first_direct_batched,
    first_direct_write,
    insert_values,
    row_of,
)
from bastion.store.direct import transaction as direct_transaction
from bastion.store.tables import TS, sessions, users
from bastion.store.tables import refresh_tokens as rt


# Built once: the hot path of every refresh.
def _live(now: Any) -> Any:
    """The presented token (bind ``h``), unused, not revoked and not expired at ``now``."""
    return and_(
        rt.c.token_hash == bindparam("h"),
        rt.c.used_at.is_(None),
        rt.c.revoked_at.is_(None),
        rt.c.expires_at > now,
    )


_ROTATE = (
    update(rt)
    .where(_live(bindparam("now")))
    .values(used_at=bindparam("now"), replaced_by=bindparam("new_id"))
    .returning(rt)
)
# The grace window: a token used less than REFRESH_REUSE_GRACE seconds ago, whose family
# is not revoked, may be presented again (the client lost the answer).
_REPLAY_IN_GRACE = (
    update(rt)
    .where(
        and_(
            rt.c.token_hash == bindparam("h"),
            rt.c.used_at.is_not(None),
            rt.c.used_at > bindparam("since"),
            rt.c.revoked_at.is_(None),
        )
    )
    .values(replaced_by=bindparam("new_id"))
    .returning(rt)
)
_BY_HASH = select(rt).where(rt.c.token_hash == bindparam("h"))
# Who a token speaks for: the user joined with the token's session (absent when ended).
# Built once: one indexed read per bearer request.
_PRINCIPAL = (
    select(
        users,
        sessions.c.id.label("live_session_id"),
        sessions.c.expires_at.label("session_expires_at"),
        sessions.c.last_active_at.label("session_last_active_at"),
    )
    .select_from(
        users.outerjoin(
            sessions,
            and_(sessions.c.id == bindparam("sid"), sessions.c.user_id == users.c.id),
        )
    )
    .where(users.c.id == bindparam("sub"))
)


def _principals_many() -> Any:
    """``_PRINCIPAL`` for many (sub, sid) pairs at once, each row followed by its pair."""
    pairs = (
        func.unnest(
            bindparam("sub_list", type_=ARRAY(String)), bindparam("sid_list", type_=ARRAY(String))
        )
        .table_valued("sub", "sid")
        .render_derived(name="batch")
    )
    return select(
        *_PRINCIPAL.selected_columns,
        pairs.c.sub.label("batch_sub"),
        pairs.c.sid.label("batch_sid"),
    ).select_from(
        pairs.join(users, users.c.id == pairs.c.sub).outerjoin(
            sessions, and_(sessions.c.id == pairs.c.sid, sessions.c.user_id == users.c.id)
        )
    )


_PRINCIPAL_MANY = _principals_many()


def _rotate_if_session_live() -> Any:
    """Mark the presented token used if it is live and its session too (the common case
    of a refresh, its first statement); returns what its successor needs."""
    now = bindparam("now", type_=TS)
    return (
        update(rt)
        .where(
            _live(now),
            exists()
            .where(sessions.c.id == rt.c.session_id)
            .where(sessions.c.user_id == rt.c.user_id)
            .where(sessions.c.expires_at > now),
        )
        .values(used_at=now, replaced_by=bindparam("new_id"))
        .returning(rt.c.family_id, rt.c.user_id, rt.c.session_id)
    )


def _rotate_in_one_statement() -> Any:
    """The whole common case of a refresh as one PostgreSQL statement (autocommit, so one
    round trip and atomic): mark the token used if it is live and its session too, insert
    its successor in the same family, and return what the access token needs. Nothing is
    returned when anything is off (unknown, used, revoked, expired, session ended): the
    caller then takes the transactional path, which tells those cases apart."""
    now = bindparam("now", type_=TS)
    used = _rotate_if_session_live().cte("used")
    live = (
        select(
            used.c.family_id,
            used.c.session_id,
            users.c.id,
            users.c.role,
            users.c.token_version,
            sessions.c.expires_at.label("session_expires_at"),
        )
        .select_from(
            used.join(users, users.c.id == used.c.user_id).join(
                sessions, sessions.c.id == used.c.session_id
            )
        )
        .cte("live")
    )
    successor = (
        rt.insert()
        .from_select(
            ["id", "token_hash", "family_id", "user_id", "session_id", "created_at", "expires_at"],
            select(
                bindparam("new_id"),
                bindparam("new_hash"),
                live.c.family_id,
                live.c.id,
                live.c.session_id,
                now,
                func.least(bindparam("new_expires", type_=TS), live.c.session_expires_at),
            ),
        )
        .returning(rt.c.id.label("new_id"))
        .cte("successor")
    )
    return select(
        live.c.id,
        live.c.role,
        live.c.token_version,
        live.c.session_id,
        successor.c.new_id,
    ).select_from(live.join(successor, true()))


_ROTATE_ONE_STATEMENT = _rotate_in_one_statement()
# The same on SQLite, which has no data-modifying CTEs: three statements in one
# transaction, run in one hop to the writer thread (store/direct.py).
_ROTATE_IF_SESSION_LIVE = _rotate_if_session_live()
_INSERT_SUCCESSOR = insert_values(rt)


def _rotated(params: dict[str, Any]) -> Steps[dict[str, Any] | None]:
    """``_ROTATE_ONE_STATEMENT`` as steps (SQLite)."""
    used = yield Query(_ROTATE_IF_SESSION_LIVE, params)
    if used is None:
        return None  # nothing written: the transactional path decides
    live = yield Query(_PRINCIPAL, {"sid": used["session_id"], "sub": used["user_id"]})
    if live is None or live["live_session_id"] is None:  # the UPDATE saw both just now
        raise RuntimeError("refresh: session vanished inside its transaction")
    yield Query(
        _INSERT_SUCCESSOR,
        row_of(
            rt,
            id=params["new_id"],
            token_hash=params["new_hash"],
            family_id=used["family_id"],
            user_id=used["user_id"],
            session_id=used["session_id"],
            created_at=params["now"],
            expires_at=min(params["new_expires"], live["session_expires_at"]),
        ),
    )
    return {
        "id": live["id"],
        "role": live["role"],
        "token_version": live["token_version"],
        "session_id": used["session_id"],
        "new_id": params["new_id"],
    }


async def rotate_fast(
    db: Database, token_hash: str, new_id: str, new_hash: str, new_expires: datetime, now: datetime
) -> Any:
    """The common refresh in one round trip on PostgreSQL, in one hop to the writer
    thread on SQLite. Returns the user's ``id``, ``role``, ``token_version`` and the
    ``session_id``, or None (nothing written) when the slow path must decide."""
    params = {
        "h": token_hash,
        "new_id": new_id,
        "new_hash": new_hash,
        "new_expires": new_expires,
        "now": now,
    }
    if db.is_sqlite:
        return await direct_transaction(db, _rotated(params))
    return await first_direct_write(db, _ROTATE_ONE_STATEMENT, params)


async def insert(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(rt.insert().values(**values))


async def rotate(
    conn: AsyncConnection, token_hash: str, new_id: str, now: datetime
) -> RowMapping | None:
    """Mark a live token used (replaced by ``new_id``) and return it; None if it is
    unknown, used, revoked or expired."""
    row: RowMapping | None = (
        (await conn.execute(_ROTATE, {"h": token_hash, "now": now, "new_id": new_id}))
        .mappings()
        .first()
    )
    return row


async def replay_in_grace(
    conn: AsyncConnection, token_hash: str, new_id: str, since: datetime
) -> RowMapping | None:
    row: RowMapping | None = (
        (await conn.execute(_REPLAY_IN_GRACE, {"h": token_hash, "since": since, "new_id": new_id}))
        .mappings()
        .first()
    )
    return row


async def by_hash(conn: AsyncConnection, token_hash: str) -> RowMapping | None:
    row: RowMapping | None = (await conn.execute(_BY_HASH, {"h": token_hash})).mappings().first()
    return row


async def lock_family(conn: AsyncConnection, family_id: str) -> None:
    """Serialise reuse handling of one family until the transaction ends (PostgreSQL;
    SQLite writers are serial already), so concurrent replays never deadlock on the
    family's rows."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:f, 7373726009))"),
            {"f": family_id},
        )


async def revoke_family(conn: AsyncConnection, family_id: str, now: datetime) -> int:
    stmt = (
        update(rt)
        .where(rt.c.family_id == family_id, rt.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return (await conn.execute(stmt)).rowcount or 0


async def principal_direct(db: Database, user_id: str, session_id: str) -> Any:
    """``principal`` on the hot path (every bearer request): through the driver-level
    connections of store/direct.py, falling back to the engine."""
    return await first_direct_batched(
        db, _PRINCIPAL, _PRINCIPAL_MANY, {"sub": user_id, "sid": session_id}
    )


async def principal(
    conn: AsyncConnection, user_id: str, session_id: str | None
) -> RowMapping | None:
    """The user row plus ``live_session_id``, ``session_expires_at`` and
    ``session_last_active_at`` (None when the session no longer exists)."""
    row: RowMapping | None = (
        (await conn.execute(_PRINCIPAL, {"sub": user_id, "sid": session_id})).mappings().first()
    )
    return row
