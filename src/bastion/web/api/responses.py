"""Response bodies, for the OpenAPI document only (routes build their JSON by hand).

Documenting success bodies lets schema fuzzing check what the API really answers
(issue 11), not just that the status is documented. Models allow extra keys so that a
field added later is not a contract break; the fields listed are required.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class UserOut(_Open):
    """The user object of SPEC §2."""

    id: str
    email: str
    name: str | None
    role: str
    permissions: list[str]
    email_verified: bool
    mfa_enabled: bool
    created_at: str


class SessionRef(_Open):
    id: str
    expires_at: str


class SignedInOut(_Open):
    user: UserOut
    session: SessionRef
    csrf_token: str


class MfaRequiredOut(_Open):
    mfa_required: Literal[True]
    mfa_token: str


class CallerSessionRef(_Open):
    """The caller's session; for a bearer token bound to a session (``sid``), its
    expiry is not looked up and is null."""

    id: str
    expires_at: str | None


class SessionOut(_Open):
    """``GET /api/auth/session``: ``session`` and ``csrf_token`` are null for a bearer
    token without a session."""

    user: UserOut
    session: CallerSessionRef | None
    csrf_token: str | None


class UserEnvelope(_Open):
    user: UserOut


class StatusOut(_Open):
    status: str


class ReadyOut(_Open):
    status: str
    checks: dict[str, bool]


class DeviceSession(_Open):
    id: str
    device_name: str | None
    device_type: str | None
    browser: str | None
    os: str | None
    ip_address: str | None
    location: str | None
    created_at: str
    last_active_at: str
    current: bool


class SessionsOut(_Open):
    sessions: list[DeviceSession]


class RevokedOut(_Open):
    revoked: int


class TokenPairOut(_Open):
    """RFC 6749 §5.1."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str


class JwksOut(_Open):
    keys: list[dict[str, Any]]


def ok(model: type[BaseModel], status: int = 200, text: str = "Success") -> dict[int | str, Any]:
    return {status: {"model": model, "description": text}}
