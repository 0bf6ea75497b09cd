"""The ``bastion_device`` cookie (SPEC §3, OWASP device cookies).

The cookie holds, for each account this browser signed in to, ``user_id:nonce``; the
whole list is signed. A valid entry for the account being signed in to routes the
attempt to that device's own lockout counter. An entry for another account, or a forged
cookie, gives nothing.
"""

from __future__ import annotations

from bastion.core import secrets as core_secrets
from bastion.core.secrets import Signer

MAX_ENTRIES = 10
MAX_AGE = 400 * 24 * 3600  # browsers cap cookie lifetime at 400 days


def _entries(signer: Signer, cookie: str | None) -> list[tuple[str, str]]:
    if not cookie or len(cookie) > 4000:
        return []
    value = signer.unsign(cookie)
    if value is None:
        return []
    out = []
    for item in value.split("~"):
        user_id, sep, nonce = item.partition(":")
        if sep and user_id and nonce:
            out.append((user_id, nonce))
    return out


def device_id_for(signer: Signer, cookie: str | None, user_id: str) -> str | None:
    for uid, nonce in _entries(signer, cookie):
        if uid == user_id:
            return nonce
    return None


def issue(signer: Signer, cookie: str | None, user_id: str) -> str:
    """The cookie value after a successful sign-in to ``user_id``."""
    entries = [(u, n) for u, n in _entries(signer, cookie) if u != user_id]
    nonce = device_id_for(signer, cookie, user_id) or core_secrets.new_id()
    entries = [(user_id, nonce), *entries][:MAX_ENTRIES]
    return signer.sign("~".join(f"{u}:{n}" for u, n in entries))
