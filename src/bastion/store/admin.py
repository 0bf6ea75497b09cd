"""Queries of the admin API and the security report (SPEC §10, §11).

Each one is served by an index (migration 0002_admin) and is bounded by a LIMIT, so that
they stay fast with a million users; bench/report_million.py measures them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, text, tuple_, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import audit_events, device_lockouts, login_attempts, sessions, users

ADMIN_LOCK_ID = 7_373_726_010  # serialises role changes (last-admin rule) on PostgreSQL


def _like_pattern(q: str) -> str:
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_users(
    conn: AsyncConnection,
    *,
    q: str | None,
    limit: int,
    after: tuple[datetime, str] | None,
    role: str | None = None,
) -> list[RowMapping]:
    """Users in (created_at, id) order, after the keyset position ``after``."""
    stmt = select(users).order_by(users.c.created_at, users.c.id).limit(limit)
    if q:
        pattern = _like_pattern(q)
        stmt = stmt.where(
            or_(
                users.c.email.like(pattern, escape="\\"),
                func.lower(users.c.name).like(pattern, escape="\\"),
            )
        )
    if role:
        stmt = stmt.where(users.c.role == role)
    if after is not None:
        stmt = stmt.where(tuple_(users.c.created_at, users.c.id) > tuple_(*after))
    return list((await conn.execute(stmt)).mappings().all())


async def lock_admins(conn: AsyncConnection) -> None:
    """Serialise role changes: SQLite write transactions are serial already
    (BEGIN IMMEDIATE); PostgreSQL takes a transaction-scoped advisory lock."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"SELECT pg_advisory_xact_lock({ADMIN_LOCK_ID})"))


async def count_role_holders(conn: AsyncConnection, roles: Sequence[str], exclude: str) -> int:
    stmt = (
        select(func.count())
        .select_from(users)
        .where(users.c.role.in_(list(roles)), users.c.id != exclude)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def set_role(conn: AsyncConnection, user_id: str, role: str, now: datetime) -> None:
    """Change the role and bump the token version: access tokens carry the role claim,
    so the old ones must stop working at once (SPEC §8 stale ``ver``)."""
    await conn.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(role=role, token_version=users.c.token_version + 1, updated_at=now)
    )


async def audit_page(
    conn: AsyncConnection,
    *,
    action: str | None,
    user_id: str | None,
    limit: int,
    before_id: int | None,
) -> list[RowMapping]:
    """Newest first, keyset on id (indexes (action, id) and (user_id, id))."""
    stmt = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
    if action:
        stmt = stmt.where(audit_events.c.action == action)
    if user_id:
        stmt = stmt.where(audit_events.c.user_id == user_id)
    if before_id is not None:
        stmt = stmt.where(audit_events.c.id < before_id)
    return list((await conn.execute(stmt)).mappings().all())


async def login_attempts_page(
    conn: AsyncConnection, *, email: str | None, ip: str | None, limit: int
) -> list[RowMapping]:
    t = login_attempts
    stmt = select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
    if email:
        stmt = stmt.where(t.c.email == email)
    if ip:
        stmt = stmt.where(t.c.ip_address == ip)
    return list((await conn.execute(stmt)).mappings().all())


# Security report -------------------------------------------------------------------------

_NO_MFA = users.c.mfa_enabled == False  # noqa: E712 - matches the partial index predicate


async def users_without_mfa(conn: AsyncConnection, limit: int) -> tuple[int, list[RowMapping]]:
    cols = (users.c.id, users.c.email, users.c.role, users.c.created_at)
    rows = await conn.execute(
        select(*cols).where(_NO_MFA).order_by(users.c.created_at, users.c.id).limit(limit)
    )
    total = await conn.execute(select(func.count()).select_from(users).where(_NO_MFA))
    return int(total.scalar_one()), list(rows.mappings().all())


async def locked_accounts(
    conn: AsyncConnection, now: datetime, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """Accounts locked for anonymous clients (users.locked_until) and accounts with a
    locked device counter (device_lockouts), newest lock first."""
    u, d = users, device_lockouts
    account = (
        select(u.c.id, u.c.email, u.c.locked_until, u.c.failed_login_attempts, text("'account'"))
        .where(u.c.locked_until.is_not(None), u.c.locked_until > now)
        .order_by(u.c.locked_until.desc())
        .limit(limit)
    )
    device = (
        select(u.c.id, u.c.email, d.c.locked_until, d.c.failed_login_attempts, text("'device'"))
        .join(u, u.c.id == d.c.user_id)
        .where(d.c.locked_until.is_not(None), d.c.locked_until > now)
        .order_by(d.c.locked_until.desc())
        .limit(limit)
    )
    found: list[dict[str, Any]] = []
    for stmt in (account, device):
        for r in (await conn.execute(stmt)).all():
            found.append(
                {
                    "id": r[0],
                    "email": r[1],
                    "locked_until": r[2],
                    "failed_login_attempts": r[3],
                    "scope": r[4],
                }
            )
    found.sort(key=lambda x: x["locked_until"], reverse=True)
    n_account = await conn.execute(
        select(func.count())
        .select_from(u)
        .where(u.c.locked_until.is_not(None), u.c.locked_until > now)
    )
    n_device = await conn.execute(
        select(func.count(func.distinct(d.c.user_id))).where(
            d.c.locked_until.is_not(None), d.c.locked_until > now
        )
    )
    return int(n_account.scalar_one()) + int(n_device.scalar_one()), found[:limit]


async def suspicious_logins(
    conn: AsyncConnection, since: datetime, threshold: int, limit: int
) -> tuple[int, list[RowMapping]]:
    """Emails with more than ``threshold`` failed logins since ``since`` (partial index
    on failed attempts by time)."""
    t = login_attempts
    n = func.count().label("failed_attempts")
    grouped = (
        select(
            t.c.email,
            n,
            func.max(t.c.created_at).label("last_failed_at"),
            func.count(func.distinct(t.c.ip_address)).label("distinct_ips"),
        )
        .where(t.c.success == False, t.c.created_at >= since)  # noqa: E712
        .group_by(t.c.email)
        .having(func.count() > threshold)
    )
    sub = grouped.subquery()
    rows = await conn.execute(
        select(sub).order_by(sub.c.failed_attempts.desc(), sub.c.email).limit(limit)
    )
    total = await conn.execute(select(func.count()).select_from(sub))
    return int(total.scalar_one()), list(rows.mappings().all())


def _unusual_filter(now: datetime, since: datetime) -> Any:
    """A live session whose location is not among the locations of the user's first three
    sessions (so the first three themselves never match). Unknown locations (private
    addresses, no geo data) are never called unusual."""
    s = sessions
    f = sessions.alias("f")
    # Correlated and LIMITed: one index range read on (user_id, created_at) per candidate.
    first_locations = (
        select(func.coalesce(f.c.location, ""))
        .where(f.c.user_id == s.c.user_id)
        .order_by(f.c.created_at, f.c.id)
        .limit(3)
    )
    return and_(
        s.c.expires_at > now,
        s.c.created_at >= since,
        s.c.location.is_not(None),
        s.c.location != "Unknown",
        s.c.location.not_in(first_locations),
    )


async def unusual_locations(
    conn: AsyncConnection, now: datetime, since: datetime, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    s = sessions
    where = _unusual_filter(now, since)
    stmt = (
        select(
            s.c.id.label("session_id"),
            s.c.user_id,
            users.c.email,
            s.c.location,
            s.c.ip_address,
            s.c.device_name,
            s.c.created_at,
        )
        .join(users, users.c.id == s.c.user_id)
        .where(where)
        .order_by(s.c.created_at.desc(), s.c.id.desc())
        .limit(limit)
    )
    rows = [dict(r) for r in (await conn.execute(stmt)).mappings().all()]
    for r in rows:
        r["usual_locations"] = await first_locations(conn, r["user_id"])
    total = await conn.execute(select(func.count()).select_from(s).where(where))
    return int(total.scalar_one()), rows


async def first_locations(conn: AsyncConnection, user_id: str) -> list[str]:
    stmt = (
        select(sessions.c.location)
        .where(sessions.c.user_id == user_id)
        .order_by(sessions.c.created_at, sessions.c.id)
        .limit(3)
    )
    seen: list[str] = []
    for (loc,) in (await conn.execute(stmt)).all():
        if loc and loc not in seen:
            seen.append(loc)
    return seen
