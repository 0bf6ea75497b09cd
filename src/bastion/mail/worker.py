"""The outbox delivery worker (SPEC §11): mail is never lost, and sent once.

Every server process runs one worker. A worker *claims* due rows before sending them,
so that several processes on one database never send the same message twice:

- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks rows no other worker holds,
  and the same transaction marks them ``sending`` with a lease (``claimed_until``).
- SQLite: one conditional ``UPDATE ... RETURNING``; write transactions are serialised
  by ``BEGIN IMMEDIATE`` (store/db.py), so two claims never see the same row as due.

A claimed row whose lease ran out (its process died mid-send) is due again: delivery
is at-least-once across crashes and exactly-once otherwise. A process that stops
normally (SIGTERM, a deploy) hands its unsent claimed rows back on the way out, so
they do not wait for the lease; the stop (the task's cancellation) never interrupts the
worker's own database writes, which run to their end first (``_to_the_end``): a claim
cancelled while it commits could be committed without the worker knowing it held the
rows. A failed attempt schedules
the next one with exponential backoff (``MAIL_RETRY_BASE`` doubling up to
``MAIL_RETRY_MAX``); a message still undelivered ``MAIL_GIVE_UP_AFTER`` seconds after
it was queued, or refused permanently (5xx for the recipient), becomes ``failed``.

The worker wakes as soon as a transaction that queued mail in this process commits
(``bx.mail_wakeup``) and otherwise polls every ``POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, event, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.flows.context import utcnow
from bastion.mail import outbox as outbox_module
from bastion.mail.smtp import SmtpTransport, build_message, is_permanent, parse_url
from bastion.runtime import Bastion
from bastion.store.tables import outbox

log = logging.getLogger("bastion.mail")

POLL_SECONDS = 1.0
BATCH_SIZE = 10
# A claim outlives any single send (SMTP timeout 20 s per step); the worker stops using
# a batch's claim at half of it and hands the rest back.
LEASE_SECONDS = 120.0
# At shutdown, how long the worker may take to hand back what it had claimed.
SHUTDOWN_SECONDS = 5.0

T = TypeVar("T")


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds until the next try after ``attempts`` failed ones: base, 2·base, 4·base…"""
    return float(min(cap, base * 2 ** max(0, min(attempts - 1, 30))))


def _due(now: datetime) -> Any:
    c = outbox.c
    return or_(
        and_(c.status == "pending", c.next_attempt_at <= now),
        and_(c.status == "sending", c.claimed_until < now),
    )


async def claim(bx: Bastion, now: datetime, limit: int = BATCH_SIZE) -> list[RowMapping]:
    """Take up to ``limit`` due messages for this worker, atomically."""
    c = outbox.c
    lease = now + timedelta(seconds=LEASE_SECONDS)
    # A lock-free look first: most polls find nothing, and then take no write lock.
    async with bx.db.read() as conn:
        if (await conn.execute(select(c.id).where(_due(now)).limit(1))).first() is None:
            return []
    async with bx.db.write() as conn:
        if bx.db.is_sqlite:
            ids: Any = (
                select(c.id).where(_due(now)).order_by(c.next_attempt_at, c.id).limit(limit)
            ).scalar_subquery()
        else:
            picked = select(c.id).where(_due(now)).order_by(c.next_attempt_at, c.id).limit(limit)
            rows = await conn.execute(picked.with_for_update(skip_locked=True))
            ids = [r[0] for r in rows]
            if not ids:
                return []
        stmt = (
            update(outbox)
            .where(c.id.in_(ids), _due(now))
            .values(status="sending", claimed_until=lease)
            .returning(outbox)
        )
        claimed = list((await conn.execute(stmt)).mappings().all())
    claimed.sort(key=lambda r: (r["next_attempt_at"], r["id"]))
    return claimed


async def _to_the_end(
    write: Awaitable[T], stopped: Callable[[T], Awaitable[Any]] | None = None
) -> T:
    """Run one of the worker's database writes to its end even if the worker is cancelled
    meanwhile (the server stopping): a transaction cancelled while it commits may be
    committed all the same, and the error of the rollback that follows replaces the
    cancellation. Cancelled meanwhile, it waits for the write (``SHUTDOWN_SECONDS`` at
    most), gives its result to ``stopped`` (a claim's: hand the rows back), and raises
    the cancellation again."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task], timeout=SHUTDOWN_SECONDS)
        if stopped and task.done() and not task.cancelled() and task.exception() is None:
            await stopped(task.result())
        raise


async def _finish(conn: AsyncConnection, row: RowMapping, **values: Any) -> int:
    """Update a row this worker still holds (same claim); 1 if it did, else 0."""
    c = outbox.c
    result = await conn.execute(
        update(outbox)
        .where(c.id == row["id"], c.status == "sending", c.claimed_until == row["claimed_until"])
        .values(claimed_until=None, **values)
    )
    return int(result.rowcount or 0)


async def mark_sent(bx: Bastion, row: RowMapping) -> None:
    now = utcnow()
    async with bx.db.write() as conn:
        # Bodies hold live links (reset, verification) whose tokens the database
        # otherwise keeps only hashed: once delivered, they are dropped.
        await _finish(
            conn,
            row,
            status="sent",
            sent_at=now,
            attempts=row["attempts"] + 1,
            last_error=None,
            text_body="",
            html_body="",
        )
    log.info(
        "mail sent",
        extra={
            "event": row["event"],
            "recipient": row["recipient"],
            "attempt": row["attempts"] + 1,
        },
    )


async def mark_failed_attempt(bx: Bastion, row: RowMapping, error: BaseException) -> None:
    s = bx.settings
    now = utcnow()
    attempts = row["attempts"] + 1
    reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]
    give_up = is_permanent(error) or now - row["created_at"] >= timedelta(
        seconds=s.mail_give_up_after
    )
    delay = backoff(attempts, s.mail_retry_base, s.mail_retry_max)
    async with bx.db.write() as conn:
        await _finish(
            conn,
            row,
            status="failed" if give_up else "pending",
            attempts=attempts,
            last_error=reason,
            next_attempt_at=now + timedelta(seconds=delay),
        )
    extra = {"event": row["event"], "recipient": row["recipient"], "attempt": attempts}
    if give_up:
        log.error("mail failed, giving up: %s", reason, extra=extra)
    else:
        log.warning("mail delivery failed, retrying in %.1fs: %s", delay, reason, extra=extra)


async def release(bx: Bastion, rows: list[RowMapping]) -> int:
    """Hand unsent claimed rows back without counting an attempt; how many went back
    (a row already finished, sent or failed, is left as it is)."""
    released = 0
    async with bx.db.write() as conn:
        for row in rows:
            released += await _finish(conn, row, status="pending")
    return released


async def deliver_batch(bx: Bastion, transport: SmtpTransport, rows: list[RowMapping]) -> None:
    """Send a claimed batch over one SMTP connection. Cancelled (the server shutting
    down), it hands back the rows it had not finished, so that the next process sends
    them at once rather than after the lease (``_handed_back``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    sender = bx.settings.email_from
    client = None
    i = 0
    try:
        for i, row in enumerate(rows):
            if loop.time() - started > LEASE_SECONDS / 2:
                await _to_the_end(release(bx, rows[i:]))
                return
            if client is None:
                client = transport.client()
                try:
                    await client.connect()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - server down: the batch waits
                    for pending in rows[i:]:
                        await _to_the_end(mark_failed_attempt(bx, pending, exc))
                    client = None
                    return
            try:
                await client.send_message(build_message(row, sender))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any SMTP or network failure is retried
                await _to_the_end(mark_failed_attempt(bx, row, exc))
                if not is_permanent(exc):
                    # The connection is suspect: go on with a fresh one.
                    await _quietly_close(client)
                    client = None
                continue
            await _to_the_end(mark_sent(bx, row))
    except asyncio.CancelledError:
        await _handed_back(bx, rows[i:])
        raise
    finally:
        if client is not None:
            await _quietly_close(client)


async def _handed_back(bx: Bastion, rows: list[RowMapping]) -> None:
    """``release`` at shutdown, within ``SHUTDOWN_SECONDS``. The row in flight goes back
    too: whether the relay took it is unknown, and a process that died there would have
    it sent again after the lease anyway (the Message-ID lets receivers tell)."""
    if not rows:
        return
    try:
        released = await asyncio.wait_for(release(bx, rows), timeout=SHUTDOWN_SECONDS)
    except Exception:  # noqa: BLE001 - the lease still brings them back later
        log.warning("mail worker stopped with claimed message(s) left to the lease")
    else:
        if released:
            log.info("mail worker stopped; %d claimed message(s) handed back", released)


async def _quietly_close(client: Any) -> None:
    try:
        if client.is_connected:
            await client.quit()
    except Exception:  # noqa: BLE001, S110 - closing a broken connection may fail; fine
        try:
            client.close()
        except Exception:  # noqa: BLE001, S110
            pass


async def run(bx: Bastion, transport: SmtpTransport) -> None:
    """Claim and send until cancelled."""
    while True:
        bx.mail_wakeup.clear()
        rows: list[RowMapping] = []
        try:
            # Stopped during the claim, the worker hands back what the claim took.
            rows = await _to_the_end(
                claim(bx, utcnow()), stopped=functools.partial(_handed_back, bx)
            )
            if rows:
                await deliver_batch(bx, transport, rows)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the database may be down; keep the worker alive
            log.exception("mail worker error")
        if len(rows) == BATCH_SIZE:
            continue  # more may be due right now
        try:
            await asyncio.wait_for(bx.mail_wakeup.wait(), timeout=POLL_SECONDS)
        except TimeoutError:
            pass


def _install_wakeup(bx: Bastion) -> None:
    """Wake this process's worker once a transaction that queued mail has committed.

    ``outbox.enqueue`` flags the connection; the flag is read when the connection goes
    back to the pool (after COMMIT, so the worker's claim sees the row) and dropped on
    rollback.
    """
    engine = bx.db.writer.sync_engine
    key = outbox_module.QUEUED_FLAG

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn: Any) -> None:
        conn.info.pop(key, None)

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi: Any, record: Any) -> None:
        if record is not None and record.info.pop(key, False):
            bx.mail_wakeup.set()


async def start(bx: Bastion) -> asyncio.Task[None] | None:
    """Start-up hook (web/app.py ``STARTUP_HOOKS``): the worker task, or None without SMTP."""
    url = bx.settings.smtp_url
    if not url:
        log.warning(
            "BASTION_SMTP_URL is not set: mail stays in the outbox "
            "(see `bastion outbox`); logs name only recipient and event"
        )
        return None
    transport = SmtpTransport(parse_url(url))
    _install_wakeup(bx)
    log.info("mail worker started for %s", transport.config.describe())
    return asyncio.create_task(run(bx, transport), name="bastion-mail-worker")
