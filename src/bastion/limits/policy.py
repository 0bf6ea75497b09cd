"""Budgets for the endpoints that take a guess or send mail (SPEC §3).

Each budget is ``(limit, window seconds)`` per key; ``BASTION_RATE_LIMITS`` (JSON) can
override any of them, and ``"*"`` overrides all (useful for load tests). Login's own
per-IP failure budget is ``IP_FAILURE_LIMIT`` / ``IP_FAILURE_WINDOW``.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULTS: dict[str, tuple[int, int]] = {
    "register:ip": (100, 3600),
    "forgot:ip": (30, 900),
    "forgot:email": (5, 900),
    "reset:ip": (100, 900),
    "resend:ip": (30, 3600),
    "resend:user": (5, 3600),
    "mfa:ip": (100, 900),
    "mfa:user": (30, 900),
    "password-change:user": (10, 900),
    "token:ip": (600, 60),
}


def budget(overrides: Mapping[str, list[int]], name: str) -> tuple[int, int]:
    if name in overrides:
        limit, window = overrides[name]
        return int(limit), int(window)
    if "*" in overrides:
        limit, window = overrides["*"]
        return int(limit), int(window)
    return DEFAULTS[name]
