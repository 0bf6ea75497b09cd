"""Pages reached from a mail or from the sign-in form: forgot and reset password, verify
email, and the MFA step of a sign-in (SPEC §5, §3, §6, §12)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from bastion.flows import accounts, mfa, recovery, verification
from bastion.flows.errors import (
    AccountLocked,
    CrossOrigin,
    CsrfFailed,
    DomainError,
    InvalidCode,
    InvalidMfaToken,
    InvalidRequest,
    InvalidToken,
    RateLimited,
    WeakPassword,
)
from bastion.web.deps import context, get_bx, set_session_cookies
from bastion.web.pages.common import (
    MFA_COOKIE,
    callback_target,
    check_form_csrf,
    field,
    forbidden_page,
    found,
    page_user,
    password_problem,
    password_rules,
    render,
    see_other,
    set_mfa_cookie,
    with_query,
)

router = APIRouter(include_in_schema=False)

TOO_MANY = "Too many attempts. Wait a while and try again."


def _invalid_link(request: Request, what: str, again: dict[str, str]) -> HTMLResponse:
    return render(
        request,
        "message.html",
        status=400,
        title="This link no longer works",
        message=f"The {what} link is invalid, already used or expired.",
        tone="error",
        link=again,
    )


# --- forgot / reset password (SPEC §5) ------------------------------------------------


@router.get("/forgot-password")
async def forgot_form(request: Request, sent: str | None = None) -> Response:
    return render(
        request,
        "forgot.html",
        public_form=True,
        title="Reset your password",
        sent=bool(sent),
        auth=await page_user(request),
    )


@router.post("/forgot-password")
async def forgot_submit(request: Request) -> Response:
    form = await request.form()
    email = field(form, "email", 254)
    try:
        check_form_csrf(request, form)
    except (CsrfFailed, CrossOrigin) as exc:
        return forbidden_page(request, exc)
    errors: dict[str, str] = {}
    status = 422
    try:
        if not email:
            raise InvalidRequest("Enter your email address.")
        await recovery.forgot(get_bx(request), context(request), email)
    except InvalidRequest as exc:
        errors["email"] = (
            exc.message if exc.message.startswith("Enter") else "Enter a valid email address."
        )
    except RateLimited:
        errors["form"], status = TOO_MANY, 429
    if errors:
        return render(
            request,
            "forgot.html",
            status=status,
            public_form=True,
            title="Reset your password",
            errors=errors,
            values={"email": email},
        )
    # Same answer for every address: whether an account exists is not revealed.
    return see_other("/forgot-password?sent=1")


def _reset_page(
    request: Request,
    token: str,
    status: int = 200,
    errors: dict[str, str] | None = None,
    unmet: list[str] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "reset.html",
        status=status,
        public_form=True,
        title="Choose a new password",
        token=token,
        errors=errors or {},
        rules=password_rules(get_bx(request).settings.password_policy, unmet),
    )


@router.get("/reset-password")
async def reset_form(request: Request, token: str | None = None) -> Response:
    if not token or len(token) > 200:
        return _invalid_link(
            request, "password reset", {"href": "/forgot-password", "text": "Send a new link"}
        )
    # The token is checked (and used) only when the form is posted: a GET changes nothing,
    # so mail scanners that open links cannot burn it.
    return _reset_page(request, token)


@router.post("/reset-password")
async def reset_submit(request: Request) -> Response:
    form = await request.form()
    token = field(form, "token", 200)
    try:
        check_form_csrf(request, form)
    except (CsrfFailed, CrossOrigin) as exc:
        return forbidden_page(request, exc)
    password, confirm = field(form, "password"), field(form, "confirm")
    if not password:
        return _reset_page(request, token, 422, {"password": "Choose a new password."})
    if password != confirm:
        return _reset_page(request, token, 422, {"confirm": "The two passwords do not match."})
    try:
        await recovery.reset(get_bx(request), context(request), token, password)
    except InvalidToken:
        return _invalid_link(
            request, "password reset", {"href": "/forgot-password", "text": "Send a new link"}
        )
    except WeakPassword as exc:
        details = list(exc.extra.get("details", []))
        return _reset_page(request, token, 422, {"password": password_problem(details)}, details)
    except RateLimited:
        return _reset_page(request, token, 429, {"form": TOO_MANY})
    except DomainError as exc:
        return _reset_page(request, token, exc.status, {"password": exc.message})
    return see_other("/login?done=reset")


# --- verify email (SPEC §3) -----------------------------------------------------------


@router.get("/verify-email")
async def verify_form(request: Request, token: str | None = None) -> Response:
    auth = await page_user(request)
    if not token or len(token) > 200:
        return _invalid_link(
            request, "verification", {"href": "/account", "text": "Go to your account"}
        )
    # One click to confirm: opening the link alone changes nothing (mail scanners).
    return render(
        request, "verify.html", public_form=True, title="Confirm your email", token=token, auth=auth
    )


@router.post("/verify-email")
async def verify_submit(request: Request) -> Response:
    form = await request.form()
    try:
        check_form_csrf(request, form)
    except (CsrfFailed, CrossOrigin) as exc:
        return forbidden_page(request, exc)
    try:
        await verification.verify(get_bx(request), context(request), field(form, "token", 200))
    except InvalidToken:
        return _invalid_link(
            request,
            "verification",
            {"href": "/account", "text": "Get a new link from your account"},
        )
    if await page_user(request) is not None:
        return see_other("/account?done=verified")
    return see_other("/login?done=verified")


# --- the MFA step of a sign-in (SPEC §6) ----------------------------------------------


def _mfa_page(
    request: Request, callback: str | None, status: int = 200, errors: dict[str, str] | None = None
) -> HTMLResponse:
    return render(
        request,
        "mfa.html",
        status=status,
        public_form=True,
        title="Two-factor authentication",
        callback=callback or "",
        errors=errors or {},
    )


@router.get("/mfa")
async def mfa_form(
    request: Request,
    callbackUrl: str | None = None,  # noqa: N803
    mfa_token: str | None = None,
) -> Response:
    if mfa_token and len(mfa_token) <= 200:
        # Social login sends the step token in the URL: move it into the /mfa cookie and
        # drop it from the address bar (history, Referer).
        response = found(with_query("/mfa", callbackUrl=callbackUrl))
        set_mfa_cookie(response, request, mfa_token)
        return response
    if not request.cookies.get(MFA_COOKIE):
        return found(with_query("/login", callbackUrl=callbackUrl))
    return _mfa_page(request, callbackUrl)


@router.post("/mfa")
async def mfa_submit(request: Request) -> Response:
    form = await request.form()
    callback = field(form, "callbackUrl", 2048) or None
    try:
        check_form_csrf(request, form)
    except (CsrfFailed, CrossOrigin) as exc:
        return forbidden_page(request, exc)
    token = request.cookies.get(MFA_COOKIE)
    code = field(form, "code", 64).strip()
    if not token:
        return see_other(with_query("/login", callbackUrl=callback, done="mfa_expired"))
    if not code:
        return _mfa_page(request, callback, 422, {"code": "Enter the code."})
    bx = get_bx(request)
    ctx = context(request)
    try:
        user = await mfa.complete_mfa_step(bx, ctx, token, code)
        result = await accounts.complete_sign_in(bx, ctx, user, method="mfa")
    except InvalidCode:
        return _mfa_page(request, callback, 401, {"code": "That code is not valid. Try again."})
    except InvalidMfaToken:
        response = see_other(with_query("/login", callbackUrl=callback, done="mfa_expired"))
        response.delete_cookie(MFA_COOKIE, path="/mfa")
        return response
    except AccountLocked:
        return _mfa_page(
            request, callback, 423, {"form": "Too many wrong codes: the account is locked for now."}
        )
    except RateLimited:
        return _mfa_page(request, callback, 429, {"form": TOO_MANY})
    except DomainError as exc:
        return _mfa_page(request, callback, exc.status, {"code": exc.message})
    response = see_other(callback_target(callback))
    set_session_cookies(response, bx, result.session, result.device_cookie)
    response.delete_cookie(MFA_COOKIE, path="/mfa")
    return response
