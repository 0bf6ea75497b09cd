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

from sqlalchemy import func, literal_column, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.direct import Query, Steps, insert_values, run_in
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


# Built once. The lock serialises appends until the transaction ends.
_LOCK = {
    "postgresql": select(func.pg_advisory_xact_lock(literal_column(str(AUDIT_LOCK_ID)))),
    "sqlite": None,  # writers are serial already
}
_LAST_HASH = select(audit_events.c.hash).order_by(audit_events.c.id.desc()).limit(1)
_INSERT = insert_values(audit_events, skip=("id",))


def appended(
    action: str,
    *,
    now: datetime,
    user_id: str | None = None,
    actor_id: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    details: dict[str, Any] | None = None,
) -> Steps[None]:
    """Write one event (in the transaction that runs these steps)."""
    yield Query(_LOCK, {})
    last = yield Query(_LAST_HASH, {})
    row: dict[str, Any] = {
        "action": action,
        "actor_id": actor_id,
        "user_id": user_id,
        "ip_address": ip_address,
        "user_agent": (user_agent or "")[:512] or None,
        "details": details or None,
        "created_at": now.astimezone(UTC).replace(microsecond=now.microsecond),
    }
    prev = last["hash"] if last is not None else GENESIS
    row["prev_hash"] = prev
    row["hash"] = event_hash(prev, row)
    yield Query(_INSERT, row)


async def append(conn: AsyncConnection, action: str, **fields: Any) -> None:
    """``appended`` in the caller's transaction."""
    await run_in(conn, appended(action, **fields))


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
