"""mail/worker.py when the server stops in the middle of a database write: the worker's
task is cancelled (web/app.py's lifespan) at whatever await it is in. A cancellation
that lands while a claim or a delivery record commits must not leave a message
``sending`` until its 120 s lease runs out: the write finishes, then what the worker
holds is handed back. In-process on real SQLite and PostgreSQL; the relay accepts
connections and never greets, so a claimed message stays in flight.

Found by a fresh-clone CI run: with two workers, the one stopping second claimed the
message the first had just handed back, and its claim was cancelled mid-commit."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from bastion.flows.context import utcnow
from bastion.mail import outbox, worker
from bastion.mail.smtp import SmtpTransport, parse_url
from bastion.runtime import Bastion
from bastion.settings import load_settings
from bastion.store.tables import outbox as outbox_table
from tests.support import database, free_port


async def _rows(bx: Bastion) -> list[tuple[str, int]]:
    async with bx.db.read() as conn:
        result = await conn.execute(select(outbox_table.c.status, outbox_table.c.attempts))
        return [(r[0], r[1]) for r in result]


async def _queue_one(bx: Bastion) -> None:
    async with bx.db.write() as conn:
        await outbox.enqueue(
            conn,
            recipient="stop@example.com",
            event="email_verification",
            base_url="http://127.0.0.1",
            now=utcnow(),
            link="http://127.0.0.1/verify-email?token=x",
            hours=24,
        )


async def _cancelled_at_commit(bx: Bastion, transport: SmtpTransport, nth: int) -> None:
    """Run the worker and cancel its task while the ``nth`` commit after start awaits the
    database (1: the claim; 2: the record of a delivery attempt)."""
    loop = asyncio.get_running_loop()
    commits = 0
    task: asyncio.Task[None] | None = None

    def on_commit(_conn: Any) -> None:
        nonlocal commits
        commits += 1
        if commits == nth and task is not None:
            task.cancel()  # delivered at the commit's own await

    event.listen(bx.db.writer.sync_engine, "commit", on_commit)
    try:
        task = loop.create_task(worker.run(bx, transport))
        done, _ = await asyncio.wait([task], timeout=20)
        assert task in done, "the worker did not stop"
        assert task.cancelled(), "the cancellation was swallowed: the worker ran on"
    finally:
        event.remove(bx.db.writer.sync_engine, "commit", on_commit)


@pytest.mark.parametrize(
    ("nth", "relay", "after"),
    [
        # Cancelled while the claim commits: handed back, no attempt counted.
        (1, "silent", ("pending", 0)),
        # The relay refuses; cancelled while the failed attempt is recorded: the record
        # is complete (one attempt, retried later), not left ``sending``. (The first case
        # is the one the CI run found; this one held before the fix too.)
        (2, "refused", ("pending", 1)),
    ],
)
def test_a_cancelled_claim_or_record_leaves_nothing_sending(
    backend: str, tmp_path: Path, nth: int, relay: str, after: tuple[str, int]
) -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as silent,
        database(backend, tmp_path) as url,
    ):
        # Nothing listens on a free port: connections to it are refused at once.
        port = silent.getsockname()[1] if relay == "silent" else free_port()
        settings = load_settings(
            database_url=url,
            secret_key="mail-shutdown-secret-" + "x" * 32,
            data_dir=tmp_path,
            smtp_url=f"smtp://127.0.0.1:{port}",
        )
        transport = SmtpTransport(parse_url(settings.smtp_url))

        async def go() -> list[tuple[str, int]]:
            bx = Bastion.create(settings)
            try:
                await _queue_one(bx)
                await _cancelled_at_commit(bx, transport, nth)
                return await _rows(bx)
            finally:
                await bx.close()

        assert asyncio.run(go()) == [after]
