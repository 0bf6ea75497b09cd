"""``/api/auth``: register, login, session, logout, password change (SPEC §3, §4)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bastion.flows import accounts
from bastion.flows.sessions import Authenticated, csrf_token_for
from bastion.flows.users import public_user
from bastion.runtime import Bastion
from bastion.web.api import responses as R
from bastion.web.api.schemas import LoginIn, PasswordChangeIn, RegisterIn
from bastion.web.deps import (
    check_origin,
    clear_session_cookies,
    context,
    get_bx,
    optional_user,
    origin_checked,
    require_auth,
    session_body,
    session_payload,
    set_session_cookies,
)
from bastion.web.errors import NO_STORE
from bastion.web.middleware import FAST_POST

router = APIRouter(prefix="/api/auth", tags=["auth"])


def signed_in_response(
    bx: Bastion, result: accounts.SignedIn, status: int = 200, extra: dict[str, Any] | None = None
) -> JSONResponse:
    csrf = csrf_token_for(bx, result.session.id)
    body = {
        "user": public_user(result.user, bx.settings.roles),
        "session": session_body(result.session.id, result.session.expires_at),
        "csrf_token": csrf,
        **(extra or {}),
    }
    response = JSONResponse(body, status_code=status, headers=NO_STORE)
    set_session_cookies(response, bx, result.session, result.device_cookie, csrf)
    return response


@router.post(
    "/register",
    status_code=201,
    dependencies=[Depends(origin_checked)],
    responses=R.ok(R.SignedInOut, 201),
)
async def register(body: RegisterIn, request: Request) -> JSONResponse:
    bx = get_bx(request)
    result = await accounts.register(bx, context(request), body.email, body.password, body.name)
    return signed_in_response(bx, result, status=201)


@router.post(
    "/login",
    dependencies=[Depends(origin_checked)],
    responses={200: {"model": R.SignedInOut | R.MfaRequiredOut, "description": "Signed in"}},
)
async def login(body: LoginIn, request: Request) -> JSONResponse:
    bx = get_bx(request)
    result = await accounts.login(bx, context(request), body.email, body.password)
    if isinstance(result, accounts.MfaRequired):
        return JSONResponse({"mfa_required": True, "mfa_token": result.mfa_token}, headers=NO_STORE)
    return signed_in_response(bx, result)


async def login_fast(request: Request) -> JSONResponse | None:
    """``login`` from the ASGI layer (middleware.FAST_POST) for a well-formed JSON body;
    None for anything else, which the route above then answers (FastAPI's validation and
    422s). Same order as the route: the Origin check, then the body."""
    check_origin(request)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return None
    try:  # parsed and validated as FastAPI does (json.loads, then the model)
        body = LoginIn.model_validate(json.loads(await request.body()))
    except (ValueError, RecursionError, ValidationError):  # bad JSON or UTF-8, deep nesting
        return None
    return await login(body, request)


FAST_POST["/api/auth/login"] = login_fast  # every sign-in: skip the routing


@router.get("/session", responses=R.ok(R.SessionOut))
async def session(request: Request, auth: Authenticated = Depends(require_auth)) -> JSONResponse:
    # Usually answered earlier by deps.session_fast_path; both build the same body.
    return JSONResponse(session_payload(get_bx(request), auth), headers=NO_STORE)


@router.post("/logout", status_code=204)
async def logout(request: Request, auth: Authenticated | None = Depends(optional_user)) -> Response:
    bx = get_bx(request)
    if auth is not None:
        auth = await require_auth(request)  # CSRF applies to cookie sessions
        # Cookie or bearer: the session behind it ends server-side (a bearer token's
        # session is its grant, so its access and refresh tokens die with it).
        await accounts.logout(bx, auth.session_id)
    response = Response(status_code=204, headers=NO_STORE)
    clear_session_cookies(response, bx)
    return response


@router.post("/password/change", responses=R.ok(R.StatusOut))
async def change_password(
    body: PasswordChangeIn, request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    bx = get_bx(request)
    await accounts.change_password(
        bx,
        context(request),
        auth.user,
        auth.session_id,
        body.current_password,
        body.new_password,
    )
    return JSONResponse({"status": "ok"}, headers=NO_STORE)
