"""``/api/auth/oauth``: social login (SPEC §9).

The authorize and callback endpoints are browser navigations, so failures answer with
an HTML error page (4xx; 502 when the provider cannot be reached), never JSON and never
a 500, and the state cookie is cleared whatever happens.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from bastion.flows import accounts
from bastion.flows import oauth as flow
from bastion.flows.errors import DomainError
from bastion.flows.sessions import Authenticated
from bastion.flows.users import iso
from bastion.runtime import Bastion
from bastion.web.deps import context, get_bx, require_auth, set_session_cookies
from bastion.web.errors import BROWSER_RESPONSES, NO_STORE
from bastion.web.pages.common import render, set_mfa_cookie

log = logging.getLogger("bastion.oauth")

router = APIRouter(prefix="/api/auth/oauth", tags=["oauth"])


def error_page(request: Request, bx: Bastion, exc: DomainError) -> HTMLResponse:
    status = exc.status if 400 <= exc.status < 600 and exc.status != 500 else 400
    response = render(
        request,
        "message.html",
        status=status,
        title="Sign-in failed",
        message=exc.message,
        tone="error",
        link={"href": "/login", "text": "Back to sign in"},
    )
    response.headers.update(exc.headers)
    _clear_state(response, bx)
    return response


def _clear_state(response: Response, bx: Bastion) -> None:
    response.delete_cookie(
        flow.COOKIE,
        path=flow.COOKIE_PATH,
        secure=bx.settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


@router.get("/accounts")
async def linked_accounts(
    request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    """The providers linked to the signed-in user."""
    rows = await flow.linked_accounts(get_bx(request), auth.user["id"])
    body = {
        "accounts": [
            {"provider": r["provider"], "email": r["email"], "created_at": iso(r["created_at"])}
            for r in rows
        ]
    }
    return JSONResponse(body, headers=NO_STORE)


@router.get(
    "/{provider}/authorize",
    response_model=None,
    response_class=HTMLResponse,
    responses=BROWSER_RESPONSES,
)
async def authorize(
    provider: str,
    request: Request,
    callbackUrl: str | None = None,  # noqa: N803
) -> Response:
    bx = get_bx(request)
    try:
        url, cookie = await flow.start(bx, context(request), provider, callbackUrl)
    except DomainError as exc:
        return error_page(request, bx, exc)
    response = RedirectResponse(url, status_code=302, headers=NO_STORE)
    response.set_cookie(
        flow.COOKIE,
        cookie,
        max_age=flow.STATE_TTL,
        path=flow.COOKIE_PATH,
        httponly=True,
        secure=bx.settings.secure_cookies,
        samesite="lax",
    )
    return response


@router.get(
    "/{provider}/callback",
    response_model=None,
    response_class=HTMLResponse,
    responses=BROWSER_RESPONSES,
)
async def callback(provider: str, request: Request) -> Response:
    bx = get_bx(request)
    params = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
    try:
        done = await flow.finish(
            bx, context(request), provider, params, request.cookies.get(flow.COOKIE)
        )
    except DomainError as exc:
        log.info(
            "oauth sign-in refused: provider=%s reason=%s",
            provider[:64],
            getattr(exc, "reason", exc.code),
        )
        return error_page(request, bx, exc)
    if isinstance(done.result, accounts.MfaRequired):
        # The MFA step page (/mfa) finishes the sign-in. Its token goes into the same
        # HttpOnly cookie, scoped to /mfa, that a password sign-in uses, never into the URL.
        target = "/mfa?" + urlencode({"callbackUrl": done.callback})
        response: Response = RedirectResponse(target, status_code=302, headers=NO_STORE)
        set_mfa_cookie(response, request, done.result.mfa_token)
    else:
        response = RedirectResponse(done.callback, status_code=302, headers=NO_STORE)
        set_session_cookies(response, bx, done.result.session, done.result.device_cookie)
    _clear_state(response, bx)
    return response
