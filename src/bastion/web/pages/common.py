"""What every page shares: the Jinja2 environment, CSRF for forms, who is signed in,
redirects, and the few fixed notices shown after a form POST (SPEC §12).

Pages are thin: they parse a form, call a flow, and either redirect (303 after a POST
that worked) or re-render the form with the error tied to its field and a 4xx status.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from bastion.core.passwords import MIN_LENGTH, NIST_MIN_LENGTH
from bastion.core.rbac import permissions_for
from bastion.core.redirects import safe_redirect
from bastion.core.secrets import constant_time_equals
from bastion.flows.errors import CrossOrigin, CsrfFailed
from bastion.flows.sessions import Authenticated, csrf_token_for
from bastion.web.deps import authenticate, check_csrf, check_origin, get_bx

NO_STORE = {"Cache-Control": "no-store"}
# Pre-session CSRF (login, register, forgot, reset, MFA step, verify): a random value in
# an HttpOnly cookie, and in the form its HMAC under the CSRF signer with a purpose
# prefix, so a form token can never be confused with a session-bound token
# (OWASP "signed double-submit cookie").
PRE_CSRF_COOKIE = "bastion_form"
PRE_CSRF_PURPOSE = "pre-session:"
# The MFA step of a sign-in: the mfa_token lives in an HttpOnly cookie scoped to /mfa,
# never in a URL, so it cannot leak through history or Referer.
MFA_COOKIE = "bastion_mfa"

# Notices after a redirect: a fixed key in the query string picks a fixed text, so no
# caller-chosen text is ever shown.
NOTICES = {
    "signed_out": "You have been signed out.",
    "profile": "Your profile has been saved.",
    "password": "Your password has been changed. Your other sessions were signed out.",
    "reset": "Your password has been reset. Sign in with the new password.",
    "verified": "Your email address is verified.",
    "verification_sent": "We sent a new verification link to your email address.",
    "mfa_enabled": "Two-factor authentication is on.",
    "mfa_disabled": "Two-factor authentication is off.",
    "session_revoked": "The session was signed out.",
    "sessions_revoked": "Your other sessions were signed out.",
    "unlocked": "The account was unlocked.",
    "role": "The role was changed.",
    "user_sessions": "The user's sessions were signed out.",
    "mfa_expired": "The sign-in step expired. Sign in again.",
}


@lru_cache(maxsize=1)
def templates() -> Environment:
    root = resources.files("bastion.web").joinpath("templates")
    env = Environment(
        loader=FileSystemLoader(str(root)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["asset"] = asset_url
    env.filters["when"] = format_time
    return env


@lru_cache(maxsize=8)
def static_file(name: str) -> bytes | None:
    path = resources.files("bastion.web").joinpath("static").joinpath(name)
    return path.read_bytes() if path.is_file() else None


def asset_url(name: str) -> str:
    """``/static/name?v=<hash>``: cache-busting without a build step."""
    data = static_file(name) or b""
    return f"/static/{name}?v={hashlib.sha256(data).hexdigest()[:10]}"


def format_time(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value.replace("T", " ")[:16]
    return str(value.strftime("%Y-%m-%d %H:%M UTC"))


async def page_user(request: Request) -> Authenticated | None:
    """The signed-in browser user (cookie sessions only; pages ignore bearer tokens)."""
    auth = await authenticate(request)
    return auth if auth is not None and auth.via == "cookie" else None


def login_redirect(request: Request) -> RedirectResponse:
    """SPEC §12: an unauthenticated visit goes to /login?callbackUrl=<path>."""
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"callbackUrl": path}), status_code=302)


def see_other(url: str) -> RedirectResponse:
    """After a form POST (SPEC §3: 303)."""
    return RedirectResponse(url, status_code=303, headers=NO_STORE)


def found(url: str) -> RedirectResponse:
    """A page that sends a GET elsewhere (SPEC §3: 302)."""
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


def with_query(path: str, **params: str | None) -> str:
    query = {k: v for k, v in params.items() if v}
    return path + ("?" + urlencode(query) if query else "")


def callback_target(raw: str | None) -> str:
    """Where to go after signing in: the checked callbackUrl (SPEC §2), /account when
    none was given."""
    return safe_redirect(raw) if raw else "/account"


def render(
    request: Request,
    name: str,
    status: int = 200,
    auth: Authenticated | None = None,
    public_form: bool = False,
    **ctx: Any,
) -> HTMLResponse:
    """Render a page. ``public_form``: its form is posted without a session, so it carries
    the pre-session token (and the form cookie is set when missing)."""
    bx = get_bx(request)
    user = auth.user if auth is not None else None
    perms = permissions_for(bx.settings.roles, user["role"]) if user is not None else []
    session_csrf = csrf_token_for(bx, auth.session_id) if auth and auth.session_id else ""
    form_nonce = None
    csrf_token = session_csrf
    if public_form:
        form_nonce = _form_nonce(request) or secrets.token_urlsafe(24)
        csrf_token = bx.csrf.signature(PRE_CSRF_PURPOSE + form_nonce)
    values = {
        "user": user,
        "permissions": perms,
        "session_csrf": session_csrf,
        "csrf_token": csrf_token,
        "notice": NOTICES.get(request.query_params.get("done", "")),
        "errors": {},
        "values": {},
        **ctx,
    }
    html = templates().get_template(name).render(**values)
    response = HTMLResponse(html, status_code=status, headers=NO_STORE)
    if form_nonce is not None and _form_nonce(request) != form_nonce:
        set_form_cookie(response, request, form_nonce)
    return response


def _form_nonce(request: Request) -> str | None:
    """The browser's form-cookie value, when it looks like one we set."""
    value = request.cookies.get(PRE_CSRF_COOKIE)
    return value if value and 16 <= len(value) <= 64 else None


def set_form_cookie(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(
        PRE_CSRF_COOKIE,
        nonce,
        max_age=12 * 3600,
        path="/",
        httponly=True,
        secure=get_bx(request).settings.secure_cookies,
        samesite="lax",
    )


def set_mfa_cookie(response: Response, request: Request, token: str) -> None:
    """The MFA-step token, HttpOnly and scoped to /mfa (never in a URL)."""
    bx = get_bx(request)
    response.set_cookie(
        MFA_COOKIE,
        token,
        max_age=bx.settings.mfa_token_ttl,
        path="/mfa",
        httponly=True,
        secure=bx.settings.secure_cookies,
        samesite="lax",
    )


def check_form_csrf(request: Request, form: FormData) -> None:
    """Forms posted without a session: same Origin rule as the API, plus the signed
    double-submit token. Raises CsrfFailed / CrossOrigin."""
    check_origin(request)
    nonce = _form_nonce(request)
    submitted = str(form.get("csrf_token") or "")
    if not nonce or not submitted:
        raise CsrfFailed()
    expected = get_bx(request).csrf.signature(PRE_CSRF_PURPOSE + nonce)
    if not constant_time_equals(expected, submitted):
        raise CsrfFailed()


def check_session_csrf(request: Request, auth: Authenticated, form: FormData) -> None:
    """Signed-in forms: the hidden field must match the session-bound CSRF cookie."""
    check_csrf(request, auth, str(form.get("csrf_token") or "") or None)


def forbidden_page(
    request: Request,
    exc: CsrfFailed | CrossOrigin | None = None,
    auth: Authenticated | None = None,
) -> HTMLResponse:
    """403 as a page: a failed CSRF/Origin check, or a missing permission."""
    message = (
        "This form has expired or was sent from another site. Go back, reload the page "
        "and try again."
        if exc is not None
        else "You do not have permission to see this page."
    )
    return render(
        request,
        "message.html",
        status=403,
        auth=auth,
        title="Not allowed",
        message=message,
        tone="error",
    )


def field(form: FormData, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return str(value)[: limit + 1] if isinstance(value, str) else ""


# (live-check key, text, word found in the policy's message for that rule)
_RULES = {
    "standard": [
        (f"min:{MIN_LENGTH}", f"At least {MIN_LENGTH} characters", "at least"),
        ("upper", "An uppercase letter", "uppercase"),
        ("lower", "A lowercase letter", "lowercase"),
        ("digit", "A digit", "digit"),
        ("symbol", "A symbol, such as ! or #", "symbol"),
        ("common", "Not a commonly used password", "commonly"),
    ],
    "nist": [
        (f"min:{NIST_MIN_LENGTH}", f"At least {NIST_MIN_LENGTH} characters", "at least"),
        ("common", "Not a commonly used password", "commonly"),
        ("email", "Does not contain your email address", "email"),
    ],
}


def password_rules(policy: str, unmet: list[str] | None = None) -> list[dict[str, Any]]:
    """The rules listed next to a new-password field, each marked unmet when the
    policy's ``details`` (SPEC §4) name it. The keys drive the optional live check in
    bastion.js; the server stays the judge."""
    unmet = [u.lower() for u in unmet or []]
    rules = []
    for key, text, word in _RULES.get(policy, _RULES["standard"]):
        failed = any(word in u for u in unmet)
        rules.append({"key": key, "text": text, "unmet": failed, "met": bool(unmet) and not failed})
    return rules


def password_problem(details: list[str]) -> str:
    """One readable sentence from the policy's unmet rules (SPEC §4 ``details``)."""
    return "The password " + "; ".join(details) + "."
