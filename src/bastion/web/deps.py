"""FastAPI dependencies shared by the API and the pages: the container, the request
context, who is calling, CSRF and Origin checks, and the cookies Bastion sets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import cookie_parser

from bastion.flows import sessions as session_flow
from bastion.flows.context import RequestContext, utcnow
from bastion.flows.devicecookie import MAX_AGE as DEVICE_MAX_AGE
from bastion.flows.errors import CrossOrigin, CsrfFailed, Unauthenticated
from bastion.runtime import Bastion
from bastion.web.errors import NO_STORE
from bastion.web.middleware import FAST_GET

SESSION_COOKIE = "bastion_session"
CSRF_COOKIE = "bastion_csrf"
DEVICE_COOKIE = "bastion_device"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Set by the token module: bearer access token -> Authenticated or None.
BearerVerifier = Callable[[Bastion, str], Awaitable[session_flow.Authenticated | None]]
bearer_verifier: BearerVerifier | None = None


def get_bx(request: Request) -> Bastion:
    bx: Bastion = request.app.state.bastion
    return bx


def context(request: Request) -> RequestContext:
    ua = request.headers.get("user-agent")
    return RequestContext(
        ip=request.scope.get("state", {}).get("client_ip")
        or (request.client.host if request.client else None),
        user_agent=ua[:512] if ua else None,
        now=utcnow(),
        device_cookie=request.cookies.get(DEVICE_COOKIE),
    )


async def authenticate(request: Request) -> session_flow.Authenticated | None:
    """Who is calling, once per request: a bearer token wins over the cookie."""
    cached = request.scope.get("state", {}).get("auth", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    auth = await _caller(
        get_bx(request), request.headers.get("authorization", ""), request.headers.get("cookie")
    )
    request.scope.setdefault("state", {})["auth"] = auth
    return auth


async def _caller(
    bx: Bastion, authorization: str, cookie_header: str | None
) -> session_flow.Authenticated | None:
    """``authenticate`` from the two headers (the first of each, as Starlette reads
    them): the bearer token, else the session cookie."""
    if authorization[:7].lower() == "bearer ":
        if bearer_verifier is None:
            return None
        return await bearer_verifier(bx, authorization[7:].strip())
    token = cookie_parser(cookie_header).get(SESSION_COOKIE) if cookie_header else None
    if token:
        return await session_flow.validate(bx, token, utcnow())
    return None


async def optional_user(request: Request) -> session_flow.Authenticated | None:
    return await authenticate(request)


async def require_auth(request: Request) -> session_flow.Authenticated:
    """Signed in, and for cookie requests that change state, a valid CSRF token."""
    auth = await authenticate(request)
    if auth is None:
        raise Unauthenticated()
    if auth.via == "cookie" and request.method in UNSAFE:
        check_csrf(request, auth, request.headers.get("x-csrf-token"))
    return auth


def check_csrf(request: Request, auth: session_flow.Authenticated, submitted: str | None) -> None:
    """SPEC §2: the header (or form field) must equal the bastion_csrf cookie, and the
    cookie must be the signature bound to this session."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not submitted or not cookie or auth.session_id is None:
        raise CsrfFailed()
    from bastion.core.secrets import constant_time_equals

    if not constant_time_equals(submitted, cookie):
        raise CsrfFailed()
    if not session_flow.csrf_token_valid(get_bx(request), auth.session_id, cookie):
        raise CsrfFailed()


def check_origin(request: Request) -> None:
    """Login, register and forgot-password refuse a cross-site Origin (SPEC §2)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = {_origin(get_bx(request).settings.base_url)}
    host = request.headers.get("host")
    if host:
        allowed.add(f"{request.url.scheme}://{host}".lower())
    if origin.lower() not in allowed:
        raise CrossOrigin()


async def origin_checked(request: Request) -> None:
    """``check_origin`` as a dependency: async, so that FastAPI runs it on the event loop
    rather than handing it to a thread (a thread hop costs more than the check)."""
    check_origin(request)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def set_session_cookies(
    response: Response,
    bx: Bastion,
    session: session_flow.NewSession,
    device_cookie: str | None,
    csrf: str | None = None,
) -> str:
    """Set the session, CSRF and device cookies; return the CSRF token (``csrf``: the
    caller worked it out already)."""
    secure = bx.settings.secure_cookies
    ttl = bx.settings.session_ttl
    if csrf is None:
        csrf = session_flow.csrf_token_for(bx, session.id)
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=ttl,
        path="/",
        httponly=True,
        secure=secure,
        samesite="lax",
    )
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=ttl, path="/", httponly=False, secure=secure, samesite="lax"
    )
    if device_cookie:
        response.set_cookie(
            DEVICE_COOKIE,
            device_cookie,
            max_age=DEVICE_MAX_AGE,
            path="/",
            httponly=True,
            secure=secure,
            samesite="lax",
        )
    return csrf


def clear_session_cookies(response: Response, bx: Bastion) -> None:
    secure = bx.settings.secure_cookies
    for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=httponly, samesite="lax")


def session_body(auth_session_id: str, expires_at: Any) -> dict[str, Any]:
    from bastion.flows.users import iso

    return {"id": auth_session_id, "expires_at": iso(expires_at)}


def session_payload(bx: Bastion, auth: session_flow.Authenticated) -> dict[str, Any]:
    """The body of ``GET /api/auth/session`` (SPEC §3) for a signed-in caller."""
    from bastion.flows.users import public_user

    body: dict[str, Any] = {"user": public_user(auth.user, bx.settings.roles)}
    if auth.session_id is not None:
        body["session"] = session_body(auth.session_id, auth.session_expires_at)
        body["csrf_token"] = session_flow.csrf_token_for(bx, auth.session_id)
    else:
        body["session"] = None
        body["csrf_token"] = None
    return body


async def session_fast_path(app: Any, scope: Any) -> Response | None:
    """``GET /api/auth/session`` answered from the ASGI layer (web/middleware.py,
    FAST_GET): the most frequent request of all, and FastAPI's routing and dependency
    solving cost more than the session lookup itself. A signed-in caller gets the same
    answer as the router's endpoint (web/api/auth.py); anyone else, or any error, goes
    the normal way, which reuses the lookup cached in the scope."""
    bx: Bastion | None = getattr(app.state, "bastion", None)
    if bx is None:
        return None
    scope.setdefault("app", app)  # as Starlette sets it; get_bx reads it
    authorization = cookie_header = None
    for name, value in scope["headers"]:  # the first of each, as Request.headers.get
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"cookie" and cookie_header is None:
            cookie_header = value.decode("latin-1")
    try:
        auth = await _caller(bx, authorization or "", cookie_header)
    except Exception:  # noqa: BLE001 - the normal route answers errors its own way
        return None
    scope.setdefault("state", {})["auth"] = auth  # the normal route reuses it
    if auth is None:
        return None
    return session_answer(bx, auth)


SESSION_BODIES_MAX = 1024  # per process; about 1 KB each


def session_answer(bx: Bastion, auth: session_flow.Authenticated) -> Response:
    """The router's answer to a signed-in caller, its body built once per row. The body
    is a function of the row the lookup just read (the driver's raw values), the session
    and the way the caller came; a row that changed in any column (a role, a name, last
    active) is another key, and the lookup itself still runs on every request, so a
    revoked or expired session is refused at once. Saves the user's JSON, two times'
    formatting, the CSRF token's HMAC and ``json.dumps`` on every repeated check."""
    key = None
    raw = getattr(auth.user, "raw", None)  # store/direct.py LazyRow
    if raw is not None:
        try:
            key = (
                raw if type(raw) is tuple else tuple(raw),
                auth.session_id,
                auth.session_expires_at,
                auth.via,
            )
            body = bx.session_bodies.get(key)
        except TypeError:  # a value that cannot be hashed: build it each time
            key = body = None
        if body is not None:
            return Response(body, media_type=JSONResponse.media_type, headers=NO_STORE)
    response = JSONResponse(session_payload(bx, auth), headers=NO_STORE)
    if key is not None:
        if len(bx.session_bodies) >= SESSION_BODIES_MAX:
            bx.session_bodies.clear()  # bounded and simple: a miss rebuilds one body
        bx.session_bodies[key] = bytes(response.body)
    return response


FAST_GET["/api/auth/session"] = session_fast_path
