"""The admin use cases (SPEC §10): list and inspect users, change roles, unlock, end
sessions, read the audit log and the login-attempt log.

Every function here is reached only through ``web.authz.require_permission``; the
actor's id is passed in and audited.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from bastion.core.emails import normalize_email
from bastion.core.rbac import has_permission
from bastion.flows import devices
from bastion.flows.auditing import audited
from bastion.flows.context import RequestContext
from bastion.flows.errors import InvalidRequest, LastAdmin, NotFound
from bastion.flows.unlock import unlock_user
from bastion.flows.users import iso, public_user
from bastion.runtime import Bastion
from bastion.store import admin as admin_store
from bastion.store import users as user_store

MAX_LIMIT = 100
DEFAULT_LIMIT = 50
# The permission that makes a user an administrator; the last holder may not lose it.
ADMIN_PERMISSION = "manage_users"


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def check_limit(limit: int | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise InvalidRequest(details=[f"limit: must be between 1 and {maximum}"])
    return limit


def _encode(payload: list[Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidRequest("The cursor is invalid.", details=["cursor: invalid"]) from None


def user_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    value = _decode(cursor)
    try:
        created, user_id = value
        if not isinstance(created, str) or not isinstance(user_id, str) or len(user_id) > 64:
            raise TypeError
        return datetime.fromisoformat(created), user_id
    except (TypeError, ValueError):
        raise InvalidRequest("The cursor is invalid.", details=["cursor: invalid"]) from None


def audit_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    value = _decode(cursor)
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], int):
        raise InvalidRequest("The cursor is invalid.", details=["cursor: invalid"])
    return int(value[0])


def admin_user(
    row: Mapping[Any, Any], roles: Mapping[str, list[str]], now: datetime
) -> dict[str, Any]:
    """The user object of SPEC §2 plus the lockout state an admin needs."""
    locked = row["locked_until"] if row["locked_until"] and row["locked_until"] > now else None
    return {
        **public_user(row, roles),
        "locked_until": iso(locked),
        "failed_login_attempts": int(row["failed_login_attempts"] or 0),
    }


async def list_users(
    bx: Bastion,
    ctx: RequestContext,
    q: str | None,
    limit: int | None,
    cursor: str | None,
    role: str | None = None,
) -> Page:
    n = check_limit(limit)
    after = user_cursor(cursor)
    q = (q or "").strip()[:254] or None
    async with bx.db.read() as conn:
        rows = await admin_store.list_users(conn, q=q, limit=n + 1, after=after, role=role)
    more = len(rows) > n
    rows = rows[:n]
    items = [admin_user(r, bx.settings.roles, ctx.now) for r in rows]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = _encode([last["created_at"].isoformat(), last["id"]])
    return Page(items, next_cursor)


async def _get(bx: Bastion, user_id: str) -> RowMapping:
    if len(user_id) > 64:
        raise NotFound("No such user.")
    async with bx.db.read() as conn:
        row = await user_store.get_by_id(conn, user_id)
    if row is None:
        raise NotFound("No such user.")
    return row


async def get_user(bx: Bastion, ctx: RequestContext, user_id: str) -> dict[str, Any]:
    return admin_user(await _get(bx, user_id), bx.settings.roles, ctx.now)


def admin_roles(roles: Mapping[str, list[str]]) -> list[str]:
    return [r for r in roles if has_permission(roles, r, ADMIN_PERMISSION)]


async def change_role(
    bx: Bastion, ctx: RequestContext, actor_id: str, user_id: str, role: str
) -> dict[str, Any]:
    """Set a user's role. The last holder of ``manage_users`` may not lose it: the check
    and the change run under one lock, so two concurrent demotions of the last two
    admins cannot both pass (SPEC §10)."""
    roles = bx.settings.roles
    if role not in roles:
        raise InvalidRequest(
            f"Unknown role {role!r}.", details=[f"role: must be one of {', '.join(roles)}"]
        )
    if len(user_id) > 64:
        raise NotFound("No such user.")
    privileged = admin_roles(roles)
    async with bx.db.write() as conn:
        await admin_store.lock_admins(conn)
        user = await user_store.get_by_id(conn, user_id)
        if user is None:
            raise NotFound("No such user.")
        old = user["role"]
        if old != role:
            if old in privileged and role not in privileged:
                if await admin_store.count_role_holders(conn, privileged, user_id) == 0:
                    raise LastAdmin()
            await admin_store.set_role(conn, user_id, role, ctx.now)
            await audited(
                conn,
                ctx,
                "role_changed",
                user_id=user_id,
                actor_id=actor_id,
                details={"from": old, "to": role},
            )
        fresh = await user_store.get_by_id(conn, user_id)
    assert fresh is not None  # noqa: S101 - locked above in this transaction
    return admin_user(fresh, roles, ctx.now)


async def unlock(bx: Bastion, ctx: RequestContext, actor_id: str, user_id: str) -> None:
    if len(user_id) > 64:
        raise NotFound("No such user.")
    await unlock_user(bx, ctx, user_id, actor_id, {"via": "admin_api"})


async def revoke_sessions(bx: Bastion, ctx: RequestContext, actor_id: str, user_id: str) -> int:
    """End every session and refresh token of the user and invalidate its access tokens
    (token version), in one transaction; audited as ``sessions_revoked`` (``via``
    ``admin_api``)."""
    if len(user_id) > 64:
        raise NotFound("No such user.")
    async with bx.db.write() as conn:
        if await user_store.get_by_id(conn, user_id) is None:
            raise NotFound("No such user.")
        return await devices.end_all(conn, ctx, user_id, actor_id, {"via": "admin_api"})


def audit_event(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "action": row["action"],
        "actor_id": row["actor_id"],
        "user_id": row["user_id"],
        "ip_address": row["ip_address"],
        "user_agent": row["user_agent"],
        "details": row["details"],
        "created_at": iso(row["created_at"]),
    }


async def audit_log(
    bx: Bastion,
    action: str | None,
    user_id: str | None,
    limit: int | None,
    cursor: str | None,
) -> Page:
    n = check_limit(limit)
    before = audit_cursor(cursor)
    async with bx.db.read() as conn:
        rows = await admin_store.audit_page(
            conn, action=action or None, user_id=user_id or None, limit=n + 1, before_id=before
        )
    more = len(rows) > n
    rows = rows[:n]
    next_cursor = _encode([int(rows[-1]["id"])]) if more and rows else None
    return Page([audit_event(r) for r in rows], next_cursor)


async def login_attempts(
    bx: Bastion, email: str | None, ip: str | None, limit: int | None
) -> list[dict[str, Any]]:
    n = check_limit(limit, default=100, maximum=1000)
    email = normalize_email(email)[:254] if email else None
    async with bx.db.read() as conn:
        rows = await admin_store.login_attempts_page(conn, email=email, ip=ip or None, limit=n)
    return [
        {
            "email": r["email"],
            "ip_address": r["ip_address"],
            "user_agent": r["user_agent"],
            "success": bool(r["success"]),
            "failure_reason": r["failure_reason"],
            "created_at": iso(r["created_at"]),
        }
        for r in rows
    ]
