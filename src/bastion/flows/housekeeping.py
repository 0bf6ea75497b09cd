"""The periodic sweep of expired rows (store/housekeeping.py says what goes and why).

Every worker process runs it every ``HOUSEKEEPING_INTERVAL`` seconds, the first time
after a random part of the interval so that workers and hosts started together do not
sweep together; the deletes are idempotent, so two sweeps at once only find less to
do. ``bastion housekeeping`` runs one sweep by hand (for ``HOUSEKEEPING_INTERVAL=0``,
which turns the periodic one off, e.g. to run it from cron).
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime

from bastion.runtime import Bastion
from bastion.store.housekeeping import purge_expired

log = logging.getLogger("bastion.housekeeping")


async def sweep(bx: Bastion) -> dict[str, int]:
    """One sweep now; the rows deleted per table."""
    s = bx.settings
    return await purge_expired(
        bx.db,
        datetime.now(UTC),
        attempts_days=s.login_attempt_retention_days,
        outbox_days=s.outbox_retention_days,
    )


async def _run(bx: Bastion, interval: float) -> None:
    await asyncio.sleep(random.uniform(0, interval))  # noqa: S311 - spreading, not secrecy
    while True:
        try:
            deleted = await sweep(bx)
            if any(deleted.values()):
                log.info("housekeeping deleted %s", deleted)
        except Exception as exc:  # noqa: BLE001 - the database may be down; retry later
            log.warning("housekeeping failed (%s); next try in %s s", type(exc).__name__, interval)
        await asyncio.sleep(interval)


async def start(bx: Bastion) -> asyncio.Task[None] | None:
    """Start-up hook (web/app.py ``STARTUP_HOOKS``): the sweeping task, or None if off."""
    interval = bx.settings.housekeeping_interval
    if not interval:
        return None
    return asyncio.create_task(_run(bx, interval), name="bastion-housekeeping")
