"""Email verification: use a link, or ask for a new one (SPEC §3).

The link is mailed at registration (flows.accounts.send_verification). Using it needs
no session: it may be opened on another device. Resending voids older links.
"""

from __future__ import annotations

from sqlalchemy.engine import RowMapping

from bastion.flows import accounts
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.errors import AlreadyVerified, InvalidToken, Unauthenticated
from bastion.runtime import Bastion
from bastion.store import one_time
from bastion.store import users as user_store

PURPOSE = "verify_email"


async def verify(bx: Bastion, ctx: RequestContext, token: str) -> RowMapping:
    """Consume the link (once, atomically) and mark the address verified."""
    async with bx.db.write() as conn:
        used = await one_time.consume(conn, token, PURPOSE, ctx.now)
        if used is None:
            raise InvalidToken()
        user = await user_store.get_by_id(conn, used["user_id"])
        if user is None:
            raise InvalidToken()
        if not user["email_verified"]:
            await user_store.update_fields(
                conn, user["id"], email_verified=True, updated_at=ctx.now
            )
            await audited(conn, ctx, "email_verified", user_id=user["id"], actor_id=user["id"])
        fresh = await user_store.get_by_id(conn, user["id"])
    assert fresh is not None  # noqa: S101 - read in this transaction
    return fresh


async def resend(bx: Bastion, ctx: RequestContext, user_id: str) -> None:
    """Mail a new link to the signed-in user; older links die. 409 when verified."""
    async with bx.db.read() as conn:
        user = await user_store.get_by_id(conn, user_id)
    if user is None:
        raise Unauthenticated()
    if user["email_verified"]:
        raise AlreadyVerified()
    await accounts.guard(bx, "resend:ip", ctx.ip, ctx)
    await accounts.guard(bx, "resend:user", user_id, ctx)
    async with bx.db.write() as conn:
        await accounts.send_verification(conn, bx, user_id, user["email"], ctx)
