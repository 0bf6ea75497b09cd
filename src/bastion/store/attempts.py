"""The login-attempt log (SPEC §3)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import login_attempts


async def record(
    conn: AsyncConnection,
    *,
    email: str,
    user_id: str | None,
    ip_address: str | None,
    user_agent: str | None,
    success: bool,
    failure_reason: str | None,
    now: datetime,
) -> None:
    await conn.execute(
        login_attempts.insert().values(
            email=email[:254],
            user_id=user_id,
            ip_address=ip_address,
            user_agent=(user_agent or "")[:512] or None,
            success=success,
            failure_reason=failure_reason,
            created_at=now,
        )
    )
