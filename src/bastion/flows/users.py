"""The public user object (SPEC §2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bastion.core.rbac import permissions_for


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def public_user(row: Mapping[Any, Any], roles: Mapping[str, list[str]]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "email": row["email"],
        "name": row["name"],
        "role": row["role"],
        "permissions": permissions_for(roles, row["role"]),
        "email_verified": bool(row["email_verified"]),
        "mfa_enabled": bool(row["mfa_enabled"]),
        "created_at": iso(row["created_at"]),
    }
