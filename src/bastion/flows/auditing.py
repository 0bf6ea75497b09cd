"""The audit event of a request: what happened, to whose account, by whom, from where."""

from __future__ import annotations

from typing import Any

from bastion.flows.context import RequestContext
from bastion.store import audit


async def audited(
    conn: Any,
    ctx: RequestContext,
    action: str,
    *,
    user_id: str | None,
    actor_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append ``action`` to the audit chain in the caller's transaction, stamped with the
    request's time, IP address and user agent. ``actor_id`` is None where nobody signed
    in acted (a failed sign-in, a reset link)."""
    await audit.append(
        conn,
        action,
        now=ctx.now,
        user_id=user_id,
        actor_id=actor_id,
        ip_address=ctx.ip,
        user_agent=ctx.user_agent,
        details=details,
    )
