"""The signed-in user's own profile (the account page, SPEC §12): the display name.

The email address is the sign-in identifier and is not edited here (changing it needs
a verified-address flow of its own)."""

from __future__ import annotations

import unicodedata

from sqlalchemy.engine import RowMapping

from bastion.flows.context import RequestContext
from bastion.flows.errors import InvalidRequest, Unauthenticated
from bastion.runtime import Bastion
from bastion.store import users as user_store

MAX_NAME = 200


def clean_name(raw: str) -> str | None:
    """Trimmed, NFC, no control characters; empty means no name."""
    name = unicodedata.normalize("NFC", raw).strip()
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise InvalidRequest("The name contains invisible characters.", details=["name: invalid"])
    if len(name) > MAX_NAME:
        raise InvalidRequest(
            f"Use at most {MAX_NAME} characters.", details=[f"name: at most {MAX_NAME}"]
        )
    return name or None


async def update_name(bx: Bastion, ctx: RequestContext, user_id: str, raw: str) -> RowMapping:
    name = clean_name(raw)
    async with bx.db.write() as conn:
        await user_store.update_fields(conn, user_id, name=name, updated_at=ctx.now)
        fresh = await user_store.get_by_id(conn, user_id)
    if fresh is None:
        raise Unauthenticated()
    return fresh
