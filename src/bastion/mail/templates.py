"""Jinja2 templates for every mail event: a subject, a text part and an HTML part."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

PRODUCT = "Bastion"

SUBJECTS = {
    "email_verification": "Confirm your email address",
    "password_reset": "Reset your password",
    "password_changed": "Your password was changed",
    "account_locked": "Your account was temporarily locked",
    "new_device": "New sign-in to your account",
    "mfa_enabled": "Two-factor authentication turned on",
    "mfa_disabled": "Two-factor authentication turned off",
    "backup_code_used": "A backup code was used to sign in",
}


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("bastion.mail", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render(event: str, *, base_url: str, **context: Any) -> tuple[str, str, str]:
    env = _env()
    ctx = {"product": PRODUCT, "base_url": base_url, "subject": SUBJECTS[event], **context}
    text = env.get_template(f"{event}.txt").render(**ctx)
    html = env.get_template(f"{event}.html").render(**ctx)
    return f"{PRODUCT}: {SUBJECTS[event]}", text, html
