"""Password reset: forgot (mail a link) and reset (use it) (SPEC §5).

Forgot answers the same for every syntactically valid email and never waits on SMTP:
the link goes through the outbox. For an unknown email it does comparable database
work, so the time does not tell whether an account exists.

Reset checks the token without using it, then the password policy (a weak password
must not burn the link), hashes, and only then consumes the token in the same
transaction that changes the password: of many parallel requests with one token,
exactly one succeeds.
"""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.core import secrets as core_secrets
from bastion.flows import accounts
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.errors import InvalidToken
from bastion.mail import outbox
from bastion.mail.templates import render
from bastion.runtime import Bastion
from bastion.store import audit, one_time
from bastion.store import users as user_store
from bastion.store.tables import device_lockouts, one_time_tokens, users

PURPOSE = "reset"


async def forgot(bx: Bastion, ctx: RequestContext, raw_email: str) -> None:
    """Queue a reset link for a known account; do as much for an unknown one."""
    email = accounts.check_email(raw_email)
    await accounts.guard(bx, "forgot:ip", ctx.ip, ctx)
    await accounts.guard(bx, "forgot:email", email, ctx)
    s = bx.settings
    async with bx.db.write() as conn:
        user = await user_store.get_by_email(conn, email)
        if user is None:
            await _decoy(conn, bx, ctx)
            return
        # A new request voids older links (one_time.issue does it in this transaction).
        token = await one_time.issue(
            conn, user_id=user["id"], purpose=PURPOSE, now=ctx.now, ttl=s.reset_token_ttl
        )
        await outbox.enqueue(
            conn,
            recipient=user["email"],
            event="password_reset",
            base_url=s.base_url,
            now=ctx.now,
            link=f"{s.base_url}/reset-password?token={token}",
            minutes=max(1, s.reset_token_ttl // 60),
        )
        await audited(conn, ctx, "password_reset_requested", user_id=user["id"])


async def _decoy(conn: AsyncConnection, bx: Bastion, ctx: RequestContext) -> None:
    """The known-account path's work without its effects: make a token, void nothing,
    render the mail, and rehearse the audit append (its lock, read and hash, no row)."""
    token = core_secrets.new_token()
    t = one_time_tokens.c
    await conn.execute(
        update(one_time_tokens)
        .where(t.token_hash == core_secrets.token_hash(token), t.used_at.is_(None))
        .values(used_at=None)
    )
    render(
        "password_reset",
        base_url=bx.settings.base_url,
        link=f"{bx.settings.base_url}/reset-password?token={token}",
        minutes=max(1, bx.settings.reset_token_ttl // 60),
    )
    await audit.rehearse(
        conn,
        "password_reset_requested",
        now=ctx.now,
        ip_address=ctx.ip,
        user_agent=ctx.user_agent,
    )


async def reset(bx: Bastion, ctx: RequestContext, token: str, password: str) -> RowMapping:
    """Set a new password with a reset token; returns the updated user."""
    accounts.check_password_length(password)
    await accounts.guard(bx, "reset:ip", ctx.ip, ctx)
    async with bx.db.read() as conn:
        live = await one_time.peek(conn, token, PURPOSE, ctx.now)
        user = await user_store.get_by_id(conn, live["user_id"]) if live else None
    if live is None or user is None:
        raise InvalidToken()
    # Policy before consuming: a weak password keeps the link usable.
    accounts.check_policy(bx, password, user["email"], bool(user["mfa_enabled"]))
    new_hash = await bx.hash_password(password)
    async with bx.db.write() as conn:
        used = await one_time.consume(conn, token, PURPOSE, ctx.now)
        if used is None:
            raise InvalidToken()  # used in parallel, or expired meanwhile; rolls back
        user_id = used["user_id"]
        await conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(
                password_hash=new_hash,
                password_changed_at=ctx.now,
                updated_at=ctx.now,
                # The link reached the mailbox: the address is proven (django-allauth
                # does the same).
                email_verified=True,
                # A reset clears a lockout (SPEC §5), the device counters too.
                failed_login_attempts=0,
                locked_until=None,
            )
        )
        await conn.execute(delete(device_lockouts).where(device_lockouts.c.user_id == user_id))
        await accounts.password_replaced(conn, bx, ctx, user_id, user["email"], "password_reset")
        fresh = await user_store.get_by_id(conn, user_id)
    assert fresh is not None  # noqa: S101 - updated above in this transaction
    return fresh
