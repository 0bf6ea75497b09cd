"""``/api/admin``: users, roles, unlock, sessions, audit log, login attempts and the
security report (SPEC §10, §11). Every route requires ``manage_users``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from bastion.flows import admin as admin_flow
from bastion.flows import report as report_flow
from bastion.flows.sessions import Authenticated
from bastion.web.api.schemas import Strict
from bastion.web.authz import require_permission
from bastion.web.deps import context, get_bx
from bastion.web.errors import NO_STORE

router = APIRouter(prefix="/api/admin", tags=["admin"])
Admin = Annotated[Authenticated, Depends(require_permission("manage_users"))]
Text = Annotated[str | None, Query(max_length=254, pattern=r"^[^\x00-\x1f\x7f]*$")]
Cursor = Annotated[str | None, Query(max_length=512)]


class RoleIn(Strict):
    role: str = Field(min_length=1, max_length=64)


@router.get("/users")
async def list_users(
    request: Request,
    _: Admin,
    q: Text = None,
    limit: Annotated[int | None, Query()] = None,
    cursor: Cursor = None,
    role: Text = None,
) -> JSONResponse:
    page = await admin_flow.list_users(
        get_bx(request), context(request), q, limit, cursor, role=role
    )
    return JSONResponse({"users": page.items, "next_cursor": page.next_cursor}, headers=NO_STORE)


@router.get("/users/{user_id}")
async def get_user(user_id: str, request: Request, _: Admin) -> JSONResponse:
    user = await admin_flow.get_user(get_bx(request), context(request), user_id)
    return JSONResponse({"user": user}, headers=NO_STORE)


@router.patch("/users/{user_id}")
async def change_role(user_id: str, body: RoleIn, request: Request, auth: Admin) -> JSONResponse:
    user = await admin_flow.change_role(
        get_bx(request), context(request), auth.user["id"], user_id, body.role
    )
    return JSONResponse({"user": user}, headers=NO_STORE)


@router.post("/users/{user_id}/unlock", status_code=204)
async def unlock(user_id: str, request: Request, auth: Admin) -> Response:
    await admin_flow.unlock(get_bx(request), context(request), auth.user["id"], user_id)
    return Response(status_code=204, headers=NO_STORE)


@router.post("/users/{user_id}/revoke-sessions", status_code=204)
async def revoke_sessions(user_id: str, request: Request, auth: Admin) -> Response:
    await admin_flow.revoke_sessions(get_bx(request), context(request), auth.user["id"], user_id)
    return Response(status_code=204, headers=NO_STORE)


@router.get("/audit-log")
async def audit_log(
    request: Request,
    _: Admin,
    action: Text = None,
    user_id: Text = None,
    limit: Annotated[int | None, Query()] = None,
    cursor: Cursor = None,
) -> JSONResponse:
    page = await admin_flow.audit_log(get_bx(request), action, user_id, limit, cursor)
    return JSONResponse({"events": page.items, "next_cursor": page.next_cursor}, headers=NO_STORE)


@router.get("/login-attempts")
async def login_attempts(
    request: Request,
    _: Admin,
    email: Text = None,
    ip: Text = None,
    limit: Annotated[int | None, Query()] = None,
) -> JSONResponse:
    attempts = await admin_flow.login_attempts(get_bx(request), email, ip, limit)
    return JSONResponse({"attempts": attempts}, headers=NO_STORE)


@router.get("/security-report")
async def security_report(
    request: Request,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=report_flow.MAX_LIMIT)] = report_flow.DEFAULT_LIMIT,
) -> JSONResponse:
    report = await report_flow.security_report(get_bx(request), context(request).now, limit)
    return JSONResponse(report, headers=NO_STORE)
