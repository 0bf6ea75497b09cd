"""The account page (SPEC §12): profile, email verification, password change, MFA
(setup with QR and backup codes, disable, new codes), linked providers and devices.

Every POST here is a signed-in form: session CSRF token in a hidden field, checked with
``deps.check_csrf`` exactly like the API's header."""

# Error texts are keyed by form field names ("password"): not secrets.
# ruff: noqa: S105

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from bastion.core import totp
from bastion.flows import accounts, devices, mfa, oauth, profile, verification
from bastion.flows.errors import (
    AlreadyVerified,
    CsrfFailed,
    DomainError,
    InvalidCode,
    InvalidCredentials,
    NotFound,
    RateLimited,
    WeakPassword,
)
from bastion.flows.sessions import Authenticated
from bastion.web.deps import context, get_bx
from bastion.web.pages.common import (
    check_session_csrf,
    field,
    forbidden_page,
    login_redirect,
    page_user,
    password_problem,
    password_rules,
    render,
    see_other,
)

router = APIRouter(include_in_schema=False)
TOO_MANY = "Too many attempts. Wait a while and try again."


async def account_page(
    request: Request,
    auth: Authenticated,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    unmet: list[str] | None = None,
) -> HTMLResponse:
    bx = get_bx(request)
    ctx = context(request)
    sessions = await devices.list_sessions(bx, ctx, auth.user["id"], auth.session_id)
    return render(
        request,
        "account.html",
        status=status,
        auth=auth,
        title="Your account",
        section="account",
        sessions=sessions,
        linked=await oauth.linked_accounts(bx, auth.user["id"]),
        rules=password_rules(bx.settings.password_policy, unmet),
        errors=errors or {},
        values=values or {},
        pending_setup=bool(auth.user["mfa_pending_secret"]) and not auth.user["mfa_enabled"],
    )


@router.get("/account")
async def account(request: Request) -> Response:
    auth = await page_user(request)
    if auth is None:
        return login_redirect(request)
    return await account_page(request, auth)


Handler = Callable[[Request, Authenticated, FormData], Awaitable[Response]]


async def _signed_in_form(request: Request, handler: Handler) -> Response:
    """Common shape of every POST below: signed in, CSRF checked, then the handler."""
    auth = await page_user(request)
    if auth is None:
        return see_other("/login?callbackUrl=/account")
    form = await request.form()
    try:
        check_session_csrf(request, auth, form)
    except CsrfFailed as exc:
        return forbidden_page(request, exc, auth=auth)
    return await handler(request, auth, form)


# --- profile and email ------------------------------------------------------------------


@router.post("/account/profile")
async def save_profile(request: Request) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        name = field(form, "name", 300)
        try:
            await profile.update_name(get_bx(request), context(request), auth.user["id"], name)
        except DomainError as exc:
            return await account_page(
                request, auth, 422, {"name": exc.message}, {"name": name[:300]}
            )
        return see_other("/account?done=profile")

    return await _signed_in_form(request, handle)


@router.post("/account/email/resend")
async def resend_verification(request: Request) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        try:
            await verification.resend(get_bx(request), context(request), auth.user["id"])
        except AlreadyVerified:
            return see_other("/account?done=verified")
        except RateLimited:
            return await account_page(request, auth, 429, {"verify": TOO_MANY})
        return see_other("/account?done=verification_sent")

    return await _signed_in_form(request, handle)


# --- password ---------------------------------------------------------------------------


@router.post("/account/password")
async def change_password(request: Request) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        current = field(form, "current_password")
        new, confirm = field(form, "new_password"), field(form, "confirm_password")
        errors: dict[str, str] = {}
        if not current:
            errors["current_password"] = "Enter your current password."
        if not new:
            errors["new_password"] = "Choose a new password."
        elif new != confirm:
            errors["confirm_password"] = "The two passwords do not match."
        if errors:
            return await account_page(request, auth, 422, errors)
        try:
            await accounts.change_password(
                get_bx(request), context(request), auth.user, auth.session_id, current, new
            )
        except InvalidCredentials:
            errors["current_password"] = "The current password is not correct."
            return await account_page(request, auth, 401, errors)
        except WeakPassword as exc:
            details = list(exc.extra.get("details", []))
            errors["new_password"] = password_problem(details)
            return await account_page(request, auth, 422, errors, unmet=details)
        except RateLimited:
            return await account_page(request, auth, 429, {"current_password": TOO_MANY})
        except DomainError as exc:
            return await account_page(request, auth, exc.status, {"new_password": exc.message})
        return see_other("/account?done=password")

    return await _signed_in_form(request, handle)


# --- two-factor authentication (SPEC §6) ------------------------------------------------


def _codes_download(codes: list[str]) -> str:
    text = "Bastion backup codes\nEach code works once.\n\n" + "\n".join(codes) + "\n"
    return "data:text/plain;charset=utf-8;base64," + base64.b64encode(text.encode()).decode()


def _setup_page(
    request: Request,
    auth: Authenticated,
    secret: str,
    codes: list[str] | None,
    status: int = 200,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    uri = totp.provisioning_uri(secret, auth.user["email"])
    svg = totp.qr_svg(uri)
    head = svg[: svg.find(">")]
    if "xmlns=" not in head:
        # qr_svg is made for inline HTML; as an <img> (the CSP allows no inline SVG
        # styles) it needs its namespace.
        svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
    return render(
        request,
        "mfa_setup.html",
        status=status,
        auth=auth,
        title="Set up two-factor authentication",
        section="account",
        qr_src="data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode(),
        secret=secret,
        otpauth_uri=uri,
        codes=codes,
        codes_href=_codes_download(codes) if codes else None,
        errors=errors or {},
    )


@router.post("/account/mfa/setup")
async def mfa_setup(request: Request) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        try:
            enrollment = await mfa.setup(
                get_bx(request), context(request), auth.user, field(form, "mfa_password")
            )
        except InvalidCredentials:
            return await account_page(
                request, auth, 401, {"mfa_password": "The password is not correct."}
            )
        except RateLimited:
            return await account_page(request, auth, 429, {"mfa_password": TOO_MANY})
        except DomainError as exc:
            return await account_page(request, auth, exc.status, {"mfa_password": exc.message})
        # Shown once: the backup codes are stored hashed and cannot be shown again.
        return _setup_page(request, auth, enrollment.secret, enrollment.backup_codes)

    return await _signed_in_form(request, handle)


@router.post("/account/mfa/enable")
async def mfa_enable(request: Request) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        bx = get_bx(request)
        code = field(form, "code", 64).strip()
        try:
            await mfa.enable(bx, context(request), auth.user, code)
        except (InvalidCode, RateLimited) as exc:
            # Show the same secret again (the pending one), without the backup codes.
            cipher = auth.user["mfa_pending_secret"]
            secret = bx.encryptor.decrypt(cipher) if cipher else None
            if secret is None:
                return see_other("/account#mfa")
            message = TOO_MANY if isinstance(exc, RateLimited) else "That code is not valid."
            return _setup_page(request, auth, secret, None, exc.status, {"code": message})
        except DomainError as exc:
            return await account_page(request, auth, exc.status, {"mfa_password": exc.message})
        return see_other("/account?done=mfa_enabled")

    return await _signed_in_form(request, handle)


@router.post("/account/mfa/disable")
async def mfa_disable(request: Request) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        try:
            await mfa.disable(
                get_bx(request),
                context(request),
                auth.user,
                field(form, "disable_password"),
                field(form, "disable_code", 64).strip(),
            )
        except InvalidCredentials:
            errors = {"disable_password": "The password is not correct."}
            return await account_page(request, auth, 401, errors)
        except InvalidCode:
            errors = {"disable_code": "That code is not valid."}
            return await account_page(request, auth, 401, errors)
        except DomainError as exc:
            return await account_page(request, auth, exc.status, {"disable_code": exc.message})
        return see_other("/account?done=mfa_disabled")

    return await _signed_in_form(request, handle)


@router.post("/account/mfa/backup-codes")
async def mfa_backup_codes(request: Request) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        try:
            codes = await mfa.regenerate_backup_codes(
                get_bx(request), context(request), auth.user, field(form, "codes_password")
            )
        except InvalidCredentials:
            errors = {"codes_password": "The password is not correct."}
            return await account_page(request, auth, 401, errors)
        except DomainError as exc:
            return await account_page(request, auth, exc.status, {"codes_password": exc.message})
        return render(
            request,
            "backup_codes.html",
            auth=auth,
            title="New backup codes",
            section="account",
            codes=codes,
            codes_href=_codes_download(codes),
        )

    return await _signed_in_form(request, handle)


# --- devices (SPEC §7) ------------------------------------------------------------------


@router.post("/account/sessions/{session_id}/revoke")
async def revoke_session(request: Request, session_id: str) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        if session_id == auth.session_id:
            return see_other("/account#devices")  # this device: use "Sign out"
        try:
            await devices.revoke_session(
                get_bx(request),
                context(request),
                auth.user["id"],
                session_id[:64],
                actor_id=auth.user["id"],
            )
        except NotFound:
            pass  # already gone: the list below shows the truth
        return see_other("/account?done=session_revoked#devices")

    return await _signed_in_form(request, handle)


@router.post("/account/sessions/revoke-others")
async def revoke_others(request: Request) -> Response:
    async def handle(request: Request, auth: Authenticated, form: FormData) -> Response:
        await devices.revoke_others(
            get_bx(request),
            context(request),
            auth.user["id"],
            keep=auth.session_id,
            actor_id=auth.user["id"],
        )
        return see_other("/account?done=sessions_revoked#devices")

    return await _signed_in_form(request, handle)
