"""Revocation (RFC 7009) and introspection (RFC 7662) of the tokens issued by
``/api/auth/token`` (SPEC §8).

Revoking either token of a grant ends the whole grant: its session (so its access tokens
fail at once, no jti denylist needed) and its refresh family.
"""

from __future__ import annotations

from typing import Any

from bastion.core import jwt as core_jwt
from bastion.core import secrets as core_secrets
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.tokens import MAX_OPAQUE_TOKEN, session_live, verify_access
from bastion.runtime import Bastion
from bastion.store import sessions as session_store
from bastion.store import tokens as token_store


async def revoke(bx: Bastion, ctx: RequestContext, token: str) -> None:
    """RFC 7009: revoking either token of a grant ends the whole grant (its session and
    refresh family), so its access tokens stop working at once. Unknown, invalid or
    already revoked tokens are ignored."""
    if core_jwt.looks_like_jwt(token):
        found = await verify_access(bx, token, ctx.now)
        if found is None:
            return
        claims, principal = found
        user_id, sid = str(principal["id"]), str(claims["sid"])
    elif 0 < len(token) <= MAX_OPAQUE_TOKEN:
        async with bx.db.read() as conn:
            row = await token_store.by_hash(conn, core_secrets.token_hash(token))
        if row is None or row["session_id"] is None:
            return
        user_id, sid = str(row["user_id"]), str(row["session_id"])
    else:
        return
    async with bx.db.write() as conn:
        revoked = await token_store.revoke_family(conn, sid, ctx.now)
        ended = await session_store.delete_by_id(conn, sid, user_id=user_id)
        if revoked or ended:
            await audited(
                conn,
                ctx,
                "session_revoked",
                user_id=user_id,
                actor_id=user_id,
                details={"session_id": sid, "via": "token_revocation"},
            )


INACTIVE: dict[str, Any] = {"active": False}


async def introspect(bx: Bastion, ctx: RequestContext, token: str) -> dict[str, Any]:
    """RFC 7662 §2.2 answer for an access or refresh token issued by /api/auth/token.
    Session cookie values are not introspected (they never leave the browser)."""
    s = bx.settings
    if core_jwt.looks_like_jwt(token):
        found = await verify_access(bx, token, ctx.now)
        if found is None:
            return INACTIVE
        claims, principal = found
        return {
            "active": True,
            "token_type": "Bearer",
            "sub": claims["sub"],
            "username": principal["email"],
            "exp": claims["exp"],
            "iat": claims["iat"],
            "aud": claims["aud"],
            "iss": claims["iss"],
            "jti": claims["jti"],
            "sid": claims["sid"],
            "role": principal["role"],  # the current role, which authorization uses
        }
    if not 0 < len(token) <= MAX_OPAQUE_TOKEN:
        return INACTIVE
    async with bx.db.read() as conn:
        row = await token_store.by_hash(conn, core_secrets.token_hash(token))
        if row is None or row["used_at"] is not None or row["revoked_at"] is not None:
            return INACTIVE
        if row["expires_at"] <= ctx.now:
            return INACTIVE
        owner = await token_store.principal(conn, row["user_id"], row["session_id"])
    if owner is None or not session_live(owner, ctx.now):
        return INACTIVE
    return {
        "active": True,
        "token_type": "refresh_token",
        "sub": row["user_id"],
        "username": owner["email"],
        "exp": int(row["expires_at"].timestamp()),
        "iat": int(row["created_at"].timestamp()),
        "aud": s.jwt_audience,
        "iss": s.base_url,
        "sid": row["session_id"],
        "role": owner["role"],
    }
