"""Known devices per user, kept after their sessions end (SPEC §7 new-device alert)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import known_devices


def fingerprint(device: dict[str, Any]) -> str:
    """Browser, OS and device type: what "a device never seen before" compares."""
    parts = (device.get("browser"), device.get("os"), device.get("device_type"))
    return "|".join(p or "Unknown" for p in parts)[:300]


async def remember(
    conn: AsyncConnection, user_id: str, fp: str, location: str | None, now: datetime
) -> bool:
    """Insert the device if new; True when it was new."""
    ins: Any = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    stmt = (
        ins(known_devices)
        .values(user_id=user_id, fingerprint=fp, location=location, first_seen_at=now)
        .on_conflict_do_nothing()
        .returning(known_devices.c.user_id)
    )
    return (await conn.execute(stmt)).first() is not None


async def any_other_for_user(conn: AsyncConnection, user_id: str, fp: str) -> bool:
    """Whether the user has a known device other than ``fp``."""
    stmt = select(
        exists().where(known_devices.c.user_id == user_id, known_devices.c.fingerprint != fp)
    )
    return bool((await conn.execute(stmt)).scalar())
