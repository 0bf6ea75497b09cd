"""Queueing mail in the same transaction as the change that causes it (SPEC §11)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.mail.templates import render
from bastion.store.direct import Query, Steps, insert_values, row_of, run_in
from bastion.store.tables import outbox as outbox_table

log = logging.getLogger("bastion.mail")

EVENTS = (
    "email_verification",
    "password_reset",
    "password_changed",
    "account_locked",
    "new_device",
    "mfa_enabled",
    "mfa_disabled",
    "backup_code_used",
)
# Set on the connection by enqueue; the worker (mail/worker.py) wakes when a connection
# carrying it is returned to the pool after COMMIT.
QUEUED_FLAG = "bastion_mail_queued"


_INSERT = insert_values(outbox_table, skip=("id",))


def queued(
    *, recipient: str, event: str, base_url: str, now: datetime, **context: Any
) -> Steps[None]:
    """Add a message to the outbox; it is sent only if the transaction commits (whoever
    commits it wakes the worker: ``enqueue`` below, or the caller of ``transaction``)."""
    if event not in EVENTS:
        raise ValueError(f"unknown mail event {event}")
    subject, text_body, html_body = render(event, base_url=base_url, **context)
    yield Query(
        _INSERT,
        row_of(
            outbox_table,
            skip=("id",),
            recipient=recipient,
            event=event,
            subject=subject,
            text_body=text_body,
            html_body=html_body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        ),
    )
    log.info("mail queued", extra={"event": event, "recipient": recipient})


async def enqueue(conn: AsyncConnection, **fields: Any) -> None:
    """``queued`` in the caller's transaction; flags the connection so that the worker
    wakes once it commits."""
    await run_in(conn, queued(**fields))
    conn.info[QUEUED_FLAG] = True
