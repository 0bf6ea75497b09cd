"""Registration, sign-in, sign-out and password change (SPEC §3, §4)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from bastion.core import secrets as core_secrets
from bastion.core.emails import is_valid_email, normalize_email
from bastion.core.passwords import MAX_LENGTH, normalize, policy_violations
from bastion.flows import devicecookie, devices, locations, lockout
from bastion.flows import sessions as session_flow
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.errors import (
    AccountLocked,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidRequest,
    RateLimited,
    WeakPassword,
)
from bastion.limits import Count
from bastion.limits.database import DatabaseLimiter
from bastion.limits.policy import budget
from bastion.mail import outbox
from bastion.runtime import Bastion
from bastion.store import attempts, audit, direct, one_time
from bastion.store import sessions as session_store
from bastion.store import users as user_store
from bastion.store.direct import Steps, run_in, together


@dataclass(frozen=True)
class SignedIn:
    user: RowMapping
    session: session_flow.NewSession
    device_cookie: str


@dataclass(frozen=True)
class MfaRequired:
    mfa_token: str


def check_email(raw: str) -> str:
    email = normalize_email(raw)
    if not is_valid_email(email):
        raise InvalidRequest("Enter a valid email address.", details=["email: invalid"])
    return email


def check_password_length(password: str) -> None:
    if len(normalize(password)) > MAX_LENGTH:
        raise InvalidRequest(
            f"Passwords are at most {MAX_LENGTH} characters.",
            details=[f"password: at most {MAX_LENGTH} characters"],
        )


def check_policy(bx: Bastion, password: str, email: str, mfa_enabled: bool = False) -> None:
    problems = policy_violations(
        password, policy=bx.settings.password_policy, email=email, mfa_enabled=mfa_enabled
    )
    if problems:
        raise WeakPassword(problems)


async def register(
    bx: Bastion, ctx: RequestContext, email: str, password: str, name: str | None
) -> SignedIn:
    email = check_email(email)
    check_policy(bx, password, email)
    await guard(bx, "register:ip", ctx.ip, ctx)
    async with bx.db.read() as conn:
        if await user_store.get_by_email(conn, email) is not None:
            raise EmailTaken()
    password_hash = await bx.hash_password(password)
    user_id = core_secrets.new_id()
    try:
        async with bx.db.write() as conn:
            await user_store.insert_new(
                conn,
                id=user_id,
                email=email,
                name=name,
                password_hash=password_hash,
                role=bx.settings.default_role,
                email_verified=False,
                now=ctx.now,
            )
            session = await session_flow.create(conn, bx, user_id, ctx)
            await remember_device(conn, user_id, session.device, ctx)
            await locations.note_session(
                conn, user_id, session.id, session.device.get("location"), ctx.now
            )
            await send_verification(conn, bx, user_id, email, ctx)
            await audited(conn, ctx, "registered", user_id=user_id, actor_id=user_id)
            user = await user_store.get_by_id(conn, user_id)
    except IntegrityError:
        raise EmailTaken() from None
    assert user is not None  # noqa: S101 - inserted above in this transaction
    return SignedIn(user, session, devicecookie.issue(bx.device, ctx.device_cookie, user_id))


async def send_verification(
    conn: Any, bx: Bastion, user_id: str, email: str, ctx: RequestContext
) -> None:
    """Void older verification links and mail a new one (same transaction)."""
    token = await one_time.issue(
        conn,
        user_id=user_id,
        purpose="verify_email",
        now=ctx.now,
        ttl=bx.settings.verify_token_ttl,
    )
    await outbox.enqueue(
        conn,
        recipient=email,
        event="email_verification",
        base_url=bx.settings.base_url,
        now=ctx.now,
        link=f"{bx.settings.base_url}/verify-email?token={token}",
        hours=max(1, bx.settings.verify_token_ttl // 3600),
    )


async def guard(bx: Bastion, name: str, subject: str | None, ctx: RequestContext) -> None:
    """Count one request against the named budget (limits/policy.py) for ``subject``
    (an IP, an email, a user id); 429 once it is spent."""
    limit, window = budget(bx.settings.rate_limits, name)
    count = await bx.limiter.hit(f"{name}:{subject}", window, ctx.now)
    if count.count > limit:
        raise RateLimited(retry_after=count.retry_after)


async def remember_device(
    conn: Any, user_id: str, device: dict[str, Any], ctx: RequestContext
) -> bool:
    """Record the browser/OS/device type; True when it was never seen for this user."""
    from bastion.store import devices as device_store

    fingerprint = device_store.fingerprint(device)
    return await device_store.remember(conn, user_id, fingerprint, device.get("location"), ctx.now)


async def login(
    bx: Bastion, ctx: RequestContext, email: str, password: str
) -> SignedIn | MfaRequired:
    """Password sign-in. Order matters: IP budget, then the account's lockout slot
    (taken before hashing), then the password."""
    s = bx.settings
    email = normalize_email(email)[:254]
    check_password_length(password)
    ip_key = f"login-fail:ip:{ctx.ip}"
    ip_state, user, taken = await _opened(bx, ctx, email, ip_key)
    if ip_state.count >= s.ip_failure_limit:
        await _record(bx, ctx, email, None, False, "rate_limited")
        raise RateLimited(retry_after=ip_state.retry_after)
    if user is None:
        # Same work as for a wrong password: a lockout reservation (on no row, in
        # ``_opened``) and a hash, so that timing does not tell which emails have
        # accounts (SPEC §3).
        await bx.verify_password(None, password)
        await bx.limiter.hit(ip_key, s.ip_failure_window, ctx.now)
        await _record(bx, ctx, email, None, False, "unknown_email", audit_failure=True)
        raise InvalidCredentials()

    device_id = devicecookie.device_id_for(bx.device, ctx.device_cookie, user["id"])
    counter = lockout.Counter(user["id"], device_id)
    try:
        if not taken:
            await lockout.reserve(bx.db, counter, s.lockout_threshold, s.lockout_duration)
    except AccountLocked:
        await _record(bx, ctx, email, user["id"], False, "account_locked", audit_failure=True)
        raise

    if not await bx.verify_password(user["password_hash"], password):
        await bx.limiter.hit(ip_key, s.ip_failure_window, ctx.now)
        async with bx.db.write() as conn:
            await record_failure(conn, bx, ctx, user, counter, "invalid_password")
        raise InvalidCredentials()

    if user["mfa_enabled"]:
        # Half a success: give back this attempt's slot only. Earlier failures (wrong
        # MFA codes included) stay counted until the MFA step succeeds, so re-entering
        # the right password does not reset the count (flows/mfa.py).
        from bastion.flows.mfa import give_back_login_slot

        await give_back_login_slot(bx, user["id"], device_id)
    if bx.hasher.needs_rehash(user["password_hash"]):
        new_hash = await bx.hash_password(password)
        async with bx.db.write() as conn:
            await user_store.update_fields(conn, user["id"], password_hash=new_hash)
    if s.require_verified_email and not user["email_verified"]:
        # Only after the password checked out: a wrong password stays a plain 401.
        if not user["mfa_enabled"]:
            await lockout.release_on_success(bx.db, counter)
        await _record(bx, ctx, email, user["id"], False, "email_not_verified")
        raise EmailNotVerified()
    if user["mfa_enabled"]:
        async with bx.db.write() as conn:
            token = await one_time.issue(
                conn,
                user_id=user["id"],
                purpose="mfa",
                now=ctx.now,
                ttl=s.mfa_token_ttl,
                void_older=False,
            )
            await log_user_attempt(conn, ctx, user, success=True, reason="mfa_pending")
        return MfaRequired(token)
    # The lockout slots are freed in the sign-in's own transaction (one round trip less).
    return await complete_sign_in(bx, ctx, user, method="password", release=counter)


async def _opened(
    bx: Bastion, ctx: RequestContext, email: str, ip_key: str
) -> tuple[Count, RowMapping | None, bool]:
    """A sign-in's first reads, in as few round trips as its counter allows: the IP's
    failure count, the user, and whether the account's lockout slot was taken. With a
    device cookie the counter may be the device's, which needs the user's id: the
    slot is then ``reserve``'s, after the user read. Without one, the user read and
    the account's slot go out together, and with the database limiter the IP's count
    too (the slot is then taken only while the IP is within its budget)."""
    s = bx.settings
    limiter = bx.limiter
    # The database limiter's count can go out with the user read and the slot.
    batched = limiter if isinstance(limiter, DatabaseLimiter) and not ctx.device_cookie else None
    ip_state = Count(0, 0)
    if batched is None:
        ip_state = await limiter.peek(ip_key, ctx.now)
        if ip_state.count >= s.ip_failure_limit:
            return ip_state, None, False
    take = functools.partial(lockout.taken_by_email, email, s.lockout_threshold, ctx.now)
    if ctx.device_cookie:
        user = await user_store.get_by_email_direct(bx.db, email)
        if user is None:  # the slot an account's counter would have taken (timing)
            await direct.transaction(bx.db, take(), autocommit=True)
        return ip_state, user, False
    counted, user, taken = await direct.transaction(
        bx.db,
        together(
            None if batched is None else batched.peeked(ip_key, ctx.now),
            user_store.by_email(email),
            take(None if batched is None else (ip_key, s.ip_failure_limit)),
        ),
        autocommit=True,
    )
    return (ip_state if batched is None else counted), user, taken


async def complete_sign_in(
    bx: Bastion,
    ctx: RequestContext,
    user: RowMapping,
    *,
    method: str,
    release: lockout.Counter | None = None,
) -> SignedIn:
    """Issue a fresh session (never reuse one: no fixation), log and audit it, and
    alert on a device never seen for this user, in one transaction on the driver
    (store/direct.py: every sign-in runs it). ``release``: the lockout counter whose
    slots this successful password sign-in frees, in the same transaction."""
    device = session_flow.describe_device(ctx.user_agent, ctx.ip)
    fresh, session, mailed = await direct.transaction(
        bx.db, _signed_in(bx, ctx, user, method, release, device)
    )
    if mailed:
        bx.mail_wakeup.set()
    return SignedIn(fresh, session, devicecookie.issue(bx.device, ctx.device_cookie, user["id"]))


def _signed_in(
    bx: Bastion,
    ctx: RequestContext,
    user: RowMapping,
    method: str,
    release: lockout.Counter | None,
    device: dict[str, Any],
) -> Steps[tuple[RowMapping, session_flow.NewSession, bool]]:
    """The sign-in's transaction: the session, the known device, the location, the attempt
    log and the audit event, then the new device alert; the user row as it now is. All
    but the alert are independent of each other (no part reads what another writes): on
    PostgreSQL they go out as one statement (``direct.together``; BEGIN, it, COMMIT).

    The audit append takes the chain's lock after the statement's row locks, as every
    other transaction that appends does: it returns nothing, and PostgreSQL runs the
    data-modifying parts that return nothing after those whose rows the statement reads
    (the lockout release, the known-device upsert); the others that return nothing (the
    session and attempt-log inserts) take no lock another transaction holds. What a
    second round may still write (a location baseline row, the unusual-location flag on
    the new session) only the user's own sign-ins write too, and they take the audit
    lock in their first round: none of them can hold such a row while waiting for it."""
    from bastion.store import devices as device_store

    user_id = user["id"]
    fingerprint = device_store.fingerprint(device)
    location = device.get("location")
    sid = core_secrets.new_id()
    # The account's counter is the user row: its release answers the row as it now is
    # (a device's counter is a row of its own, and the user row is read beside it).
    account_counter = release is not None and release.device_id is None
    released, read, session, is_new, others, _, _, _ = yield from together(
        None if release is None else lockout.released(release),
        None if account_counter else user_store.by_id(user_id),
        session_flow.created(bx, user_id, ctx, device, sid=sid),
        device_store.remembered(user_id, fingerprint, location, ctx.now),
        # Read in the same snapshot as the insert above, so the device being remembered
        # is not among the others either way.
        device_store.others_known(user_id, fingerprint),
        locations.noted(user_id, sid, location, ctx.now),
        _attempt(ctx, user, success=True, reason=None),
        audit.appended(
            "login_succeeded",
            now=ctx.now,
            user_id=user_id,
            actor_id=user_id,
            ip_address=ctx.ip,
            user_agent=ctx.user_agent,
            details={"method": method},
        ),
    )
    # The first sign-in of an account sends no alert: only a new device among others
    # already known does (the one just remembered is not counted).
    alert = is_new and others
    if alert:
        yield from outbox.queued(
            recipient=user["email"],
            event="new_device",
            base_url=bx.settings.base_url,
            now=ctx.now,
            device=device.get("device_name") or "Unknown device",
            location=location,
            ip=ctx.ip,
        )
    fresh = released if account_counter else read
    assert fresh is not None  # noqa: S101 - the user signing in
    return fresh, session, alert


def _attempt(
    ctx: RequestContext, user: RowMapping, *, success: bool, reason: str | None
) -> Steps[None]:
    """The attempt-log row of a known user's sign-in step."""
    yield from attempts.logged(
        email=user["email"],
        user_id=user["id"],
        ip_address=ctx.ip,
        user_agent=ctx.user_agent,
        success=success,
        failure_reason=reason,
        now=ctx.now,
    )


async def log_user_attempt(
    conn: Any, ctx: RequestContext, user: RowMapping, *, success: bool, reason: str | None
) -> None:
    """``_attempt`` in the caller's transaction."""
    await run_in(conn, _attempt(ctx, user, success=success, reason=reason))


async def record_failure(
    conn: Any,
    bx: Bastion,
    ctx: RequestContext,
    user: RowMapping,
    counter: lockout.Counter,
    reason: str,
) -> None:
    """A failed sign-in step (password or MFA code), in the caller's transaction: the
    attempt log, the audit trail, and the lock when this failure filled the last slot."""
    s = bx.settings
    await log_user_attempt(conn, ctx, user, success=False, reason=reason)
    await audited(conn, ctx, "login_failed", user_id=user["id"], details={"reason": reason})
    if await lockout.lock_if_full(conn, counter, s.lockout_threshold, s.lockout_duration, ctx.now):
        await _locked(conn, bx, user, ctx, by_device=counter.device_id is not None)


async def _locked(
    conn: Any, bx: Bastion, user: RowMapping, ctx: RequestContext, *, by_device: bool
) -> None:
    await audited(
        conn,
        ctx,
        "account_locked",
        user_id=user["id"],
        details={"duration": bx.settings.lockout_duration, "device": by_device},
    )
    await outbox.enqueue(
        conn,
        recipient=user["email"],
        event="account_locked",
        base_url=bx.settings.base_url,
        now=ctx.now,
        minutes=max(1, bx.settings.lockout_duration // 60),
        ip=ctx.ip,
    )


async def _record(
    bx: Bastion,
    ctx: RequestContext,
    email: str,
    user_id: str | None,
    success: bool,
    reason: str | None,
    *,
    audit_failure: bool = False,
) -> None:
    async with bx.db.write() as conn:
        await attempts.record(
            conn,
            email=email,
            user_id=user_id,
            ip_address=ctx.ip,
            user_agent=ctx.user_agent,
            success=success,
            failure_reason=reason,
            now=ctx.now,
        )
        if audit_failure:
            await audited(
                conn,
                ctx,
                "login_failed",
                user_id=user_id,
                details={"reason": reason, "email": email},
            )


async def logout(bx: Bastion, session_id: str | None) -> None:
    if session_id is None:
        return
    async with bx.db.write() as conn:
        await session_store.delete_by_id(conn, session_id)


async def change_password(
    bx: Bastion,
    ctx: RequestContext,
    user: RowMapping,
    session_id: str | None,
    current_password: str,
    new_password: str,
) -> None:
    """Re-check the current password, apply the policy, end every other session and all
    refresh tokens, bump the token version, and tell the owner (SPEC §4)."""
    check_password_length(current_password)
    check_password_length(new_password)
    await guard(bx, "password-change:user", user["id"], ctx)
    if not await bx.verify_password(user["password_hash"], current_password):
        raise InvalidCredentials("The current password is not correct.")
    check_policy(bx, new_password, user["email"], bool(user["mfa_enabled"]))
    new_hash = await bx.hash_password(new_password)
    async with bx.db.write() as conn:
        await user_store.update_fields(
            conn,
            user["id"],
            password_hash=new_hash,
            password_changed_at=ctx.now,
            updated_at=ctx.now,
        )
        await password_replaced(
            conn, bx, ctx, user["id"], user["email"], "password_changed", keep=session_id
        )


async def password_replaced(
    conn: Any,
    bx: Bastion,
    ctx: RequestContext,
    user_id: str,
    email: str,
    action: str,
    *,
    keep: str | None = None,
) -> None:
    """What a new password ends and tells, in the transaction that set it (a change or a
    reset, SPEC §4): the access tokens issued before it (token version), every session
    but ``keep``, every refresh token; then the audit event ``action`` and the
    password-changed mail to the owner."""
    await user_store.bump_token_version(conn, user_id, ctx.now)
    await session_store.delete_for_user(conn, user_id, keep=keep)
    await devices.revoke_refresh(conn, user_id, ctx)
    await audited(conn, ctx, action, user_id=user_id, actor_id=user_id)
    await outbox.enqueue(
        conn,
        recipient=email,
        event="password_changed",
        base_url=bx.settings.base_url,
        now=ctx.now,
        ip=ctx.ip,
    )
