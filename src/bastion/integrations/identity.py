"""Who is calling an app protected by Bastion."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class BastionUnavailable(Exception):
    """Bastion could not be asked (remote mode) or its database failed: the request must
    fail closed (503), never pass as signed in or silently as anonymous."""


@dataclass(frozen=True)
class Identity:
    """The signed-in user as an app sees it. ``via`` is ``cookie`` or ``bearer``;
    ``csrf_token`` is the token a cookie request that changes state must send back in
    ``X-CSRF-Token`` (None for bearer requests, which are exempt)."""

    id: str
    email: str | None
    name: str | None
    role: str
    permissions: frozenset[str]
    via: str
    session_id: str | None = None
    csrf_token: str | None = field(default=None, repr=False)
    email_verified: bool = False
    mfa_enabled: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def has_permission(self, *permissions: str) -> bool:
        return all(p in self.permissions for p in permissions)

    @classmethod
    def from_user(
        cls,
        user: Mapping[str, Any],
        permissions: list[str] | frozenset[str],
        *,
        via: str,
        session_id: str | None = None,
        csrf_token: str | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> Identity:
        return cls(
            id=str(user["id"]),
            email=user.get("email"),
            name=user.get("name"),
            role=str(user.get("role") or ""),
            permissions=frozenset(permissions),
            via=via,
            session_id=session_id,
            csrf_token=csrf_token,
            email_verified=bool(user.get("email_verified")),
            mfa_enabled=bool(user.get("mfa_enabled")),
            claims=dict(claims or {}),
        )
