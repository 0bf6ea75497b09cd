"""Hash-chained audit trail (SPEC §11).

Each event stores the hash of the previous one and its own hash over its content, so an
edited row breaks its own hash and a deleted row breaks the next link. Appends are
serialised (an advisory lock on PostgreSQL; SQLite writers are serial already) so that
the chain has no forks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.tables import audit_events

GENESIS = "0" * 64
AUDIT_LOCK_ID = 7_373_726_002


def event_hash(prev_hash: str, row: dict[str, Any]) -> str:
    created = row["created_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    payload = json.dumps(
        [
            prev_hash,
            row["action"],
            row.get("actor_id"),
            row.get("user_id"),
            row.get("ip_address"),
            row.get("user_agent"),
            row.get("details"),
            created,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


async def append(
    conn: AsyncConnection,
    action: str,
    *,
    now: datetime,
    user_id: str | None = None,
    actor_id: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Write one event in the caller's transaction."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"SELECT pg_advisory_xact_lock({AUDIT_LOCK_ID})"))
    last = (
        await conn.execute(select(audit_events.c.hash).order_by(audit_events.c.id.desc()).limit(1))
    ).scalar()
    row: dict[str, Any] = {
        "action": action,
        "actor_id": actor_id,
        "user_id": user_id,
        "ip_address": ip_address,
        "user_agent": (user_agent or "")[:512] or None,
        "details": details or None,
        "created_at": now.astimezone(UTC).replace(microsecond=now.microsecond),
    }
    prev = last or GENESIS
    row["prev_hash"] = prev
    row["hash"] = event_hash(prev, row)
    await conn.execute(audit_events.insert().values(**row))


def first_broken_link(rows: Iterator[RowMapping]) -> tuple[int, int | None]:
    """Walk events in id order; return (count, id of the first broken event or None)."""
    prev = GENESIS
    n = 0
    for r in rows:
        n += 1
        if r["prev_hash"] != prev or event_hash(prev, dict(r)) != r["hash"]:
            return n, int(r["id"])
        prev = r["hash"]
    return n, None
