"""``BastionAuth`` and the FastAPI dependencies of SPEC §10: ``current_user``,
``require_user``, ``require_role(...)``, ``require_permission(...)``.

The dependencies find the ``BastionAuth`` of the app (``auth.install(app)``, or the
middleware, which puts it in ``request.state``), so they can be imported and used
directly: ``Depends(require_permission("write"))``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from bastion.integrations.backends import Backend, InProcess, Remote
from bastion.integrations.identity import BastionUnavailable, Identity

if TYPE_CHECKING:
    from bastion.settings import Settings

SESSION_COOKIE = "bastion_session"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STATE_KEY = "bastion_identity"


class AuthError(HTTPException):
    """401/403/503 with Bastion's ``{"error", "message"}`` body (``install`` maps it)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, {"error": code, "message": message})
        self.code = code
        self.message = message


class BastionAuth:
    """One per app: the backend, and where the middleware sends people."""

    def __init__(
        self,
        backend: Backend,
        *,
        login_url: str = "/login",
        home: str = "/",
        cookie_name: str = SESSION_COOKIE,
    ) -> None:
        self.backend = backend
        self.login_url = login_url
        self.home = home
        self.cookie_name = cookie_name

    @classmethod
    def in_process(cls, settings: Settings | None = None, **kw: Any) -> BastionAuth:
        """The app shares Bastion's database (``BASTION_*`` settings, same SECRET_KEY)."""
        return cls(InProcess(settings), **kw)

    @classmethod
    def remote(cls, url: str, *, cache_ttl: float = 5.0, **kw: Any) -> BastionAuth:
        """The app asks the Bastion at ``url``."""
        backend_kw = {k: kw.pop(k) for k in ("audience", "issuer", "roles", "timeout") if k in kw}
        return cls(Remote(url, cache_ttl=cache_ttl, **backend_kw), **kw)

    def install(self, app: FastAPI) -> None:
        """Make the dependencies find this instance; answer AuthError as JSON; close the
        backend at shutdown."""
        app.state.bastion_auth = self
        app.add_exception_handler(AuthError, _auth_error)
        app.router.on_shutdown.append(self.backend.close)

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        """Who is calling, once per request: a bearer token wins over the cookie."""
        state = conn.scope.setdefault("state", {})
        if _STATE_KEY in state:
            cached: Identity | None = state[_STATE_KEY]
            return cached
        identity: Identity | None = None
        header = conn.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            identity = await self.backend.from_bearer(header[7:].strip())
        else:
            token = conn.cookies.get(self.cookie_name)
            if token and len(token) <= 200:
                identity = await self.backend.from_cookie(token)
        state[_STATE_KEY] = identity
        return identity


async def _auth_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)  # noqa: S101
    return JSONResponse(
        {"error": exc.code, "message": exc.message},
        status_code=exc.status_code,
        headers={"Cache-Control": "no-store"},
    )


def auth_for(conn: HTTPConnection) -> BastionAuth:
    found = conn.scope.get("state", {}).get("bastion_auth") or getattr(
        conn.app.state, "bastion_auth", None
    )
    if not isinstance(found, BastionAuth):
        raise RuntimeError("call BastionAuth.install(app) or add BastionMiddleware first")
    return found


async def current_user(request: Request) -> Identity | None:
    """The signed-in user, or None."""
    try:
        return await auth_for(request).authenticate(request)
    except BastionUnavailable:
        raise AuthError(503, "service_unavailable", "Authentication is unavailable.") from None


async def require_user(request: Request) -> Identity:
    """Signed in (401 otherwise); a cookie request that changes state must send the
    session's CSRF token in ``X-CSRF-Token`` (403 ``csrf_failed``), as on Bastion."""
    identity = await current_user(request)
    if identity is None:
        raise AuthError(401, "unauthenticated", "Sign in first.")
    if identity.via == "cookie" and request.method in UNSAFE:
        sent = request.headers.get("x-csrf-token") or ""
        expected = identity.csrf_token or ""
        if not sent or not expected or not hmac.compare_digest(sent, expected):
            raise AuthError(403, "csrf_failed", "Missing or invalid CSRF token.")
    return identity


def require_role(*roles: str) -> Callable[[Request], Awaitable[Identity]]:
    """Signed in with one of ``roles`` (403 ``forbidden`` otherwise)."""

    async def dependency(request: Request) -> Identity:
        identity = await require_user(request)
        if identity.role not in roles:
            raise AuthError(403, "forbidden", "You are not allowed to do this.")
        return identity

    return dependency


def require_permission(*permissions: str) -> Callable[[Request], Awaitable[Identity]]:
    """Signed in with every one of ``permissions`` (403 ``forbidden`` otherwise)."""

    async def dependency(request: Request) -> Identity:
        identity = await require_user(request)
        if not identity.has_permission(*permissions):
            raise AuthError(403, "forbidden", "You are not allowed to do this.")
        return identity

    return dependency
