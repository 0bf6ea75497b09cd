"""ASGI middleware with protected and auth-only routes (SPEC §10).

- unauthenticated request to a protected route → 302 ``{login_url}?callbackUrl=<path>``;
- authenticated request to an auth-only route (login, register) → 302 to ``home``.

A route list entry matches the path itself and everything below it at a segment
boundary (``/notes`` covers ``/notes`` and ``/notes/1``, not ``/notesx``); ``/`` covers
every path. Pure ASGI, so it also works around non-FastAPI apps.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.core.redirects import safe_redirect
from bastion.integrations.auth import BastionAuth
from bastion.integrations.identity import BastionUnavailable


def _normalise(prefixes: Iterable[str]) -> tuple[str, ...]:
    return tuple("/" if p.rstrip("/") == "" else p.rstrip("/") for p in prefixes)


def matches(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "/" or path == p or path.startswith(p + "/") for p in prefixes)


class BastionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: BastionAuth,
        protected: Iterable[str] = (),
        auth_only: Iterable[str] = (),
        home: str | None = None,
        login_url: str | None = None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.protected = _normalise(protected)
        self.auth_only = _normalise(auth_only)
        self.home = safe_redirect(home or auth.home)
        self.login_url = login_url or auth.login_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets: use the dependencies in the endpoint
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["bastion_auth"] = self.auth
        path = scope.get("path", "/")
        guarded = matches(path, self.protected)
        auth_only = matches(path, self.auth_only)
        if guarded or auth_only:
            try:
                identity = await self.auth.authenticate(HTTPConnection(scope))
            except BastionUnavailable:
                response = JSONResponse(
                    {"error": "service_unavailable", "message": "Authentication is unavailable."},
                    status_code=503,
                    headers={"Cache-Control": "no-store", "Retry-After": "5"},
                )
                await response(scope, receive, send)
                return
            if guarded and identity is None:
                await self._redirect(self._login_target(scope), scope, receive, send)
                return
            if auth_only and identity is not None:
                await self._redirect(self.home, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _login_target(self, scope: Scope) -> str:
        path = scope.get("path", "/")
        query = scope.get("query_string", b"").decode("latin-1")
        back = safe_redirect(path + (f"?{query}" if query else ""))
        sep = "&" if "?" in self.login_url else "?"
        return f"{self.login_url}{sep}callbackUrl={quote(back, safe='/')}"

    @staticmethod
    async def _redirect(location: str, scope: Scope, receive: Receive, send: Send) -> None:
        response = RedirectResponse(
            location, status_code=302, headers={"Cache-Control": "no-store"}
        )
        await response(scope, receive, send)
