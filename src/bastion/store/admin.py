"""Queries of the admin API and the security report (SPEC §10, §11).

Each one is served by an index (migration 0002_admin) and is bounded by a LIMIT, so that
they stay fast with a million users; bench/report_million.py measures them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select, text, tuple_, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import (
    audit_events,
    device_lockouts,
    login_attempts,
    login_locations,
    sessions,
    suspicious_emails,
    unusual_sessions,
    users,
)

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


async def count_upto(conn: AsyncConnection, stmt: Select[Any], cap: int) -> int:
    """``count(*)`` of a query's rows, but reading at most ``cap + 1`` of them: the
    report's totals stay as cheap with ten million users as with ten thousand (a
    result of ``cap + 1`` means "more than ``cap``")."""
    sub = stmt.limit(cap + 1).subquery()
    return int((await conn.execute(select(func.count()).select_from(sub))).scalar_one())


async def users_without_mfa(
    conn: AsyncConnection, limit: int, cap: int
) -> tuple[int, list[RowMapping]]:
    cols = (users.c.id, users.c.email, users.c.role, users.c.created_at)
    rows = await conn.execute(
        select(*cols).where(_NO_MFA).order_by(users.c.created_at, users.c.id).limit(limit)
    )
    total = await count_upto(conn, select(users.c.id).where(_NO_MFA), cap)
    return total, list(rows.mappings().all())


async def locked_accounts(
    conn: AsyncConnection, now: datetime, limit: int, cap: int
) -> tuple[int, list[dict[str, Any]]]:
    """Accounts locked for anonymous clients (users.locked_until) and locked device
    counters (device_lockouts), latest expiry first; the total counts locks."""
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
    n_account = await count_upto(
        conn, select(u.c.id).where(u.c.locked_until.is_not(None), u.c.locked_until > now), cap
    )
    # Locks, like the list (one entry per lock): a DISTINCT over users would read every
    # locked device counter before the cap could stop it.
    n_device = await count_upto(
        conn, select(d.c.user_id).where(d.c.locked_until.is_not(None), d.c.locked_until > now), cap
    )
    return min(n_account + n_device, cap + 1), found[:limit]


async def suspicious_logins(
    conn: AsyncConnection, since: datetime, threshold: int, limit: int, cap: int
) -> tuple[int, list[dict[str, Any]]]:
    """Emails with more than ``threshold`` failed logins since ``since``. Only emails
    marked when they crossed the threshold (``suspicious_emails``, store/attempts.py) are
    counted again, so the cost follows the suspicious emails, not every failure of the
    day; the recount drops those whose failures have since left the window."""
    t = login_attempts
    n = func.count().label("failed_attempts")
    marked = select(suspicious_emails.c.email).where(suspicious_emails.c.last_failed_at >= since)
    # No count(DISTINCT ...) here: it forces a sort of every failure by email, where a
    # hash aggregate suffices; distinct IPs are counted for the listed emails only.
    grouped = (
        select(t.c.email, n, func.max(t.c.created_at).label("last_failed_at"))
        .where(
            t.c.email.in_(marked),
            t.c.success == False,  # noqa: E712
            t.c.created_at >= since,
        )
        .group_by(t.c.email)
        .having(func.count() > threshold)
    )
    sub = grouped.subquery()
    rows = await conn.execute(
        select(sub).order_by(sub.c.failed_attempts.desc(), sub.c.email).limit(limit)
    )
    found = [dict(r) for r in rows.mappings().all()]
    if found:
        ips = (
            select(t.c.email, func.count(func.distinct(t.c.ip_address)))
            .where(
                t.c.email.in_([r["email"] for r in found]),
                t.c.success == False,  # noqa: E712
                t.c.created_at >= since,
            )
            .group_by(t.c.email)
        )
        counts: dict[str, int] = dict((await conn.execute(ips)).tuples().all())
        for r in found:
            r["distinct_ips"] = int(counts.get(r["email"], 0))
    return await count_upto(conn, select(sub.c.email), cap), found


async def unusual_locations(
    conn: AsyncConnection, now: datetime, limit: int, cap: int
) -> tuple[int, list[dict[str, Any]]]:
    """Live sessions flagged at sign-in (flows/locations.py), newest first: the report
    reads only flagged rows, however many sessions there are."""
    u, s = unusual_sessions, sessions
    joined = u.join(s, s.c.id == u.c.session_id).join(users, users.c.id == u.c.user_id)
    stmt = (
        select(
            u.c.session_id,
            u.c.user_id,
            users.c.email,
            u.c.location,
            s.c.ip_address,
            s.c.device_name,
            u.c.created_at,
        )
        .select_from(joined)
        .where(s.c.expires_at > now)
        .order_by(u.c.created_at.desc(), u.c.session_id)
        .limit(limit)
    )
    rows = [dict(r) for r in (await conn.execute(stmt)).mappings().all()]
    baselines = await first_locations(conn, {r["user_id"] for r in rows})
    for r in rows:
        r["usual_locations"] = baselines.get(r["user_id"], [])
    total = await count_upto(
        conn,
        select(u.c.session_id)
        .select_from(u.join(s, s.c.id == u.c.session_id))
        .where(s.c.expires_at > now),
        cap,
    )
    return total, rows


async def first_locations(conn: AsyncConnection, user_ids: set[str]) -> dict[str, list[str]]:
    """The distinct locations of each user's first three sessions, in order."""
    if not user_ids:
        return {}
    t = login_locations
    stmt = (
        select(t.c.user_id, t.c.location)
        .where(t.c.user_id.in_(sorted(user_ids)))
        .order_by(t.c.user_id, t.c.seq)
    )
    found: dict[str, list[str]] = {}
    for user_id, loc in (await conn.execute(stmt)).tuples().all():
        seen = found.setdefault(user_id, [])
        if loc not in seen:
            seen.append(loc)
    return found
