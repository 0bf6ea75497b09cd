"""The security report (SPEC §11) and the audit-chain check (``bastion audit --verify``).

Shape of the report (each list newest or worst first, at most ``limit`` entries; the
``totals`` object counts every match, not only the listed ones, up to ``TOTALS_CAP``:
a total that reached the cap reads ``TOTALS_CAP`` and is named in ``totals_capped``,
so that the report costs the same with ten million users as with ten thousand):

- ``users_without_mfa``: ``[{id, email, role, created_at}]``, oldest account first;
- ``locked_accounts``: ``[{id, email, locked_until, failed_login_attempts, scope}]`` where
  ``scope`` is ``account`` (locked for every client without a device cookie) or
  ``device`` (one browser's counter is locked);
- ``suspicious_logins``: ``[{email, failed_attempts, last_failed_at, distinct_ips}]``,
  emails with more than 5 failed logins in the last 24 hours, unknown emails included;
- ``unusual_locations``: ``[{session_id, user_id, email, location, ip_address,
  device_name, created_at, usual_locations}]``, live sessions from a location that none
  of the user's first three sessions had (flagged at sign-in, see flows/locations.py;
  ``usual_locations`` lists the baseline).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bastion.flows.users import iso
from bastion.runtime import Bastion
from bastion.store import admin as admin_store
from bastion.store import audit
from bastion.store.attempts import SUSPICIOUS_THRESHOLD, SUSPICIOUS_WINDOW
from bastion.store.tables import audit_events

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
TOTALS_CAP = 1_000


def _iso_fields(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: (iso(v) if k in names else v) for k, v in row.items()}


async def security_report(bx: Bastion, now: datetime, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    cap = TOTALS_CAP
    async with bx.db.read() as conn:
        n_mfa, no_mfa = await admin_store.users_without_mfa(conn, limit, cap)
        n_locked, locked = await admin_store.locked_accounts(conn, now, limit, cap)
        n_susp, suspicious = await admin_store.suspicious_logins(
            conn, now - SUSPICIOUS_WINDOW, SUSPICIOUS_THRESHOLD, limit, cap
        )
        n_unusual, unusual = await admin_store.unusual_locations(conn, now, limit, cap)
    counted = {
        "users_without_mfa": n_mfa,
        "locked_accounts": n_locked,
        "suspicious_logins": n_susp,
        "unusual_locations": n_unusual,
    }
    return {
        "generated_at": iso(now),
        "users_without_mfa": [_iso_fields(dict(r), "created_at") for r in no_mfa],
        "locked_accounts": [_iso_fields(r, "locked_until") for r in locked],
        "suspicious_logins": [
            {
                "email": r["email"],
                "failed_attempts": int(r["failed_attempts"]),
                "last_failed_at": iso(r["last_failed_at"]),
                "distinct_ips": int(r["distinct_ips"]),
            }
            for r in suspicious
        ],
        "unusual_locations": [_iso_fields(r, "created_at") for r in unusual],
        "totals": {name: min(n, cap) for name, n in counted.items()},
        "totals_capped": [name for name, n in counted.items() if n > cap],
    }


async def verify_audit_chain(bx: Bastion) -> tuple[int, int | None]:
    """Walk the whole chain in id order, streamed (a server-side cursor on PostgreSQL),
    through ``store.audit.first_broken_link``. Returns (events read, first broken id)."""
    from sqlalchemy import select

    stmt = select(audit_events).order_by(audit_events.c.id)

    def walk(sync_conn: Any) -> tuple[int, int | None]:
        result = sync_conn.execution_options(stream_results=True, yield_per=2000).execute(stmt)
        try:
            return audit.first_broken_link(iter(result.mappings()))
        finally:
            result.close()

    async with bx.db.read() as conn:
        if conn.dialect.name == "postgresql":
            async with conn.begin():  # server-side cursors live in a transaction
                return await conn.run_sync(walk)
        return await conn.run_sync(walk)
