"""The admin page (SPEC §10, §11, §12): user search with lock status, unlock, role
change, ending a user's sessions, the audit log and the security report.

Needs ``manage_users``, read from the user row on every request: signed out → 302 to
the sign-in page, signed in without the permission → a 403 page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from bastion.core.rbac import has_permission
from bastion.flows import admin as admin_flow
from bastion.flows import report as report_flow
from bastion.flows.errors import CsrfFailed, DomainError, InvalidRequest
from bastion.flows.sessions import Authenticated
from bastion.web.deps import context, get_bx
from bastion.web.pages.common import (
    check_session_csrf,
    field,
    forbidden_page,
    login_redirect,
    page_user,
    render,
    see_other,
    with_query,
)

router = APIRouter(include_in_schema=False)

PERMISSION = "manage_users"
PAGE_SIZE = 25
REPORT_ROWS = 10
AUDIT_ACTIONS = [
    "registered",
    "login_succeeded",
    "login_failed",
    "account_locked",
    "account_unlocked",
    "password_reset_requested",
    "password_reset",
    "password_changed",
    "email_verified",
    "mfa_enabled",
    "mfa_disabled",
    "backup_code_used",
    "backup_codes_regenerated",
    "session_revoked",
    "sessions_revoked",
    "refresh_token_reused",
    "role_changed",
    "oauth_linked",
]


def _allowed(request: Request, auth: Authenticated) -> bool:
    return has_permission(get_bx(request).settings.roles, auth.user["role"], PERMISSION)


def _text(value: str | None, limit: int = 254) -> str | None:
    if not value:
        return None
    value = value[:limit]
    return None if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) else value


async def admin_page(
    request: Request,
    auth: Authenticated,
    status: int = 200,
    error: str | None = None,
) -> HTMLResponse:
    bx = get_bx(request)
    ctx = context(request)
    params = request.query_params
    q, action = _text(params.get("q")), _text(params.get("action"), 64)
    if action not in AUDIT_ACTIONS:
        action = None
    try:
        users = await admin_flow.list_users(bx, ctx, q, PAGE_SIZE, _text(params.get("cursor"), 512))
    except InvalidRequest:
        users = await admin_flow.list_users(bx, ctx, q, PAGE_SIZE, None)
    try:
        events = await admin_flow.audit_log(
            bx, action, None, PAGE_SIZE, _text(params.get("audit_cursor"), 512)
        )
    except InvalidRequest:
        events = await admin_flow.audit_log(bx, action, None, PAGE_SIZE, None)
    report = await report_flow.security_report(bx, ctx.now, REPORT_ROWS)
    locked_ids = {row["id"] for row in report["locked_accounts"]}
    rows: list[dict[str, Any]] = [
        {**u, "locked": bool(u["locked_until"]) or u["id"] in locked_ids} for u in users.items
    ]
    return render(
        request,
        "admin.html",
        status=status,
        auth=auth,
        title="Administration",
        section="admin",
        error=error,
        q=q or "",
        action=action or "",
        actions=AUDIT_ACTIONS,
        users=rows,
        roles=list(bx.settings.roles),
        next_users=with_query("/admin", q=q, action=action, cursor=users.next_cursor)
        if users.next_cursor
        else None,
        events=events.items,
        next_events=with_query("/admin", q=q, action=action, audit_cursor=events.next_cursor)
        + "#audit"
        if events.next_cursor
        else None,
        report=report,
    )


@router.get("/admin")
async def admin(request: Request) -> Response:
    auth = await page_user(request)
    if auth is None:
        return login_redirect(request)
    if not _allowed(request, auth):
        return forbidden_page(request, auth=auth)
    return await admin_page(request, auth)


Action = Callable[[Request, Authenticated, str, FormData], Awaitable[str]]


async def _admin_form(request: Request, user_id: str, action: Action) -> Response:
    auth = await page_user(request)
    if auth is None:
        return see_other("/login?callbackUrl=/admin")
    if not _allowed(request, auth):
        return forbidden_page(request, auth=auth)
    form = await request.form()
    try:
        check_session_csrf(request, auth, form)
    except CsrfFailed as exc:
        return forbidden_page(request, exc, auth=auth)
    back_q = _text(field(form, "q", 254))
    try:
        done = await action(request, auth, user_id[:64], form)
    except DomainError as exc:
        return await admin_page(request, auth, exc.status, exc.message)
    return see_other(with_query("/admin", q=back_q, done=done) + "#users")


@router.post("/admin/users/{user_id}/unlock")
async def unlock(request: Request, user_id: str) -> Response:
    async def act(request: Request, auth: Authenticated, uid: str, form: FormData) -> str:
        await admin_flow.unlock(get_bx(request), context(request), auth.user["id"], uid)
        return "unlocked"

    return await _admin_form(request, user_id, act)


@router.post("/admin/users/{user_id}/role")
async def change_role(request: Request, user_id: str) -> Response:
    async def act(request: Request, auth: Authenticated, uid: str, form: FormData) -> str:
        role = field(form, "role", 64)
        await admin_flow.change_role(get_bx(request), context(request), auth.user["id"], uid, role)
        return "role"

    return await _admin_form(request, user_id, act)


@router.post("/admin/users/{user_id}/revoke-sessions")
async def revoke_sessions(request: Request, user_id: str) -> Response:
    async def act(request: Request, auth: Authenticated, uid: str, form: FormData) -> str:
        await admin_flow.revoke_sessions(get_bx(request), context(request), auth.user["id"], uid)
        return "user_sessions"

    return await _admin_form(request, user_id, act)
