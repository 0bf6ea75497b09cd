"""Roles and permissions (SPEC §10)."""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_ROLES: dict[str, list[str]] = {
    "admin": ["read", "write", "delete", "manage_users", "manage_settings"],
    "editor": ["read", "write", "delete"],
    "viewer": ["read"],
}


def permissions_for(roles: Mapping[str, list[str]], role: str) -> list[str]:
    """Permissions of a role; an unknown role has none (deny by default)."""
    return list(roles.get(role, []))


def has_permission(roles: Mapping[str, list[str]], role: str, permission: str) -> bool:
    return permission in roles.get(role, [])
