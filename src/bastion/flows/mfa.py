"""TOTP multi-factor authentication: setup, enable, the sign-in step, disable and backup
codes (SPEC §6, §3, §4).

The sign-in step (:func:`complete_mfa_step`) is shared by ``/api/auth/mfa/verify`` and
the token endpoint's ``grant_type=mfa``; it checks the second factor and consumes the
MFA-step token but creates no session, so each caller issues what it needs.

Guessing is bounded three ways: each MFA-step token allows 5 attempts, taken *before*
the code is checked (parallel guesses cannot exceed it); every wrong code counts toward
the account lockout like a wrong password; and ``mfa:ip`` / ``mfa:user`` budgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from bastion.core import totp
from bastion.core.secrets import derive_key
from bastion.flows import accounts, devicecookie, lockout
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.errors import (
    AccountLocked,
    Conflict,
    InvalidCode,
    InvalidCredentials,
    InvalidMfaToken,
    MfaAlreadyEnabled,
)
from bastion.mail import outbox
from bastion.runtime import Bastion
from bastion.store import mfa as mfa_store
from bastion.store import users as user_store

MFA_TOKEN_ATTEMPTS = 5  # SPEC §3: after 5 wrong codes the mfa_token is dead


class MfaNotEnabled(Conflict):
    code, message = "mfa_not_enabled", "Two-factor authentication is not enabled."


class MfaSetupRequired(Conflict):
    code, message = "mfa_setup_required", "Start two-factor setup first."


@dataclass(frozen=True)
class Enrollment:
    secret: str
    otpauth_uri: str
    qr_svg: str
    backup_codes: list[str]


# --- settings side: the signed-in user manages MFA ---------------------------------


async def _recheck_password(bx: Bastion, user: RowMapping, password: str) -> None:
    accounts.check_password_length(password)
    if not await bx.verify_password(user["password_hash"], password):
        raise InvalidCredentials("The password is not correct.")


async def setup(bx: Bastion, ctx: RequestContext, user: RowMapping, password: str) -> Enrollment:
    """Create a pending secret and 10 backup codes; MFA stays off until :func:`enable`.
    A second setup before enabling replaces the pending secret and codes."""
    await accounts.guard(bx, "mfa:user", user["id"], ctx)
    if user["mfa_enabled"]:
        raise MfaAlreadyEnabled()
    await _recheck_password(bx, user, password)
    secret = totp.new_secret()
    codes = totp.new_backup_codes()
    async with bx.db.write() as conn:
        fresh = await user_store.get_by_id(conn, user["id"])
        if fresh is None or fresh["mfa_enabled"]:
            raise MfaAlreadyEnabled()
        await user_store.update_fields(
            conn,
            user["id"],
            mfa_pending_secret=bx.encryptor.encrypt(secret),
            updated_at=ctx.now,
        )
        await mfa_store.replace_backup_codes(conn, user["id"], [_code_hash(bx, c) for c in codes])
    uri = totp.provisioning_uri(secret, user["email"])
    return Enrollment(secret, uri, totp.qr_svg(uri), codes)


async def enable(bx: Bastion, ctx: RequestContext, user: RowMapping, code: str) -> RowMapping:
    """Confirm the pending secret with a current code and switch MFA on."""
    await accounts.guard(bx, "mfa:user", user["id"], ctx)
    if user["mfa_enabled"]:
        raise MfaAlreadyEnabled()
    cipher = user["mfa_pending_secret"]
    secret = bx.encryptor.decrypt(cipher) if cipher else None
    if secret is None:
        raise MfaSetupRequired()
    step = totp.verify(secret, code, ctx.now)
    if step is None:
        raise InvalidCode()
    async with bx.db.write() as conn:
        fresh = await user_store.get_by_id(conn, user["id"])
        if fresh is None or fresh["mfa_enabled"]:
            raise MfaAlreadyEnabled()
        if fresh["mfa_pending_secret"] != cipher:
            raise MfaSetupRequired("Setup was restarted; use the newest secret.")
        await user_store.update_fields(
            conn,
            user["id"],
            mfa_enabled=True,
            mfa_secret=cipher,
            mfa_pending_secret=None,
            mfa_last_step=step,  # the code just shown cannot sign in again
            updated_at=ctx.now,
        )
        await _audit(conn, "mfa_enabled", user, ctx)
        await _mail(conn, bx, user, "mfa_enabled", ctx)
        updated = await user_store.get_by_id(conn, user["id"])
    assert updated is not None  # noqa: S101
    return updated


async def disable(
    bx: Bastion, ctx: RequestContext, user: RowMapping, password: str, code: str
) -> RowMapping:
    """Switch MFA off after the password and a current code (or a backup code)."""
    await accounts.guard(bx, "mfa:user", user["id"], ctx)
    if not user["mfa_enabled"]:
        raise MfaNotEnabled()
    await _recheck_password(bx, user, password)
    async with bx.db.write() as conn:
        method = await _use_second_factor(conn, bx, user, code, ctx.now)
        if method is None:
            raise InvalidCode()
        await user_store.update_fields(
            conn,
            user["id"],
            mfa_enabled=False,
            mfa_secret=None,
            mfa_pending_secret=None,
            mfa_last_step=None,
            updated_at=ctx.now,
        )
        await mfa_store.delete_backup_codes(conn, user["id"])
        await mfa_store.void_tokens(conn, user["id"], ctx.now)
        await _audit(conn, "mfa_disabled", user, ctx, {"method": method})
        await _mail(conn, bx, user, "mfa_disabled", ctx)
        updated = await user_store.get_by_id(conn, user["id"])
    assert updated is not None  # noqa: S101
    return updated


async def regenerate_backup_codes(
    bx: Bastion, ctx: RequestContext, user: RowMapping, password: str
) -> list[str]:
    """Ten new codes; every older code, used or not, stops working."""
    await accounts.guard(bx, "mfa:user", user["id"], ctx)
    if not user["mfa_enabled"]:
        raise MfaNotEnabled()
    await _recheck_password(bx, user, password)
    codes = totp.new_backup_codes()
    async with bx.db.write() as conn:
        await mfa_store.replace_backup_codes(conn, user["id"], [_code_hash(bx, c) for c in codes])
        await _audit(conn, "backup_codes_regenerated", user, ctx, {"count": len(codes)})
    return codes


# --- sign-in side: the second step after a right password ----------------------------


async def complete_mfa_step(
    bx: Bastion, ctx: RequestContext, mfa_token: str, code: str
) -> RowMapping:
    """Check the second factor for an MFA-step token and consume the token.

    Returns the user row; creates no session (callers: ``/mfa/verify`` calls
    ``accounts.complete_sign_in``, the token endpoint issues tokens). Raises
    ``InvalidMfaToken`` (unknown, used, expired or out of attempts), ``InvalidCode``,
    ``AccountLocked`` or ``RateLimited``.
    """
    await accounts.guard(bx, "mfa:ip", ctx.ip, ctx)
    async with bx.db.write() as conn:
        slot = await mfa_store.reserve_token_attempt(conn, mfa_token, ctx.now, MFA_TOKEN_ATTEMPTS)
    if slot is None:
        raise InvalidMfaToken()
    user_id = slot["user_id"]
    await accounts.guard(bx, "mfa:user", user_id, ctx)
    async with bx.db.read() as conn:
        user = await user_store.get_by_id(conn, user_id)
    if user is None or not user["mfa_enabled"]:
        raise InvalidMfaToken()
    device_id = devicecookie.device_id_for(bx.device, ctx.device_cookie, user_id)
    async with bx.db.read() as conn:
        until = await mfa_store.locked_until(conn, user_id, device_id)
    if until is not None and until > ctx.now:
        raise AccountLocked(retry_after=max(1, int((until - ctx.now).total_seconds()) + 1))

    async with bx.db.write() as conn:
        method = await _use_second_factor(conn, bx, user, code, ctx.now)
        if method is not None:
            if not await mfa_store.consume_token(conn, mfa_token, ctx.now):
                # Another request finished this step first: raising rolls back our use
                # of the code, so it stays available.
                raise InvalidMfaToken()
            await mfa_store.reset_counter(conn, user_id, device_id)
            if method == "backup_code":
                await _backup_code_used(conn, bx, user, ctx)
    if method is None:
        await _wrong_code(bx, ctx, user, mfa_token, device_id)
        raise InvalidCode()
    await _rotate_secret(bx, user)
    async with bx.db.read() as conn:
        fresh = await user_store.get_by_id(conn, user_id)
    if fresh is None:
        raise InvalidMfaToken()
    return fresh


async def _use_second_factor(
    conn: Any, bx: Bastion, user: RowMapping, code: str, now: datetime
) -> str | None:
    """In the caller's transaction: "totp" or "backup_code" when ``code`` is accepted
    (and now used), None otherwise."""
    if totp.normalize_totp(code) is not None:
        secret = bx.encryptor.decrypt(user["mfa_secret"]) if user["mfa_secret"] else None
        if secret is None:
            return None
        step = totp.verify(secret, code, now, last_step=user["mfa_last_step"])
        # The read above may be stale: the conditional UPDATE is the real replay guard.
        if step is not None and await mfa_store.accept_step(conn, user["id"], step):
            return "totp"
        return None
    if totp.normalize_backup_code(code) is not None:
        # Newest key first; older keys of the ring keep codes valid across rotation.
        for secret_key in bx.settings.secret_ring:
            digest = totp.backup_code_hash(code, derive_key(secret_key, "backup-codes"))
            if await mfa_store.use_backup_code(conn, user["id"], digest, now):
                return "backup_code"
    return None


def _code_hash(bx: Bastion, code: str) -> str:
    return totp.backup_code_hash(code, derive_key(bx.settings.root_secret, "backup-codes"))


async def _wrong_code(
    bx: Bastion, ctx: RequestContext, user: RowMapping, mfa_token: str, device_id: str | None
) -> None:
    counter = lockout.Counter(user["id"], device_id)
    async with bx.db.write() as conn:
        # A device row normally exists since the login; make sure the failure counts.
        await lockout.ensure_row_in(conn, counter)
        await mfa_store.kill_token_if_spent(conn, mfa_token, ctx.now, MFA_TOKEN_ATTEMPTS)
        await mfa_store.add_failure(conn, user["id"], device_id)
        await accounts.record_failure(conn, bx, ctx, user, counter, "invalid_mfa_code")


async def _backup_code_used(conn: Any, bx: Bastion, user: RowMapping, ctx: RequestContext) -> None:
    remaining = await mfa_store.remaining_backup_codes(conn, user["id"])
    await _audit(conn, "backup_code_used", user, ctx, {"remaining": remaining})
    await _mail(conn, bx, user, "backup_code_used", ctx, remaining=remaining)


async def _rotate_secret(bx: Bastion, user: RowMapping) -> None:
    """Re-encrypt the secret under the newest key while old keys are configured
    (``BASTION_OLD_SECRET_KEYS``), so a rotation completes as users sign in."""
    cipher = user["mfa_secret"]
    if not cipher or len(bx.settings.secret_ring) < 2:
        return
    async with bx.db.write() as conn:
        await mfa_store.replace_secret_ciphertext(
            conn, user["id"], cipher, bx.encryptor.rotate(cipher)
        )


async def give_back_login_slot(bx: Bastion, user_id: str, device_id: str | None) -> None:
    """Called by login when the password was right and the MFA step is still due."""
    async with bx.db.write() as conn:
        await mfa_store.give_back_slot(conn, user_id, device_id)


async def _audit(
    conn: Any,
    action: str,
    user: RowMapping,
    ctx: RequestContext,
    details: dict[str, Any] | None = None,
) -> None:
    await audited(conn, ctx, action, user_id=user["id"], actor_id=user["id"], details=details)


async def _mail(
    conn: Any, bx: Bastion, user: RowMapping, event: str, ctx: RequestContext, **extra: Any
) -> None:
    await outbox.enqueue(
        conn,
        recipient=user["email"],
        event=event,
        base_url=bx.settings.base_url,
        now=ctx.now,
        ip=ctx.ip,
        **extra,
    )
