"""Statements for MFA: the TOTP replay guard, backup codes, MFA-step token slots and the
lockout counter shared with password login.

Every "use once" here is one conditional UPDATE ... RETURNING, so that concurrent
requests, on one process or many, cannot both succeed (SPEC §6; RFC 6238 §5.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, Table, and_, case, delete, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.core import secrets as core_secrets
from bastion.store.tables import backup_codes, device_lockouts, one_time_tokens, users


async def accept_step(conn: AsyncConnection, user_id: str, step: int) -> bool:
    """Record ``step`` as the last accepted TOTP step, only if it is newer than the one
    stored. False means another request already accepted this step (or a later one)."""
    c = users.c
    stmt = (
        update(users)
        .where(
            c.id == user_id,
            c.mfa_enabled.is_(True),
            or_(c.mfa_last_step.is_(None), c.mfa_last_step < step),
        )
        .values(mfa_last_step=step)
        .returning(c.id)
    )
    return (await conn.execute(stmt)).first() is not None


async def replace_secret_ciphertext(
    conn: AsyncConnection, user_id: str, old: str, new: str
) -> None:
    """Swap the stored ciphertext for a re-encryption of the same secret, unless it has
    changed meanwhile (lazy key rotation)."""
    await conn.execute(
        update(users).where(users.c.id == user_id, users.c.mfa_secret == old).values(mfa_secret=new)
    )


async def replace_backup_codes(
    conn: AsyncConnection, user_id: str, code_hashes: Iterable[str]
) -> None:
    """Void every old code (deleted: nothing to keep) and store the new hashes."""
    await conn.execute(delete(backup_codes).where(backup_codes.c.user_id == user_id))
    rows = [{"user_id": user_id, "code_hash": h, "used_at": None} for h in code_hashes]
    if rows:
        await conn.execute(backup_codes.insert(), rows)


async def delete_backup_codes(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(delete(backup_codes).where(backup_codes.c.user_id == user_id))


async def use_backup_code(
    conn: AsyncConnection, user_id: str, code_hash: str, now: datetime
) -> bool:
    """Mark an unused code used; True for exactly one of any number of parallel callers."""
    t = backup_codes
    stmt = (
        update(t)
        .where(t.c.user_id == user_id, t.c.code_hash == code_hash, t.c.used_at.is_(None))
        .values(used_at=now)
        .returning(t.c.id)
    )
    return (await conn.execute(stmt)).first() is not None


async def remaining_backup_codes(conn: AsyncConnection, user_id: str) -> int:
    t = backup_codes
    stmt = select(func.count()).where(t.c.user_id == user_id, t.c.used_at.is_(None))
    return int((await conn.execute(stmt)).scalar_one())


def _live_token(token: str, now: datetime) -> ColumnElement[bool]:
    t = one_time_tokens
    return and_(
        t.c.token_hash == core_secrets.token_hash(token),
        t.c.purpose == "mfa",
        t.c.used_at.is_(None),
        t.c.expires_at > now,
    )


async def reserve_token_attempt(
    conn: AsyncConnection, token: str, now: datetime, limit: int
) -> RowMapping | None:
    """Take one of the token's ``limit`` attempts *before* the code is checked, so that
    parallel guesses on one token get no more than ``limit`` checks in total. None when
    the token is unknown, used, expired or out of attempts."""
    if not token or len(token) > 200:
        return None
    t = one_time_tokens
    stmt = (
        update(t)
        .where(_live_token(token, now), t.c.failed_attempts < limit)
        .values(failed_attempts=t.c.failed_attempts + 1)
        .returning(t.c.user_id, t.c.failed_attempts)
    )
    return (await conn.execute(stmt)).mappings().first()


async def kill_token_if_spent(conn: AsyncConnection, token: str, now: datetime, limit: int) -> bool:
    """After a wrong code: the token dies once its attempts are spent."""
    t = one_time_tokens
    stmt = (
        update(t)
        .where(_live_token(token, now), t.c.failed_attempts >= limit)
        .values(used_at=now)
        .returning(t.c.id)
    )
    return (await conn.execute(stmt)).first() is not None


async def consume_token(conn: AsyncConnection, token: str, now: datetime) -> bool:
    """Use the MFA-step token; True for exactly one caller."""
    t = one_time_tokens
    stmt = update(t).where(_live_token(token, now)).values(used_at=now).returning(t.c.id)
    return (await conn.execute(stmt)).first() is not None


async def void_tokens(conn: AsyncConnection, user_id: str, now: datetime) -> None:
    """End every pending MFA step of the user (MFA turned off)."""
    t = one_time_tokens
    await conn.execute(
        update(t)
        .where(t.c.user_id == user_id, t.c.purpose == "mfa", t.c.used_at.is_(None))
        .values(used_at=now)
    )


# The lockout counter of a login (flows.lockout.Counter): the user's row for anonymous
# clients, the device's row for clients with a valid device cookie.


def _counter(user_id: str, device_id: str | None) -> tuple[Table, ColumnElement[bool]]:
    if device_id is None:
        return users, users.c.id == user_id
    t = device_lockouts
    return t, and_(t.c.user_id == user_id, t.c.device_id == device_id)


async def locked_until(
    conn: AsyncConnection, user_id: str, device_id: str | None
) -> datetime | None:
    table, where = _counter(user_id, device_id)
    stmt = select(table.c.locked_until).where(where)
    value: datetime | None = (await conn.execute(stmt)).scalar_one_or_none()
    return value


async def add_failure(conn: AsyncConnection, user_id: str, device_id: str | None) -> None:
    """One more failed attempt on the counter (a wrong MFA code counts like a wrong
    password, SPEC §3). Device rows exist already: login created them."""
    table, where = _counter(user_id, device_id)
    c = table.c
    await conn.execute(
        update(table).where(where).values(failed_login_attempts=c.failed_login_attempts + 1)
    )


async def give_back_slot(conn: AsyncConnection, user_id: str, device_id: str | None) -> None:
    """Return the slot a login took when its password was right but a second step is
    still due: earlier failures stay counted until the whole sign-in succeeds."""
    table, where = _counter(user_id, device_id)
    c = table.c
    await conn.execute(
        update(table)
        .where(where)
        .values(
            failed_login_attempts=case(
                (c.failed_login_attempts > 0, c.failed_login_attempts - 1), else_=0
            )
        )
    )


async def reset_counter(conn: AsyncConnection, user_id: str, device_id: str | None) -> None:
    table, where = _counter(user_id, device_id)
    await conn.execute(
        update(table).where(where).values(failed_login_attempts=0, locked_until=None)
    )
