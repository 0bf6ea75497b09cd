"""Social login (SPEC §9): start at the provider, come back, and sign in by the rules.

Browser binding: ``state``, the PKCE verifier, the OIDC ``nonce``, the provider name and
the checked ``callbackUrl`` travel in one short-lived signed cookie (HttpOnly,
SameSite=Lax, path ``/api/auth/oauth``), so that a callback is only accepted by the
browser that started it.

Sign-in rules, in order:
1. ``allowed_domains`` (when set) needs a provider-verified email in one of the domains.
2. An existing link (provider + subject) signs in that user.
3. Otherwise an email is required and must be verified by the provider. An existing
   account with that email gets linked; a new one is created (``DEFAULT_ROLE``, email
   verified, no password). Linking an account whose email was never verified locally
   also removes its password and ends its sessions: whoever pre-registered the address
   must not keep access to the real owner's account (pre-hijacking defence).
4. A user with MFA gets the MFA step instead of a session.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from bastion.core import secrets as core_secrets
from bastion.core.emails import is_valid_email, normalize_email
from bastion.core.oauth_config import ProviderConfig, parse_provider
from bastion.core.redirects import safe_redirect
from bastion.flows import accounts, devices
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.oauth_clients import (
    Identity,
    OAuthFailed,
    UnknownProvider,
    authorization_url,
    exchange_code,
    identity,
    iss_parameter_required,
)
from bastion.runtime import Bastion
from bastion.store import oauth_accounts as links
from bastion.store import one_time
from bastion.store import sessions as session_store
from bastion.store import users as user_store

COOKIE = "bastion_oauth"
COOKIE_PATH = "/api/auth/oauth"
STATE_TTL = 600  # seconds a browser has to finish at the provider
_PREFIX = "oauth1:"


@dataclass(frozen=True)
class Pending:
    provider: str
    state: str
    verifier: str
    nonce: str | None
    callback: str
    expires: int


@dataclass(frozen=True)
class Finished:
    result: accounts.SignedIn | accounts.MfaRequired
    callback: str


def provider(bx: Bastion, name: str) -> ProviderConfig:
    entry = bx.settings.oauth_providers.get(name)
    if entry is None:
        raise UnknownProvider()
    return parse_provider(name, entry)


def redirect_uri(bx: Bastion, name: str) -> str:
    return f"{bx.settings.base_url}/api/auth/oauth/{name}/callback"


def _encode(bx: Bastion, pending: Pending) -> str:
    raw = json.dumps(pending.__dict__, separators=(",", ":")).encode()
    return bx.cookies.sign(_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("="))


def _decode(bx: Bastion, cookie: str | None, name: str, now: int) -> Pending:
    expired = OAuthFailed(
        "This sign-in has expired or was started in another browser. Please start again.",
        reason="state_cookie",
    )
    if not cookie or len(cookie) > 4096:
        raise expired
    value = bx.cookies.unsign(cookie)
    if value is None or not value.startswith(_PREFIX):
        raise expired
    try:
        data = value[len(_PREFIX) :]
        pending = Pending(**json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))))
    except (ValueError, TypeError):
        raise expired from None
    if pending.expires < now or pending.provider != name:
        raise expired
    return pending


async def start(
    bx: Bastion, ctx: RequestContext, name: str, callback: str | None
) -> tuple[str, str]:
    """The provider's authorization URL and the cookie that binds it to this browser."""
    cfg = provider(bx, name)
    pending = Pending(
        provider=name,
        state=core_secrets.new_token(),
        verifier=core_secrets.new_token(48),  # 64 characters, RFC 7636 §4.1
        nonce=core_secrets.new_token() if cfg.kind == "oidc" else None,
        callback=safe_redirect(callback),
        expires=int(ctx.now.timestamp()) + STATE_TTL,
    )
    url = await authorization_url(
        cfg,
        redirect_uri(bx, name),
        state=pending.state,
        verifier=pending.verifier,
        nonce=pending.nonce,
    )
    return url, _encode(bx, pending)


async def finish(
    bx: Bastion, ctx: RequestContext, name: str, params: dict[str, str], cookie: str | None
) -> Finished:
    """Check the callback against the browser's cookie, get the identity from the
    provider, and sign in by the rules above."""
    cfg = provider(bx, name)
    pending = _decode(bx, cookie, name, int(ctx.now.timestamp()))
    state = params.get("state") or ""
    if not core_secrets.constant_time_equals(state, pending.state):
        raise OAuthFailed(
            "The sign-in response does not belong to this browser (state mismatch). "
            "Please start again.",
            reason="state_mismatch",
        )
    if params.get("error"):
        denied = params["error"] == "access_denied"
        raise OAuthFailed(
            f"You did not allow {cfg.display_name} to sign you in."
            if denied
            else f"{cfg.display_name} could not sign you in.",
            reason="provider_error:" + params["error"][:64],
            status=403 if denied else 400,
        )
    iss = params.get("iss")
    if (iss is not None and iss != cfg.issuer) or (
        iss is None and await iss_parameter_required(cfg)
    ):
        raise OAuthFailed("The sign-in response came from another issuer.", reason="iss")
    code = params.get("code")
    if not code or len(code) > 2048:
        raise OAuthFailed("The provider sent no sign-in code.", reason="missing_code")
    token = await exchange_code(cfg, redirect_uri(bx, name), code, pending.verifier)
    ident = await identity(cfg, token, pending.nonce)
    user = await _user_for(bx, ctx, cfg, ident)
    return Finished(await _sign_in(bx, ctx, cfg, user), pending.callback)


async def _user_for(
    bx: Bastion, ctx: RequestContext, cfg: ProviderConfig, ident: Identity
) -> RowMapping:
    email = normalize_email(ident.email) if ident.email else None
    if email is not None and not is_valid_email(email):
        email = None
    if cfg.allowed_domains and not (email and ident.email_verified and cfg.domain_allowed(email)):
        raise OAuthFailed(
            f"Sign-in with {cfg.display_name} is limited to accounts of "
            + ", ".join(cfg.allowed_domains)
            + ".",
            reason="domain_not_allowed",
            status=403,
        )
    for attempt in range(2):  # a parallel first sign-in may win the race; then it is a link
        try:
            return await _resolve(bx, ctx, cfg, ident, email)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _resolve(
    bx: Bastion, ctx: RequestContext, cfg: ProviderConfig, ident: Identity, email: str | None
) -> RowMapping:
    async with bx.db.write() as conn:
        existing = await links.find(conn, cfg.name, ident.subject)
        if existing is not None:
            if email and ident.email_verified and existing["email"] != email:
                await links.update_email(conn, existing["id"], email)
            user = await user_store.get_by_id(conn, existing["user_id"])
            assert user is not None  # noqa: S101 - the link cascades with its user
            return user
        if email is None:
            raise OAuthFailed(
                f"Your {cfg.display_name} account did not share an email address, which "
                "Bastion needs to sign you in.",
                reason="no_email",
            )
        if not ident.email_verified:
            # Linking on an unverified claim would hand the account to whoever typed the
            # address at the provider (account takeover).
            raise OAuthFailed(
                f"{cfg.display_name} has not verified the email address {email}. Verify it "
                f"with {cfg.display_name} first, or sign in with your password.",
                reason="email_unverified",
                status=403,
            )
        user = await user_store.get_by_email(conn, email)
        created = user is None
        if user is None:
            user_id = core_secrets.new_id()
            await user_store.insert_new(
                conn,
                id=user_id,
                email=email,
                name=ident.name,
                password_hash=None,
                role=bx.settings.default_role,
                email_verified=True,
                now=ctx.now,
            )
            await _audit(conn, ctx, "registered", user_id, {"method": f"oauth:{cfg.name}"})
        else:
            user_id = user["id"]
            if not user["email_verified"]:
                await _take_over_from_pre_registration(conn, ctx, user_id)
        await links.link(
            conn,
            user_id=user_id,
            provider=cfg.name,
            subject=ident.subject,
            email=email,
            now=ctx.now,
        )
        await _audit(
            conn,
            ctx,
            "oauth_linked",
            user_id,
            {"provider": cfg.name, "email": email, "new_account": created},
        )
        fresh = await user_store.get_by_id(conn, user_id)
    assert fresh is not None  # noqa: S101
    return fresh


async def _take_over_from_pre_registration(conn: Any, ctx: RequestContext, user_id: str) -> None:
    """The provider proved the address; the local account never did. Whoever set its
    password is not known to own the address: drop the password and every session."""
    await user_store.update_fields(
        conn, user_id, email_verified=True, password_hash=None, updated_at=ctx.now
    )
    await user_store.bump_token_version(conn, user_id, ctx.now)
    await session_store.delete_for_user(conn, user_id)
    await devices.revoke_refresh(conn, user_id, ctx)
    await _audit(
        conn, ctx, "email_verified", user_id, {"method": "oauth", "password_removed": True}
    )


async def _audit(
    conn: Any, ctx: RequestContext, action: str, user_id: str, details: dict[str, Any]
) -> None:
    await audited(conn, ctx, action, user_id=user_id, actor_id=user_id, details=details)


async def _sign_in(
    bx: Bastion, ctx: RequestContext, cfg: ProviderConfig, user: RowMapping
) -> accounts.SignedIn | accounts.MfaRequired:
    method = f"oauth:{cfg.name}"
    if user["mfa_enabled"]:
        async with bx.db.write() as conn:
            token = await one_time.issue(
                conn,
                user_id=user["id"],
                purpose="mfa",
                now=ctx.now,
                ttl=bx.settings.mfa_token_ttl,
                data={"method": method},
                void_older=False,
            )
            await accounts.log_user_attempt(conn, ctx, user, success=True, reason="mfa_pending")
        return accounts.MfaRequired(token)
    return await accounts.complete_sign_in(bx, ctx, user, method=method)


async def linked_accounts(bx: Bastion, user_id: str) -> list[RowMapping]:
    async with bx.db.read() as conn:
        return await links.for_user(conn, user_id)
