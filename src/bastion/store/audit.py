"""Hash-chained audit trail (SPEC §11).

Each event stores the hash of the previous one and its own hash over its content, so an
edited row breaks its own hash and a deleted row breaks the next link. Appends are
serialised (an advisory lock on PostgreSQL, taken by the append's own statement; SQLite
writers are serial already) so that the chain has no forks.
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
# The advisory lock that serialises appends on PostgreSQL (taken in migration 0006's
# bastion_audit_link; earlier versions took it in a statement of its own).
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
    64-digit hex string that needs no escaping, and the event), as ``bastion_audit_link``
    computes it in PostgreSQL (migration 0006)."""
    return hashlib.sha256(f'["{prev_hash}"{content}'.encode()).hexdigest()


_LAST_HASH = select(audit_events.c.hash).order_by(audit_events.c.id.desc()).limit(1)
_FIELDS = [c for c in audit_events.c if c.key not in ("id", "prev_hash", "hash")]


def _link() -> Any:
    """``bastion_audit_link(content)`` (migration 0006) as a table: it takes the chain's
    advisory lock, then reads the last hash in a snapshot of its own (so every event
    committed before the lock is in it) and hashes the content onto it; the lock is held
    until the transaction ends."""
    return (
        func.bastion_audit_link(bindparam("content", type_=String))
        .table_valued("prev_hash", "hash")
        .alias("link")
    )


def _linked_insert() -> Any:
    """PostgreSQL: one statement that links and inserts the event."""
    link = _link()
    values = select(
        *[bindparam(c.key, type_=c.type) for c in _FIELDS], link.c.prev_hash, link.c.hash
    ).select_from(link)
    return audit_events.insert().from_select(
        [*(c.key for c in _FIELDS), "prev_hash", "hash"], values
    )


# Built once. The first statement of an append: on PostgreSQL the whole append (no
# rows back); on SQLite, whose writers are serial already, the last hash (one row,
# always), after which the event hashed onto it is inserted.
_FIRST = {
    "postgresql": _linked_insert(),
    "sqlite": select(
        func.coalesce(_LAST_HASH.scalar_subquery(), literal_column(f"'{GENESIS}'")).label("hash")
    ),
}
_INSERT = {"postgresql": None, "sqlite": insert_values(audit_events, skip=("id",))}
# An append's first statement without its row: on PostgreSQL the lock, the read and the
# hash (the function alone), on SQLite the read of the last hash.
_REHEARSAL = {
    "postgresql": select(_link().c.hash),
    "sqlite": _FIRST["sqlite"],
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
    """Write one event (in the transaction that runs these steps): one statement on
    PostgreSQL (so an append can share a ``together`` round with other queries); on
    SQLite a read of the last hash, then the insert."""
    row = _row(action, now, user_id, actor_id, ip_address, user_agent, details)
    last = yield Query(_FIRST, row)
    if last is None:  # PostgreSQL: linked and inserted
        return
    row["prev_hash"] = last["hash"]
    row["hash"] = _chained(last["hash"], row["content"])
    yield Query(_INSERT, row)


async def append(conn: AsyncConnection, action: str, **fields: Any) -> None:
    """``appended`` in the caller's transaction."""
    await run_in(conn, appended(action, **fields))


async def rehearse(conn: AsyncConnection, action: str, **fields: Any) -> None:
    """The work of ``append`` without the event: the chain's lock (PostgreSQL, held until
    the caller's transaction ends, as an append's), the last hash and the new hash, but
    no row. For the decoy of a flow whose answer must not tell a known account from an
    unknown one by its timing (flows/recovery.py)."""
    row = _row(action, **fields)
    last = await run_in(conn, _rehearsal(row))
    if conn.dialect.name == "sqlite":  # an append hashes in Python there (in SQL on PG)
        _chained(last["hash"], row["content"])


def _rehearsal(row: dict[str, Any]) -> Steps[Any]:
    return (yield Query(_REHEARSAL, row))


def _row(
    action: str,
    now: datetime,
    user_id: str | None = None,
    actor_id: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event's columns and its hashed content (``_content``)."""
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
    return row


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
