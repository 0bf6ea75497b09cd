"""Authorization for Bastion's own endpoints (SPEC §10): checked on the server for every
admin request, from the role stored on the user row at request time (a demoted admin
loses access at once, whatever the browser still shows)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from bastion.core.rbac import has_permission
from bastion.flows.errors import Forbidden
from bastion.flows.sessions import Authenticated
from bastion.web.deps import get_bx, require_auth


def require_permission(permission: str) -> Callable[[Request], Awaitable[Authenticated]]:
    """A dependency: 401 ``unauthenticated`` without a session or token, 403
    ``csrf_failed`` for a cookie write without the CSRF token, 403 ``forbidden`` when the
    caller's role lacks ``permission``."""

    async def dependency(request: Request) -> Authenticated:
        auth = await require_auth(request)
        roles = get_bx(request).settings.roles
        if not has_permission(roles, auth.user["role"], permission):
            raise Forbidden()
        return auth

    dependency.__name__ = f"require_permission_{permission}"
    return dependency
