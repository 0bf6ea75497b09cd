"""``/api/auth``: password reset (SPEC §5) and email verification (SPEC §3)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from bastion.flows import recovery, verification
from bastion.flows.sessions import Authenticated
from bastion.flows.users import public_user
from bastion.web.api import responses as R
from bastion.web.api.schemas import EmailIn, ResetIn, TokenIn
from bastion.web.deps import context, get_bx, origin_checked, require_auth
from bastion.web.errors import NO_STORE

router = APIRouter(prefix="/api/auth", tags=["recovery"])


@router.post(
    "/password/forgot",
    status_code=202,
    dependencies=[Depends(origin_checked)],
    responses=R.ok(R.StatusOut, 202),
)
async def forgot_password(body: EmailIn, request: Request) -> JSONResponse:
    """Always 202 with the same body: whether the account exists is not revealed."""
    await recovery.forgot(get_bx(request), context(request), body.email)
    return JSONResponse({"status": "ok"}, status_code=202, headers=NO_STORE)


@router.post("/password/reset", responses=R.ok(R.StatusOut))
async def reset_password(body: ResetIn, request: Request) -> JSONResponse:
    await recovery.reset(get_bx(request), context(request), body.token, body.password)
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


@router.post("/email/verify", responses=R.ok(R.UserEnvelope))
async def verify_email(body: TokenIn, request: Request) -> JSONResponse:
    bx = get_bx(request)
    user = await verification.verify(bx, context(request), body.token)
    return JSONResponse({"user": public_user(user, bx.settings.roles)}, headers=NO_STORE)


@router.post("/email/resend", status_code=202)
async def resend_verification(
    request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    await verification.resend(get_bx(request), context(request), auth.user["id"])
    return JSONResponse({"status": "ok"}, status_code=202, headers=NO_STORE)
