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
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from bastion.flows.context import utcnow
from bastion.flows.errors import AccountLocked
from bastion.store import direct
from bastion.store.db import Database
from bastion.store.direct import Query, Steps, per_dialect, run_in
from bastion.store.tables import TS, device_lockouts, rate_limits, users

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

    @property
    def params(self) -> dict[str, Any]:
        # Not the columns' names: SQLAlchemy keeps those for the SET clause.
        return {"counter_user": self.user_id, "counter_device": self.device_id}


@dataclass(frozen=True)
class _Statements:
    """The counter's statements for one table, built once."""

    take: Any
    state: Any
    release: Any
    lock_if_full: Any
    lock_leaked: Any


def _statements(table: Any, where: ColumnElement[bool]) -> _Statements:
    c = table.c
    now = bindparam("now", type_=TS)
    expired = and_(c.locked_until.is_not(None), c.locked_until <= now)
    return _Statements(
        take=update(table)
        .where(
            where,
            or_(
                and_(c.locked_until.is_(None), c.failed_login_attempts < bindparam("threshold")),
                expired,
            ),
        )
        .values(
            failed_login_attempts=case((expired, 1), else_=c.failed_login_attempts + 1),
            locked_until=case((expired, None), else_=c.locked_until),
        )
        .returning(c.failed_login_attempts),
        state=select(c.failed_login_attempts, c.locked_until).where(where),
        release=update(table)
        .where(where)
        .values(failed_login_attempts=0, locked_until=None)
        .returning(*c),
        lock_if_full=update(table)
        .where(where, c.failed_login_attempts >= bindparam("threshold"), c.locked_until.is_(None))
        .values(locked_until=bindparam("until", type_=TS))
        .returning(c.failed_login_attempts),
        lock_leaked=update(table)
        .where(where, c.locked_until.is_(None))
        .values(locked_until=bindparam("until", type_=TS)),
    )


_ACCOUNT = _statements(users, users.c.id == bindparam("counter_user"))
_DEVICE = _statements(
    device_lockouts,
    and_(
        device_lockouts.c.user_id == bindparam("counter_user"),
        device_lockouts.c.device_id == bindparam("counter_device"),
    ),
)
_ENSURE_DEVICE_ROW = per_dialect(
    lambda insert: (
        insert(device_lockouts)
        .values(
            user_id=bindparam("counter_user"),
            device_id=bindparam("counter_device"),
            failed_login_attempts=0,
        )
        .on_conflict_do_nothing()
    )
)


# The account counter's slot taken by email (the user row is its counter): a sign-in
# without a device cookie reads the user and takes the slot in one round trip. The
# second form takes it only while the client's IP is within its failure budget, so
# that the budget's read can go out in the same round trip and an IP over it never
# touches the account's counter (SPEC §3: the IP budget comes first).
_TAKE_BY_EMAIL = _statements(users, users.c.email == bindparam("email")).take
_TAKE_BY_EMAIL_WITHIN_IP_BUDGET = _TAKE_BY_EMAIL.where(
    ~exists().where(
        rate_limits.c.key == bindparam("ip_key"),
        rate_limits.c.count >= bindparam("ip_limit"),
        rate_limits.c.window_ends_at > bindparam("now", type_=TS),
    )
)


def taken_by_email(
    email: str, threshold: int, now: datetime, ip_budget: tuple[str, int] | None = None
) -> Steps[bool]:
    """Take one of the account's slots by its email, without waiting: True when taken;
    False when there is no such account, no slot is free (``reserve`` then waits or
    answers 423) or, with ``ip_budget`` (the IP's rate-limit key and limit), the IP has
    used its budget up. It changes only the counter's columns, so a read of the user
    batched beside it (one snapshot on PostgreSQL, before it on SQLite) sees the row as
    it was."""
    params: dict[str, Any] = {"email": email, "threshold": threshold, "now": now}
    stmt = _TAKE_BY_EMAIL
    if ip_budget is not None:
        stmt = _TAKE_BY_EMAIL_WITHIN_IP_BUDGET
        params["ip_key"], params["ip_limit"] = ip_budget
    return (yield Query(stmt, params)) is not None


def _for(counter: Counter) -> _Statements:
    return _ACCOUNT if counter.device_id is None else _DEVICE


def _take_slot(counter: Counter, threshold: int, now: datetime) -> Steps[Any]:
    """None when a slot was taken, else the counter's state (None: no such row)."""
    st = _for(counter)
    params = {**counter.params, "threshold": threshold, "now": now}
    if counter.device_id is not None:
        yield from _ensure_row(counter)
    if (yield Query(st.take, params)) is not None:
        return None
    return (yield Query(st.state, params)) or {"missing": True}


async def reserve(db: Database, counter: Counter, threshold: int, duration: int) -> None:
    """Take one attempt slot or raise AccountLocked. Waits while slots are only in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SLOT_WAIT_SECONDS
    poll = SLOT_POLL_SECONDS
    while True:
        now = utcnow()
        # Each statement is atomic alone: the UPDATE takes the slot or not, and the
        # state read after a refusal only decides between waiting and 423.
        state = await direct.transaction(db, _take_slot(counter, threshold, now), autocommit=True)
        if state is None:
            return
        if "missing" in state:
            return  # the user vanished; the caller fails the login normally
        if state["locked_until"] is not None and state["locked_until"] > now:
            raise AccountLocked(retry_after=_seconds(state["locked_until"] - now))
        if loop.time() >= deadline:
            # Slots held this long belong to attempts that never finished (a crashed
            # process): treat them as the failures they most likely were.
            until = now + timedelta(seconds=duration)
            async with db.write() as conn:
                await conn.execute(_for(counter).lock_leaked, {**counter.params, "until": until})
            raise AccountLocked(retry_after=duration)
        # Back off: every poll is a write transaction (the SQLite write lock).
        await asyncio.sleep(poll * (0.5 + random.random()))  # noqa: S311 - jitter only
        poll = min(poll * 1.5, SLOT_POLL_MAX_SECONDS)


async def ensure_row_in(conn: AsyncConnection, counter: Counter) -> None:
    """A device counter's row exists (the account's is the user row)."""
    if counter.device_id is not None:
        await run_in(conn, _ensure_row(counter))


def _ensure_row(counter: Counter) -> Steps[None]:
    yield Query(_ENSURE_DEVICE_ROW, counter.params)


def released(counter: Counter) -> Steps[Any]:
    """A successful sign-in frees all the counter's slots. Returns the counter's row as
    it now is (the account's counter: the user row)."""
    return (yield Query(_for(counter).release, counter.params))


async def release_on_success(db: Database, counter: Counter) -> None:
    await direct.transaction(db, released(counter))


async def release_in(conn: AsyncConnection, counter: Counter) -> None:
    """``release_on_success`` in the caller's transaction."""
    await run_in(conn, released(counter))


async def lock_if_full(
    conn: AsyncConnection, counter: Counter, threshold: int, duration: int, now: datetime
) -> bool:
    """After a failure, in the caller's transaction: lock when failures reached the
    threshold. True when this call set the lock (so exactly one caller notifies)."""
    params = {
        **counter.params,
        "threshold": threshold,
        "until": now + timedelta(seconds=duration),
    }
    return (await conn.execute(_for(counter).lock_if_full, params)).first() is not None


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))
