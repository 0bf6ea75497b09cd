"""Does the lockout check get slower as the login-attempt log grows? (SPEC §3)

Not a test. Creates a scratch PostgreSQL database, fills ``login_attempts`` with 10
thousand rows, times the database work a login does around the password check, then
grows the table to 10 million rows (bulk insert with ``generate_series``, in SQL) and
times it again, and prints the ratio.

The work timed per login is exactly what flows/accounts.py does: reserve the attempt
slot (one conditional UPDATE on the user row), record the attempt (one INSERT into
``login_attempts``) and free the slot on success. The lockout never counts rows of the
log, so the ratio should stay near 1.

    .venv/bin/python bench/lockout_rows.py [--pg postgresql://postgres@127.0.0.1:5432]
        [--small 10000] [--large 10000000] [--logins 400]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from datetime import UTC, datetime

import asyncpg

from bastion.core import secrets as core_secrets
from bastion.flows import lockout
from bastion.store import attempts
from bastion.store.db import Database
from bastion.store.migrate import upgrade
from bastion.store.tables import users

FILL = """
INSERT INTO login_attempts (email, user_id, ip_address, user_agent, success,
                            failure_reason, created_at)
SELECT 'user' || (g % 50000) || '@example.com', NULL,
       '10.' || (g % 250) || '.' || (g / 250 % 250) || '.' || (g % 7),
       'Mozilla/5.0 bench', (g % 3 = 0),
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'invalid_password' END,
       now() - (g % 2592000) * interval '1 second'
FROM generate_series($1::bigint, $2::bigint) AS g
"""


INDEXES = {
    "ix_login_attempts_email_created": "(email, created_at)",
    "ix_login_attempts_ip_created": "(ip_address, created_at)",
    "ix_login_attempts_created": "(created_at)",
}


async def fill(url: str, start: int, end: int) -> float:
    """Bulk insert with the indexes dropped and rebuilt after: same end state, faster."""
    conn = await asyncpg.connect(url)
    try:
        t = time.perf_counter()
        await conn.execute("SET synchronous_commit = off")
        for ix in INDEXES:
            await conn.execute(f"DROP INDEX IF EXISTS {ix}")
        step = 1_000_000
        for lo in range(start, end + 1, step):
            await conn.execute(FILL, lo, min(end, lo + step - 1))
        for ix, cols in INDEXES.items():
            await conn.execute(f"CREATE INDEX {ix} ON login_attempts {cols}")
        await conn.execute("VACUUM ANALYZE login_attempts")
        return time.perf_counter() - t
    finally:
        await conn.close()


async def time_logins(db: Database, user_id: str, email: str, n: int) -> list[float]:
    counter = lockout.Counter(user_id)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await lockout.reserve(db, counter, threshold=5, duration=900)
        async with db.write() as conn:
            await attempts.record(
                conn,
                email=email,
                user_id=user_id,
                ip_address="127.0.0.1",
                user_agent="bench",
                success=True,
                failure_reason=None,
                now=datetime.now(UTC),
            )
        await lockout.release_on_success(db, counter)
        out.append(time.perf_counter() - t)
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples)
    return statistics.median(ms), ms[int(len(ms) * 0.95)]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=10_000_000)
    ap.add_argument("--logins", type=int, default=400)
    args = ap.parse_args()

    name = "bastion_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(args.pg + "/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    url = f"{args.pg}/{name}"
    db = Database(url)
    try:
        await asyncio.to_thread(upgrade, url)
        user_id, email = core_secrets.new_id(), "bench@example.com"
        now = datetime.now(UTC)
        async with db.write() as conn:
            await conn.execute(
                users.insert().values(
                    id=user_id,
                    email=email,
                    role="viewer",
                    email_verified=True,
                    mfa_enabled=False,
                    token_version=0,
                    failed_login_attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        results = {}
        filled = 0
        for size in (args.small, args.large):
            took = await fill(url, filled + 1, size)
            filled = size
            await time_logins(db, user_id, email, 50)  # warm the pool and caches
            results[size] = summary(await time_logins(db, user_id, email, args.logins))
            med, p95 = results[size]
            print(
                f"{size:>12,} rows: median {med:.3f} ms, p95 {p95:.3f} ms per login "
                f"(fill {took:.1f} s)"
            )
        ratio = results[args.large][0] / results[args.small][0]
        print(f"ratio large/small (median): {ratio:.2f}")
    finally:
        await db.dispose()
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
