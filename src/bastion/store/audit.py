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

from sqlalchemy import String, bindparam, func, literal_column, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.store.direct import Query, Steps, insert_values, run_in
from bastion.store.tables import audit_events

GENESIS = "0" * 64
AUDIT_LOCK_ID = 7_373_726_002


def event_hash(prev_hash: str, row: dict[str, Any]) -> str:
    return _chained(prev_hash, _content(row))


def _content(row: dict[str, Any]) -> str:
    """The hashed JSON array after its first element (the previous hash): the event's
    fields and time, ``,"login_succeeded",...]``. ASCII only (``ensure_ascii``)."""
    created = row["created_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    payload = json.dumps(
        [
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
    return "," + payload[1:]


def _chained(prev_hash: str, content: str) -> str:
    """sha256 of ``["<prev_hash>",<content>`` (the JSON array of the previous hash, a
    64-digit hex string that needs no escaping, and the event), as ``_chained_insert``
    computes it in PostgreSQL."""
    return hashlib.sha256(f'["{prev_hash}"{content}'.encode()).hexdigest()


# Built once. The lock serialises appends until the transaction ends.
_LOCK = {
    "postgresql": select(func.pg_advisory_xact_lock(literal_column(str(AUDIT_LOCK_ID)))),
    "sqlite": None,  # writers are serial already
}
_LAST_HASH = select(audit_events.c.hash).order_by(audit_events.c.id.desc()).limit(1)


def _chained_insert() -> Any:
    """PostgreSQL: read the chain's last hash and insert the event hashed onto it, in one
    statement (after the lock, so its snapshot has every earlier event)."""
    fields = [c for c in audit_events.c if c.key not in ("id", "prev_hash", "hash")]
    last = select(
        func.coalesce(_LAST_HASH.scalar_subquery(), literal_column(f"'{GENESIS}'")).label("h")
    ).subquery("last")
    payload: Any = (
        literal_column("'[\"'")
        + last.c.h
        + literal_column("'\"'")
        + bindparam("content", type_=String)
    )
    hashed = func.encode(
        func.sha256(func.convert_to(payload, literal_column("'UTF8'"))),
        literal_column("'hex'"),
    )
    values = select(
        *[bindparam(c.key, type_=c.type) for c in fields], last.c.h, hashed
    ).select_from(last)
    return audit_events.insert().from_select(
        [*(c.key for c in fields), "prev_hash", "hash"], values
    )


_APPEND = {
    "postgresql": _chained_insert(),
    "sqlite": insert_values(audit_events, skip=("id",)),
}


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
    """Write one event (in the transaction that runs these steps). On PostgreSQL the
    last hash is read and the new one computed by the insert itself (two round trips:
    the lock, the insert); on SQLite here, from the last hash read before."""
    yield Query(_LOCK, {})
    last = yield Query({"postgresql": None, "sqlite": _LAST_HASH}, {})
    row: dict[str, Any] = {
        "action": action,
        "actor_id": actor_id,
        "user_id": user_id,
        "ip_address": ip_address,
        "user_agent": (user_agent or "")[:512] or None,
        "details": details or None,
        "created_at": now.astimezone(UTC).replace(microsecond=now.microsecond),
    }
    row["content"] = _content(row)
    # Used on SQLite only (PostgreSQL's insert reads the last hash itself).
    prev = last["hash"] if last is not None else GENESIS
    row["prev_hash"] = prev
    row["hash"] = _chained(prev, row["content"])
    yield Query(_APPEND, row)


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
