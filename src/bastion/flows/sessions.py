"""Browser sessions: creation at sign-in, validation on every request (the hot path)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.core import secrets as core_secrets
from bastion.flows.context import RequestContext
from bastion.runtime import Bastion
from bastion.store import direct
from bastion.store import sessions as session_store
from bastion.store.direct import Steps, run_in

TOUCH_INTERVAL = timedelta(minutes=1)  # SPEC §7: last active written at most once a minute


@dataclass(frozen=True)
class NewSession:
    id: str
    token: str
    expires_at: datetime
    device: dict[str, Any]


@dataclass(frozen=True)
class Authenticated:
    """Who is calling, and through which session (cookie) or token (bearer)."""

    user: RowMapping
    session_id: str | None
    session_expires_at: datetime | None
    via: str  # "cookie" or "bearer"


def _no_device(user_agent: str | None, ip: str | None) -> dict[str, Any]:
    return {}


# Replaced by the device module when present (user agent and IP -> device details).
describe_device: Callable[[str | None, str | None], dict[str, Any]] = _no_device


def created(
    bx: Bastion,
    user_id: str,
    ctx: RequestContext,
    device: dict[str, Any] | None = None,
    sid: str | None = None,
) -> Steps[NewSession]:
    """A new session row: a fresh random token (never a reused one: no fixation).
    ``device``: ``describe_device``'s answer when the caller has it already; ``sid``:
    the new session's id when the caller needs it first (``core_secrets.new_id``)."""
    token = core_secrets.new_token()
    sid = sid or core_secrets.new_id()
    expires = ctx.now + timedelta(seconds=bx.settings.session_ttl)
    if device is None:
        device = describe_device(ctx.user_agent, ctx.ip)
    yield from session_store.add(
        id=sid,
        token_hash=core_secrets.token_hash(token),
        user_id=user_id,
        created_at=ctx.now,
        expires_at=expires,
        last_active_at=ctx.now,
        ip_address=ctx.ip,
        user_agent=(ctx.user_agent or "")[:512] or None,
        **device,
    )
    return NewSession(sid, token, expires, device)


async def create(
    conn: AsyncConnection, bx: Bastion, user_id: str, ctx: RequestContext
) -> NewSession:
    return await run_in(conn, created(bx, user_id, ctx))


async def validate(bx: Bastion, token: str, now: datetime) -> Authenticated | None:
    """The session for a cookie value, or None. One indexed read; a write at most once
    a minute per session."""
    if not token or len(token) > 200:
        return None
    row = cast(RowMapping, await session_store.lookup_direct(bx.db, core_secrets.token_hash(token)))
    if row is None or row["expires_at"] <= now:
        return None
    if row["last_active_at"] <= now - TOUCH_INTERVAL:
        await touch_last_active(bx, row["session_id"], now)
    return Authenticated(
        user=row, session_id=row["session_id"], session_expires_at=row["expires_at"], via="cookie"
    )


async def touch_last_active(bx: Bastion, session_id: str, now: datetime) -> None:
    """Write a session's last active time (at most once a minute, SPEC §7). The
    requests of one session that find it stale at the same moment (a page firing its
    API calls together) share one write rather than queueing one each for the write
    lock: 32 such requests on SQLite stalled for a second and more."""
    pending = bx.touching.get(session_id)
    if pending is None:
        pending = asyncio.ensure_future(
            direct.transaction(
                bx.db, session_store.touched(session_id, now, now - TOUCH_INTERVAL), True
            )
        )
        bx.touching[session_id] = pending
        pending.add_done_callback(functools.partial(_touch_done, bx.touching, session_id))
    await asyncio.shield(pending)


def _touch_done(touching: dict[str, Any], session_id: str, done: asyncio.Future[Any]) -> None:
    if touching.get(session_id) is done:
        del touching[session_id]
    if not done.cancelled():
        done.exception()  # read here too, so that a write every waiter left is not reported


def csrf_token_for(bx: Bastion, session_id: str) -> str:
    """The CSRF token is an HMAC of the session id: bound to the session, nothing stored."""
    return bx.csrf.signature(session_id)


def csrf_token_valid(bx: Bastion, session_id: str, token: str) -> bool:
    return bx.csrf.valid_signature(session_id, token)
