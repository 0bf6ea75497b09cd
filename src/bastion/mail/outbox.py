"""Queueing mail in the same transaction as the change that causes it (SPEC §11)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.mail.templates import render
from bastion.store.tables import outbox

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


async def enqueue(
    conn: AsyncConnection,
    *,
    recipient: str,
    event: str,
    base_url: str,
    now: datetime,
    **context: Any,
) -> None:
    """Add a message to the outbox; it is sent only if the caller's transaction commits."""
    if event not in EVENTS:
        raise ValueError(f"unknown mail event {event}")
    subject, text_body, html_body = render(event, base_url=base_url, **context)
    await conn.execute(
        outbox.insert().values(
            recipient=recipient,
            event=event,
            subject=subject,
            text_body=text_body,
            html_body=html_body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    conn.info[QUEUED_FLAG] = True
    # Recipient and event only: bodies carry links with tokens (SPEC §1, §11).
    log.info("mail queued", extra={"event": event, "recipient": recipient})
