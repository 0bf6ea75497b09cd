"""Clearing a lockout by hand (SPEC §1 ``bastion unlock``, §10 admin unlock).

One transaction clears the anonymous counter on the user row and every device counter,
and appends ``account_unlocked`` with the actor (None for the CLI).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, update

from bastion.core.emails import normalize_email
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.errors import NotFound
from bastion.runtime import Bastion
from bastion.store import users as user_store
from bastion.store.tables import device_lockouts, users


async def unlock_user(
    bx: Bastion,
    ctx: RequestContext,
    user_id: str,
    actor_id: str | None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Clear the user's lockout counters; True when the account was locked.
    Raises NotFound for an unknown user. Audited even when nothing was locked, so that
    the trail shows who tried."""
    async with bx.db.write() as conn:
        user = await user_store.get_by_id(conn, user_id)
        if user is None:
            raise NotFound("No such user.")
        was_locked = user["locked_until"] is not None and user["locked_until"] > ctx.now
        await conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(failed_login_attempts=0, locked_until=None, updated_at=ctx.now)
        )
        await conn.execute(delete(device_lockouts).where(device_lockouts.c.user_id == user_id))
        await audited(
            conn,
            ctx,
            "account_unlocked",
            user_id=user_id,
            actor_id=actor_id,
            details={**(details or {}), "was_locked": was_locked},
        )
    return was_locked


async def unlock_email(bx: Bastion, ctx: RequestContext, email: str) -> bool:
    """The CLI's entry point: by email, actor None."""
    async with bx.db.read() as conn:
        user = await user_store.get_by_email(conn, normalize_email(email))
    if user is None:
        raise NotFound(f"no user with email {normalize_email(email)}")
    return await unlock_user(bx, ctx, user["id"], None, {"via": "cli"})
