"""Tokens for APIs (SPEC §8): the grants of ``/api/auth/token``, refresh rotation with
reuse detection, revocation (RFC 7009), introspection (RFC 7662) and bearer
verification.

Every grant signs the user in like a browser login does, so each token grant owns one
session row (``sid``): it shows in the user's device list, and ending it (device list,
revoke-all, password change, reset, admin) ends the grant's access tokens at once and
its refresh tokens at their next use. The refresh family id is the session id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.core import jwt as core_jwt
from bastion.core import secrets as core_secrets
from bastion.flows import accounts, keys, mfa
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext, utcnow
from bastion.flows.errors import (
    DomainError,
    InvalidCode,
    InvalidCredentials,
    InvalidMfaToken,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
)
from bastion.flows.sessions import TOUCH_INTERVAL, Authenticated, touch_last_active
from bastion.runtime import Bastion
from bastion.store import sessions as session_store
from bastion.store import tokens as token_store

log = logging.getLogger("bastion.tokens")
MAX_OPAQUE_TOKEN = 200


class OAuthError(DomainError):
    """RFC 6749 §5.2 error: 400 with ``error`` and ``error_description``."""

    status, code = 400, "invalid_request"

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.message, **self.extra}


class InvalidGrant(OAuthError):
    code, message = "invalid_grant", "The grant is invalid, expired or revoked."


class OAuthInvalidRequest(OAuthError):
    code, message = "invalid_request", "The request is missing a parameter or malformed."


class UnsupportedGrantType(OAuthError):
    code, message = "unsupported_grant_type", "The grant type is not supported."


class MfaRequired(OAuthError):
    code, message = "mfa_required", "A second factor is required: use grant_type=mfa."

    def __init__(self, mfa_token: str) -> None:
        super().__init__(mfa_token=mfa_token)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


# --- issuing -------------------------------------------------------------------------


async def _signing_key(bx: Bastion) -> core_jwt.SigningKey:
    key_set = await keys.cache_for(bx).get()
    if key_set.signing is None:
        log.error("no usable JWT signing key: run `bastion keys rotate`")
        raise ServiceUnavailable()
    return key_set.signing


def _access_token(
    bx: Bastion, key: core_jwt.SigningKey, user: Mapping[Any, Any], sid: str, now: datetime
) -> str:
    s = bx.settings
    claims = core_jwt.access_claims(
        issuer=s.base_url,
        subject=str(user["id"]),
        audience=s.jwt_audience,
        now=int(now.timestamp()),
        ttl=s.access_token_ttl,
        role=str(user["role"]),
        sid=sid,
        ver=int(user["token_version"]),
    )
    return core_jwt.sign(key, claims)


def _refresh_expiry(bx: Bastion, now: datetime, session_expires_at: datetime) -> datetime:
    # A refresh token never outlives the session it belongs to (SESSION_TTL, absolute).
    return min(now + timedelta(seconds=bx.settings.refresh_token_ttl), session_expires_at)


async def _insert_refresh(
    conn: AsyncConnection,
    bx: Bastion,
    *,
    token_id: str,
    user_id: str,
    session_id: str,
    session_expires_at: datetime,
    now: datetime,
) -> str:
    token = core_secrets.new_token()
    await token_store.insert(
        conn,
        id=token_id,
        token_hash=core_secrets.token_hash(token),
        family_id=session_id,
        user_id=user_id,
        session_id=session_id,
        created_at=now,
        expires_at=_refresh_expiry(bx, now, session_expires_at),
    )
    return token


async def _new_family(bx: Bastion, ctx: RequestContext, signed_in: accounts.SignedIn) -> TokenPair:
    key = await _signing_key(bx)
    session = signed_in.session
    async with bx.db.write() as conn:
        refresh = await _insert_refresh(
            conn,
            bx,
            token_id=core_secrets.new_id(),
            user_id=str(signed_in.user["id"]),
            session_id=session.id,
            session_expires_at=session.expires_at,
            now=ctx.now,
        )
    access = _access_token(bx, key, signed_in.user, session.id, ctx.now)
    return TokenPair(access, bx.settings.access_token_ttl, refresh)


# --- grants --------------------------------------------------------------------------


async def password_grant(
    bx: Bastion, ctx: RequestContext, username: str, password: str
) -> TokenPair:
    """RFC 6749 §4.3 with the lockout and limits of a browser login (SPEC §3)."""
    try:
        result = await accounts.login(bx, ctx, username, password)
    except (InvalidCredentials, InvalidRequest):
        raise InvalidGrant("Invalid username or password.") from None
    if isinstance(result, accounts.MfaRequired):
        raise MfaRequired(result.mfa_token)
    return await _new_family(bx, ctx, result)


async def mfa_grant(bx: Bastion, ctx: RequestContext, mfa_token: str, code: str) -> TokenPair:
    """The second step for API clients: ``mfa_token`` from the password grant and a TOTP
    or backup code. A wrong code or a dead token is ``invalid_grant``."""
    try:
        user = await mfa.complete_mfa_step(bx, ctx, mfa_token, code)
    except (InvalidCode, InvalidMfaToken) as exc:
        raise InvalidGrant(exc.message) from None
    signed_in = await accounts.complete_sign_in(bx, ctx, user, method="mfa")
    return await _new_family(bx, ctx, signed_in)


# Client IPs whose failed refresh grants spent the ``token:ip`` budget, and until when
# (epoch seconds). Only failures are counted: a refresh token is a 256-bit secret, so a
# valid one is no guess, and refreshing costs no limiter round trip. Each process
# learns a block from the shared counter at its own next failure.
_REFRESH_BLOCKED: dict[str, float] = {}
_REFRESH_BLOCKED_MAX = 10_000


async def refresh_grant_limited(bx: Bastion, ctx: RequestContext, refresh_token: str) -> TokenPair:
    """``refresh_grant`` with the ``token:ip`` budget counting its failures."""
    now = ctx.now.timestamp()
    ip = ctx.ip or ""
    until = _REFRESH_BLOCKED.get(ip)
    if until is not None:
        if until > now:
            raise RateLimited(retry_after=max(1, math.ceil(until - now)))
        del _REFRESH_BLOCKED[ip]
    try:
        return await refresh_grant(bx, ctx, refresh_token)
    except InvalidGrant:
        try:
            await accounts.guard(bx, "token:ip", ctx.ip, ctx)
        except RateLimited as exc:
            if len(_REFRESH_BLOCKED) >= _REFRESH_BLOCKED_MAX:
                _REFRESH_BLOCKED.clear()
            _REFRESH_BLOCKED[ip] = now + exc.extra["retry_after"]
            raise
        raise


@dataclass(frozen=True)
class _Outcome:
    pair: TokenPair | None = None
    reused: bool = False


async def refresh_grant(bx: Bastion, ctx: RequestContext, refresh_token: str) -> TokenPair:
    """Rotate a refresh token (RFC 6749 §6, RFC 9700 §4.14.2).

    The conditional UPDATE lets exactly one of any number of concurrent presentations
    win. A token that was already used is a replay: the whole family is revoked (its
    newest token too), its session ended, and ``refresh_token_reused`` audited, unless
    it was used less than REFRESH_REUSE_GRACE seconds ago (a client that lost the answer),
    which gets a new pair of the same family.
    """
    if not refresh_token or len(refresh_token) > MAX_OPAQUE_TOKEN:
        raise InvalidGrant()
    now = ctx.now
    digest = core_secrets.token_hash(refresh_token)
    new_id = core_secrets.new_id()
    key = await _signing_key(bx)
    fast = await _rotate_fast(bx, ctx, key, digest, new_id)
    if fast is not None:
        return fast
    grace = bx.settings.refresh_reuse_grace
    async with bx.db.write() as conn:
        row = await token_store.rotate(conn, digest, new_id, now)
        if row is None and grace > 0:
            row = await token_store.replay_in_grace(
                conn, digest, new_id, now - timedelta(seconds=grace)
            )
        if row is not None:
            outcome = await _rotate(conn, bx, ctx, key, row, new_id)
        else:
            outcome = await _dead_token(conn, ctx, digest)
    if outcome.reused:
        log.warning("refresh token reuse detected; family revoked")
    if outcome.pair is None:
        raise InvalidGrant()
    return outcome.pair


async def _rotate_fast(
    bx: Bastion, ctx: RequestContext, key: core_jwt.SigningKey, digest: str, new_id: str
) -> TokenPair | None:
    """The common case in one statement and one round trip (PostgreSQL); None sends the
    request down the transactional path below, which handles every other case."""
    refresh = core_secrets.new_token()
    row = await token_store.rotate_fast(
        bx.db,
        digest,
        new_id,
        core_secrets.token_hash(refresh),
        ctx.now + timedelta(seconds=bx.settings.refresh_token_ttl),
        ctx.now,
    )
    if row is None:
        return None
    access = _access_token(bx, key, row, str(row["session_id"]), ctx.now)
    return TokenPair(access, bx.settings.access_token_ttl, refresh)


async def _rotate(
    conn: AsyncConnection,
    bx: Bastion,
    ctx: RequestContext,
    key: core_jwt.SigningKey,
    row: RowMapping,
    new_id: str,
) -> _Outcome:
    principal = await token_store.principal(conn, row["user_id"], row["session_id"])
    if principal is None or not session_live(principal, ctx.now):
        # The session was ended (device list, password change...): the grant is over.
        await token_store.revoke_family(conn, row["family_id"], ctx.now)
        return _Outcome()
    refresh = await _insert_refresh(
        conn,
        bx,
        token_id=new_id,
        user_id=str(row["user_id"]),
        session_id=str(row["session_id"]),
        session_expires_at=principal["session_expires_at"],
        now=ctx.now,
    )
    access = _access_token(bx, key, principal, str(row["session_id"]), ctx.now)
    return _Outcome(TokenPair(access, bx.settings.access_token_ttl, refresh))


async def _dead_token(conn: AsyncConnection, ctx: RequestContext, digest: str) -> _Outcome:
    old = await token_store.by_hash(conn, digest)
    if old is None or old["used_at"] is None:
        return _Outcome()  # unknown, expired or revoked: nothing more to do
    await token_store.lock_family(conn, old["family_id"])
    revoked = await token_store.revoke_family(conn, old["family_id"], ctx.now)
    if old["session_id"] is not None:
        await session_store.delete_by_id(conn, old["session_id"], user_id=old["user_id"])
    if revoked:
        # Audited once per family: later replays of a dead family change nothing.
        await audited(
            conn,
            ctx,
            "refresh_token_reused",
            user_id=old["user_id"],
            details={"family_id": old["family_id"], "revoked": revoked},
        )
    return _Outcome(reused=True)


# --- verification --------------------------------------------------------------------


def session_live(principal: RowMapping, now: datetime) -> bool:
    expires = principal["session_expires_at"]
    return principal["live_session_id"] is not None and expires is not None and expires > now


async def verify_access(
    bx: Bastion, token: str, now: datetime | None = None
) -> tuple[dict[str, Any], RowMapping] | None:
    """Claims and the user row (with its session's times) of a valid access token, else
    None: bad signature, unknown kid, other algorithm, no or past ``exp``, wrong ``aud``
    or ``iss``, stale ``ver``, or an ended session."""
    now = now or utcnow()
    s = bx.settings
    claims = _VERIFIED.get((s.base_url, s.jwt_audience, token))
    if claims is not None and claims["exp"] > now.timestamp():
        return await _check_principal(bx, claims, now)
    cache = keys.cache_for(bx)
    key_set = await cache.get()
    try:
        try:
            claims = core_jwt.verify(
                token,
                key_set.verification,
                audience=s.jwt_audience,
                issuer=s.base_url,
                now=now.timestamp(),
            )
        except core_jwt.UnknownKey:
            # Perhaps rotated by another process since our last reload.
            key_set = await cache.get(max_age=keys.FORCED_RELOAD_INTERVAL)
            claims = core_jwt.verify(
                token,
                key_set.verification,
                audience=s.jwt_audience,
                issuer=s.base_url,
                now=now.timestamp(),
            )
    except core_jwt.TokenError:
        return None
    if not isinstance(claims.get("sid"), str) or not isinstance(claims.get("sub"), str):
        return None
    _remember_verified((s.base_url, s.jwt_audience, token), claims)
    return await _check_principal(bx, claims, now)


# Signatures already verified, until their tokens expire: the same access token comes
# back on every request of a client, and its signature cannot change. The user and
# session checks below still run on every request.
_VERIFIED: dict[tuple[str, str, str], dict[str, Any]] = {}
_VERIFIED_MAX = 10_000


def _remember_verified(key: tuple[str, str, str], claims: dict[str, Any]) -> None:
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()  # simple and bounded; a miss only costs one verification
    _VERIFIED[key] = claims


async def _check_principal(
    bx: Bastion, claims: dict[str, Any], now: datetime
) -> tuple[dict[str, Any], Any] | None:
    principal = await token_store.principal_direct(bx.db, claims["sub"], claims["sid"])
    if principal is None or principal["token_version"] != claims["ver"]:
        return None
    if not session_live(principal, now):
        return None
    return claims, principal


async def verify_bearer(bx: Bastion, token: str) -> Authenticated | None:
    """``web.deps.bearer_verifier``: one indexed read per request (user joined with the
    token's session); last active is written at most once a minute like cookies."""
    now = utcnow()
    found = await verify_access(bx, token, now)
    if found is None:
        return None
    claims, principal = found
    if principal["session_last_active_at"] <= now - TOUCH_INTERVAL:
        await touch_last_active(bx, claims["sid"], now)
    return Authenticated(
        user=principal, session_id=claims["sid"], session_expires_at=None, via="bearer"
    )
