"""``/api/auth/mfa``: TOTP setup, enable, the sign-in step, disable, backup codes
(SPEC §6). Thin: the rules live in flows/mfa.py."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from bastion.flows import accounts
from bastion.flows import mfa as mfa_flow
from bastion.flows.sessions import Authenticated
from bastion.flows.users import public_user
from bastion.web.api import responses as R
from bastion.web.api.auth import signed_in_response
from bastion.web.api.schemas import Code, Password, Strict, Token
from bastion.web.deps import context, get_bx, origin_checked, require_auth
from bastion.web.errors import NO_STORE

router = APIRouter(prefix="/api/auth/mfa", tags=["mfa"])


class PasswordIn(Strict):
    password: Password


class CodeIn(Strict):
    code: Code


class VerifyIn(Strict):
    mfa_token: Token
    code: Code


class DisableIn(Strict):
    password: Password
    code: Code


@router.post("/setup")
async def setup(
    body: PasswordIn, request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    bx = get_bx(request)
    enrollment = await mfa_flow.setup(bx, context(request), auth.user, body.password)
    return JSONResponse(
        {
            "secret": enrollment.secret,
            "otpauth_uri": enrollment.otpauth_uri,
            "qr_svg": enrollment.qr_svg,
            "backup_codes": enrollment.backup_codes,
        },
        headers=NO_STORE,
    )


@router.post("/enable", responses=R.ok(R.UserEnvelope))
async def enable(
    body: CodeIn, request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    bx = get_bx(request)
    user = await mfa_flow.enable(bx, context(request), auth.user, body.code)
    return JSONResponse({"user": public_user(user, bx.settings.roles)}, headers=NO_STORE)


@router.post("/verify", dependencies=[Depends(origin_checked)], responses=R.ok(R.SignedInOut))
async def verify(body: VerifyIn, request: Request) -> JSONResponse:
    """The second step of login: same answer and cookies as a password login."""
    bx = get_bx(request)
    ctx = context(request)
    user = await mfa_flow.complete_mfa_step(bx, ctx, body.mfa_token, body.code)
    result = await accounts.complete_sign_in(bx, ctx, user, method="mfa")
    return signed_in_response(bx, result)


@router.post("/disable", responses=R.ok(R.UserEnvelope))
async def disable(
    body: DisableIn, request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    bx = get_bx(request)
    user = await mfa_flow.disable(bx, context(request), auth.user, body.password, body.code)
    return JSONResponse({"user": public_user(user, bx.settings.roles)}, headers=NO_STORE)


@router.post("/backup-codes")
async def backup_codes(
    body: PasswordIn, request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    bx = get_bx(request)
    codes = await mfa_flow.regenerate_backup_codes(bx, context(request), auth.user, body.password)
    return JSONResponse({"backup_codes": codes}, headers=NO_STORE)
