"""Pages used before signing in: sign in, register, sign out, and the static assets
(SPEC §12). Each form POST answers 303 on success and re-renders with a 4xx on error."""

# Error texts are keyed by form field names ("password"): not secrets.
# ruff: noqa: S105

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.core.oauth_config import parse_provider
from bastion.flows import accounts
from bastion.flows.errors import (
    AccountLocked,
    CrossOrigin,
    CsrfFailed,
    DomainError,
    EmailTaken,
    InvalidCredentials,
    RateLimited,
    WeakPassword,
)
from bastion.web.deps import clear_session_cookies, context, get_bx, set_session_cookies
from bastion.web.pages.common import (
    NO_STORE,
    callback_target,
    check_form_csrf,
    check_session_csrf,
    field,
    forbidden_page,
    page_user,
    password_problem,
    password_rules,
    render,
    see_other,
    set_mfa_cookie,
    static_file,
    with_query,
)

router = APIRouter(include_in_schema=False)

STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """Bastion serves its own CSS, script and icon: no CDN, nothing from elsewhere."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    data = static_file(name) if suffix in STATIC_TYPES and "/" not in name else None
    if data is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response(
        data, media_type=STATIC_TYPES[suffix], headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/account", status_code=302)


def social_providers(request: Request, callback: str | None) -> list[dict[str, str]]:
    """A button per configured provider (SPEC §9), starting at the OAuth authorize
    endpoint with the same callbackUrl."""
    configured = get_bx(request).settings.oauth_providers
    buttons = []
    for name in sorted(configured):
        try:
            label = parse_provider(name, configured[name]).display_name
        except ValueError:  # settings validation refuses these at start already
            continue
        href = f"/api/auth/oauth/{name}/authorize"
        buttons.append(
            {"name": name, "label": label, "href": with_query(href, callbackUrl=callback)}
        )
    return buttons


def login_page(
    request: Request,
    status: int = 200,
    *,
    email: str = "",
    callback: str | None = None,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "login.html",
        status=status,
        public_form=True,
        title="Sign in",
        values={"email": email},
        callback=callback or "",
        errors=errors or {},
        providers=social_providers(request, callback),
    )


@router.get("/login")
async def login_form(request: Request, callbackUrl: str | None = None) -> Response:  # noqa: N803
    if await page_user(request) is not None:
        return RedirectResponse("/account", status_code=302)
    return login_page(request, callback=callbackUrl)


@router.post("/login")
async def login_submit(request: Request) -> Response:
    form = await request.form()
    callback = field(form, "callbackUrl", 2048) or None
    email = field(form, "email", 254)
    try:
        check_form_csrf(request, form)
    except (CsrfFailed, CrossOrigin) as exc:
        return forbidden_page(request, exc)
    bx = get_bx(request)
    errors: dict[str, str] = {}
    if not email:
        errors["email"] = "Enter your email address."
    if not field(form, "password"):
        errors["password"] = "Enter your password."
    if errors:
        return login_page(request, 422, email=email, callback=callback, errors=errors)
    try:
        result = await accounts.login(bx, context(request), email, field(form, "password"))
    except InvalidCredentials:
        errors["password"] = "The email or password is not correct."
        return login_page(request, 401, email=email, callback=callback, errors=errors)
    except AccountLocked as exc:
        minutes = max(1, (int(exc.extra.get("retry_after", 60)) + 59) // 60)
        errors["form"] = (
            "Too many failed attempts: this account is locked for now. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}, or reset your password."
        )
        return login_page(request, 423, email=email, callback=callback, errors=errors)
    except RateLimited:
        errors["form"] = "Too many attempts from your network. Wait a while and try again."
        return login_page(request, 429, email=email, callback=callback, errors=errors)
    except DomainError as exc:
        errors["password"] = exc.message
        return login_page(request, exc.status, email=email, callback=callback, errors=errors)
    if isinstance(result, accounts.MfaRequired):
        response = see_other(with_query("/mfa", callbackUrl=callback))
        set_mfa_cookie(response, request, result.mfa_token)
        return response
    response = see_other(callback_target(callback))
    set_session_cookies(response, bx, result.session, result.device_cookie)
    return response


def register_page(
    request: Request,
    status: int = 200,
    *,
    values: dict[str, str] | None = None,
    callback: str | None = None,
    errors: dict[str, str] | None = None,
    unmet: list[str] | None = None,
) -> HTMLResponse:
    policy = get_bx(request).settings.password_policy
    return render(
        request,
        "register.html",
        status=status,
        public_form=True,
        title="Create an account",
        values=values or {},
        callback=callback or "",
        errors=errors or {},
        rules=password_rules(policy, unmet),
    )


@router.get("/register")
async def register_form(request: Request, callbackUrl: str | None = None) -> Response:  # noqa: N803
    if await page_user(request) is not None:
        return RedirectResponse("/account", status_code=302)
    return register_page(request, callback=callbackUrl)


@router.post("/register")
async def register_submit(request: Request) -> Response:
    form = await request.form()
    callback = field(form, "callbackUrl", 2048) or None
    values = {"email": field(form, "email", 254), "name": field(form, "name", 200)}
    try:
        check_form_csrf(request, form)
    except (CsrfFailed, CrossOrigin) as exc:
        return forbidden_page(request, exc)
    password = field(form, "password")
    errors: dict[str, str] = {}
    if not values["email"]:
        errors["email"] = "Enter your email address."
    if len(values["name"]) > 200:
        errors["name"] = "Use at most 200 characters."
    if not password:
        errors["password"] = "Choose a password."
    if errors:
        return register_page(request, 422, values=values, callback=callback, errors=errors)
    bx = get_bx(request)
    try:
        result = await accounts.register(
            bx, context(request), values["email"], password, values["name"].strip() or None
        )
    except WeakPassword as exc:
        details = list(exc.extra.get("details", []))
        errors["password"] = password_problem(details)
        return register_page(
            request, 422, values=values, callback=callback, errors=errors, unmet=details
        )
    except EmailTaken:
        errors["email"] = "An account with this email already exists. Sign in instead."
        return register_page(request, 409, values=values, callback=callback, errors=errors)
    except RateLimited:
        errors["form"] = "Too many attempts from your network. Wait a while and try again."
        return register_page(request, 429, values=values, callback=callback, errors=errors)
    except DomainError as exc:
        details = [str(d) for d in exc.extra.get("details", [])]
        key = "email" if any(d.startswith("email") for d in details) else "password"
        errors[key] = exc.message
        return register_page(request, exc.status, values=values, callback=callback, errors=errors)
    response = see_other(callback_target(callback))
    set_session_cookies(response, bx, result.session, result.device_cookie)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Sign out: CSRF-checked like every signed-in form; a browser that is no longer
    signed in just lands on the sign-in page."""
    bx = get_bx(request)
    auth = await page_user(request)
    if auth is not None:
        form = await request.form()
        try:
            check_session_csrf(request, auth, form)
        except CsrfFailed as exc:
            return forbidden_page(request, exc, auth=auth)
        await accounts.logout(bx, auth.session_id)
    response = see_other("/login?done=signed_out")
    clear_session_cookies(response, bx)
    response.headers.update(NO_STORE)
    return response
