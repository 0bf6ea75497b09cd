"""Known devices per user, kept after their sessions end (SPEC §7 new-device alert)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.direct import Query, Steps, per_dialect, run_in
from bastion.store.tables import known_devices

_REMEMBER = per_dialect(
    lambda insert: (
        insert(known_devices)
        .values(
            user_id=bindparam("user_id"),
            fingerprint=bindparam("fp"),
            location=bindparam("location"),
            first_seen_at=bindparam("now", type_=known_devices.c.first_seen_at.type),
        )
        .on_conflict_do_nothing()
        .returning(known_devices.c.user_id)
    )
)
_ANY_OTHER = select(
    exists()
    .where(
        known_devices.c.user_id == bindparam("user_id"),
        known_devices.c.fingerprint != bindparam("fp"),
    )
    .label("found")
)


def fingerprint(device: dict[str, Any]) -> str:
    """Browser, OS and device type: what "a device never seen before" compares."""
    parts = (device.get("browser"), device.get("os"), device.get("device_type"))
    return "|".join(p or "Unknown" for p in parts)[:300]


def remembered(user_id: str, fp: str, location: str | None, now: datetime) -> Steps[bool]:
    """Insert the device if new; True when it was new."""
    params = {"user_id": user_id, "fp": fp, "location": location, "now": now}
    return (yield Query(_REMEMBER, params)) is not None


async def remember(
    conn: AsyncConnection, user_id: str, fp: str, location: str | None, now: datetime
) -> bool:
    return await run_in(conn, remembered(user_id, fp, location, now))


def others_known(user_id: str, fp: str) -> Steps[bool]:
    """Whether the user has a known device other than ``fp``."""
    row = yield Query(_ANY_OTHER, {"user_id": user_id, "fp": fp})
    return bool(row["found"])
