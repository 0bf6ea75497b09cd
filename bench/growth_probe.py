"""The lockout check of a login, timed alone (bench/growth.py): Bastion's own
``flows.lockout.reserve`` then ``release_on_success`` for random filled users, through
Bastion's Database. Args: DATABASE_URL ROWS N. Prints mean microseconds per check."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import sys
import time

from bastion.flows import lockout
from bastion.store.db import Database


async def main(url: str, rows: int, n: int) -> None:
    db = Database(url)
    rng = random.Random(7)
    # Not the users the fill keeps locked (every 5,000th, bench/growth.py): their check
    # answers 423, and a release would unlock them.
    unlocked = (i for i in (rng.randint(1, rows) for _ in iter(int, 1)) if i % 5000)
    ids = [hashlib.md5(f"u{i}".encode()).hexdigest() for i in itertools.islice(unlocked, n + 20)]
    for uid in ids[:20]:  # warm the pool and the statement cache
        await lockout.reserve(db, lockout.Counter(uid), 5, 900)
        await lockout.release_on_success(db, lockout.Counter(uid))
    t0 = time.perf_counter()
    for uid in ids[20:]:
        counter = lockout.Counter(uid)
        await lockout.reserve(db, counter, 5, 900)
        await lockout.release_on_success(db, counter)
    print((time.perf_counter() - t0) / n * 1e6)
    await db.dispose()


if __name__ == "__main__" and sys.argv[1:2] != ["--sync-schema"]:
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))


async def sync_schema(url: str) -> None:
    """Create the tables a migration added in place since the fill (CREATE only what is
    missing; never alters or drops), so a kept database still serves the current code."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from bastion.store.db import async_url
    from bastion.store.tables import metadata

    engine = create_async_engine(async_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all, checkfirst=True)
    await engine.dispose()


if __name__ == "__main__" and sys.argv[1:2] == ["--sync-schema"]:
    asyncio.run(sync_schema(sys.argv[2]))
