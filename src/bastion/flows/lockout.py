"""Account lockout with the attempt reserved *before* the password is checked (SPEC §3).

The usual implementation reads the count, checks the password, then writes the count,
so fifty parallel guesses all get checked. Here one conditional UPDATE takes a slot: at
most ``LOCKOUT_THRESHOLD`` password checks can be in flight or failed per lock period,
across any number of processes. A failure keeps its slot; the failure that fills the
last slot sets ``locked_until``; a success frees all slots.

Clients holding a valid device cookie for the account are counted in ``device_lockouts``
instead, so that an attacker locking the account out does not lock out its owner
(OWASP "device cookies").
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from bastion.flows.context import utcnow
from bastion.flows.errors import AccountLocked
from bastion.store.db import Database
from bastion.store.tables import device_lockouts, users

# How long an attempt waits for a slot held by attempts in flight. A password check takes
# well under a second; slots still held after this long are taken to be leaked by a
# process that died mid-check, and become a lock (which expires) rather than a counter
# stuck at the threshold forever. Generous, so that a loaded server never turns right
# passwords into 423.
SLOT_WAIT_SECONDS = 30.0
SLOT_POLL_SECONDS = 0.02
SLOT_POLL_MAX_SECONDS = 0.2


@dataclass(frozen=True)
class Counter:
    """Which counter a login uses: the account's (anonymous) or one device's."""

    user_id: str
    device_id: str | None = None


def _table_filter(counter: Counter) -> tuple[object, ColumnElement[bool]]:
    if counter.device_id is None:
        return users, users.c.id == counter.user_id
    t = device_lockouts
    return t, and_(t.c.user_id == counter.user_id, t.c.device_id == counter.device_id)


async def _ensure_device_row(db: Database, counter: Counter) -> None:
    ins = (sqlite_insert if db.is_sqlite else pg_insert)(device_lockouts)
    stmt = ins.values(
        user_id=counter.user_id, device_id=counter.device_id, failed_login_attempts=0
    ).on_conflict_do_nothing()
    async with db.write() as conn:
        await conn.execute(stmt)


async def reserve(db: Database, counter: Counter, threshold: int, duration: int) -> None:
    """Take one attempt slot or raise AccountLocked. Waits while slots are only in flight."""
    if counter.device_id is not None:
        await _ensure_device_row(db, counter)
    table, where = _table_filter(counter)
    c = table.c  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SLOT_WAIT_SECONDS
    poll = SLOT_POLL_SECONDS
    while True:
        now = utcnow()
        expired = and_(c.locked_until.is_not(None), c.locked_until <= now)
        stmt = (
            update(table)  # type: ignore[arg-type]
            .where(
                where,
                or_(
                    and_(c.locked_until.is_(None), c.failed_login_attempts < threshold),
                    expired,
                ),
            )
            .values(
                failed_login_attempts=case((expired, 1), else_=c.failed_login_attempts + 1),
                locked_until=case((expired, None), else_=c.locked_until),
            )
            .returning(c.failed_login_attempts)
        )
        async with db.write() as conn:
            taken = (await conn.execute(stmt)).first()
            if taken is not None:
                return
            state = (
                await conn.execute(select(c.failed_login_attempts, c.locked_until).where(where))
            ).first()
        if state is None:
            return  # the user vanished; the caller fails the login normally
        if state.locked_until is not None and state.locked_until > now:
            raise AccountLocked(retry_after=_seconds(state.locked_until - now))
        if loop.time() >= deadline:
            # Slots held this long belong to attempts that never finished (a crashed
            # process): treat them as the failures they most likely were.
            until = now + timedelta(seconds=duration)
            async with db.write() as conn:
                await conn.execute(
                    update(table).where(where, c.locked_until.is_(None)).values(locked_until=until)  # type: ignore[arg-type]
                )
            raise AccountLocked(retry_after=duration)
        # Back off: every poll is a write transaction (the SQLite write lock).
        await asyncio.sleep(poll * (0.5 + random.random()))  # noqa: S311 - jitter only
        poll = min(poll * 1.5, SLOT_POLL_MAX_SECONDS)


async def release_on_success(db: Database, counter: Counter) -> None:
    async with db.write() as conn:
        await release_in(conn, counter)


async def release_in(conn: AsyncConnection, counter: Counter) -> None:
    """``release_on_success`` in the caller's transaction (the sign-in's own)."""
    table, where = _table_filter(counter)
    await conn.execute(
        update(table).where(where).values(failed_login_attempts=0, locked_until=None)  # type: ignore[arg-type]
    )


async def lock_if_full(
    conn: AsyncConnection, counter: Counter, threshold: int, duration: int, now: datetime
) -> bool:
    """After a failure, in the caller's transaction: lock when failures reached the
    threshold. True when this call set the lock (so exactly one caller notifies)."""
    table, where = _table_filter(counter)
    c = table.c  # type: ignore[attr-defined]
    stmt = (
        update(table)  # type: ignore[arg-type]
        .where(where, c.failed_login_attempts >= threshold, c.locked_until.is_(None))
        .values(locked_until=now + timedelta(seconds=duration))
        .returning(c.failed_login_attempts)
    )
    return (await conn.execute(stmt)).first() is not None


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))
