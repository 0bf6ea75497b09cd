"""A user's sessions and devices: list, revoke one, revoke the others, revoke all (SPEC §7).

``revoke_all`` is reusable by the admin API (``actor_id`` is then the admin's id).
Revoking a session also revokes the refresh tokens issued for it; "revoke others" and
"revoke all" revoke every refresh token not tied to the caller's own session, API clients
being devices too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, update

from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.errors import NotFound
from bastion.flows.users import iso
from bastion.runtime import Bastion
from bastion.store import sessions as session_store
from bastion.store import users as user_store
from bastion.store.tables import refresh_tokens


def public_session(row: Any, current_id: str | None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "device_name": row["device_name"],
        "device_type": row["device_type"],
        "browser": row["browser"],
        "os": row["os"],
        "ip_address": row["ip_address"],
        "location": row["location"],
        "created_at": iso(row["created_at"]),
        "last_active_at": iso(row["last_active_at"]),
        "current": row["id"] == current_id,
    }


async def list_sessions(
    bx: Bastion, ctx: RequestContext, user_id: str, current_id: str | None
) -> list[dict[str, Any]]:
    async with bx.db.read() as conn:
        rows = await session_store.list_for_user(conn, user_id, ctx.now)
    return [public_session(r, current_id) for r in rows]


async def revoke_refresh(
    conn: Any,
    user_id: str,
    ctx: RequestContext,
    *,
    session_id: str | None = None,
    keep: str | None = None,
) -> None:
    """Revoke the user's live refresh tokens in ``conn``'s transaction: all of them, or
    those of one session, or all but those of ``keep``."""
    t = refresh_tokens
    stmt = update(t).where(t.c.user_id == user_id, t.c.revoked_at.is_(None))
    if session_id is not None:
        stmt = stmt.where(t.c.session_id == session_id)
    if keep is not None:
        stmt = stmt.where(or_(t.c.session_id.is_(None), t.c.session_id != keep))
    await conn.execute(stmt.values(revoked_at=ctx.now))


async def revoke_session(
    bx: Bastion, ctx: RequestContext, user_id: str, session_id: str, actor_id: str | None
) -> None:
    """End one of the user's sessions; NotFound for a session that is not theirs."""
    async with bx.db.write() as conn:
        if not await session_store.delete_by_id(conn, session_id, user_id=user_id):
            raise NotFound("No such session.")
        await revoke_refresh(conn, user_id, ctx, session_id=session_id)
        await audited(
            conn,
            ctx,
            "session_revoked",
            user_id=user_id,
            actor_id=actor_id,
            details={"session_id": session_id},
        )


async def revoke_others(
    bx: Bastion, ctx: RequestContext, user_id: str, keep: str | None, actor_id: str | None
) -> int:
    """End every session but ``keep`` (the caller's); the number ended."""
    async with bx.db.write() as conn:
        n = await session_store.delete_for_user(conn, user_id, keep=keep)
        await revoke_refresh(conn, user_id, ctx, keep=keep)
        await audited(
            conn,
            ctx,
            "sessions_revoked",
            user_id=user_id,
            actor_id=actor_id,
            details={"scope": "others", "count": n},
        )
    return n


async def revoke_all(
    bx: Bastion,
    ctx: RequestContext,
    user_id: str,
    actor_id: str | None,
    details: dict[str, Any] | None = None,
) -> int:
    """End every session and refresh token and bump the token version, so that access
    tokens already issued die too (their ``ver`` claim goes stale)."""
    async with bx.db.write() as conn:
        return await end_all(conn, ctx, user_id, actor_id, details)


async def end_all(
    conn: Any,
    ctx: RequestContext,
    user_id: str,
    actor_id: str | None,
    details: dict[str, Any] | None = None,
) -> int:
    """``revoke_all`` in the caller's transaction (the admin API checks the user exists in
    the same one); audited as ``sessions_revoked`` with ``{scope: "all", count}`` and
    ``details``. The number of sessions ended."""
    n = await session_store.delete_for_user(conn, user_id)
    await revoke_refresh(conn, user_id, ctx)
    await user_store.bump_token_version(conn, user_id, ctx.now)
    await audited(
        conn,
        ctx,
        "sessions_revoked",
        user_id=user_id,
        actor_id=actor_id,
        details={"scope": "all", "count": n, **(details or {})},
    )
    return n
