"""Time the security report and the admin queries with a million users (not a test).

    .venv/bin/python bench/report_million.py [--users 1000000] [--database-url URL] [--keep]

Creates a fresh PostgreSQL database (unless --database-url is given), applies the
migrations, fills it server-side with generate_series (users, sessions, login attempts),
runs VACUUM ANALYZE, then times each query a few times and prints the best and median.
The figures of the last run are recorded in docs/admin.md.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg

from bastion.flows import admin as admin_flow
from bastion.flows import report as report_flow
from bastion.flows.context import RequestContext, utcnow
from bastion.runtime import Bastion
from bastion.settings import Settings
from bastion.store import admin as admin_store
from bastion.store.migrate import upgrade

CAP = report_flow.TOTALS_CAP

PG = "postgresql://postgres@127.0.0.1:5432"

FILL = [
    (
        "users",
        """
        INSERT INTO users (id, email, name, password_hash, role, email_verified, mfa_enabled,
            token_version, failed_login_attempts, locked_until, created_at, updated_at)
        SELECT md5('u' || i), 'user' || i || '@bench.example', 'User ' || i, '$argon2id$x',
            CASE WHEN i % 1000 = 0 THEN 'admin' WHEN i % 100 = 0 THEN 'editor' ELSE 'viewer' END,
            true, i % 10 < 3, 0,
            CASE WHEN i % 1000 = 7 THEN 5 ELSE 0 END,
            CASE WHEN i % 1000 = 7 THEN now() + interval '10 minutes' END,
            now() - make_interval(mins => i), now()
        FROM generate_series(1, $1::int) i
        """,
    ),
    (
        "sessions (4 per third user; every 50th has its 4th from elsewhere)",
        """
        INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at, last_active_at,
            ip_address, location)
        SELECT md5('s' || i || '-' || j), md5('t' || i || '-' || j) || md5('x' || i || '-' || j),
            md5('u' || i), now() - make_interval(days => 5 - j, secs => i % 1000),
            now() + interval '20 days', now(), '198.51.100.' || (i % 250),
            (ARRAY['Germany', 'France', 'Japan'])[
                CASE WHEN j = 4 AND i % 50 = 0 THEN 2 WHEN j = 3 AND i % 7 = 0 THEN 3 ELSE 1 END]
        FROM generate_series(3, $1::int, 3) i, generate_series(1, 4) j
        """,
    ),
    (
        "login_locations (the baseline: first three sessions of each user with sessions)",
        """
        INSERT INTO login_locations (user_id, seq, location, created_at)
        SELECT md5('u' || i), j,
            (ARRAY['Germany', 'France', 'Japan'])[CASE WHEN j = 3 AND i % 7 = 0 THEN 3 ELSE 1 END],
            now()
        FROM generate_series(3, $1::int, 3) i, generate_series(1, 3) j
        """,
    ),
    (
        "unusual_sessions (the 4th session of every 50th user, from France)",
        """
        INSERT INTO unusual_sessions (session_id, user_id, location, created_at)
        SELECT md5('s' || i || '-4'), md5('u' || i), 'France',
            now() - make_interval(days => 1, secs => i % 1000)
        FROM generate_series(150, $1::int, 150) i
        """,
    ),
    (
        "login attempts (one per user over 7 days, 3 in 4 failed)",
        """
        INSERT INTO login_attempts (email, ip_address, user_agent, success, failure_reason,
            created_at)
        SELECT 'user' || (i % ($1::int / 5)) || '@bench.example', '203.0.113.' || (i % 200),
            'bench', i % 4 = 0, CASE WHEN i % 4 <> 0 THEN 'invalid_password' END,
            now() - make_interval(secs => i % (7 * 86400))
        FROM generate_series(1, $1::int) i
        """,
    ),
    (
        "login attempts (50 victims, 20 failures each in the last hour)",
        """
        INSERT INTO login_attempts (email, ip_address, user_agent, success, failure_reason,
            created_at)
        SELECT 'victim' || (i % 50) || '@bench.example', '192.0.2.' || (i % 100), 'bench',
            false, 'invalid_password', now() - make_interval(secs => i)
        FROM generate_series(1, 1000) i
        """,
    ),
]


async def fill(url: str, users: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        for label, sql in FILL:
            t = time.perf_counter()
            await conn.execute(sql, *([users] if "$1" in sql else []))
            print(f"  filled {label}: {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        print(f"  vacuum analyze: {time.perf_counter() - t:.1f} s", flush=True)
        for table in ("users", "sessions", "login_attempts", "unusual_sessions"):
            n = await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            print(f"  {table}: {n:,} rows")
    finally:
        await conn.close()


async def timed(label: str, fn: Callable[[], Awaitable[Any]], runs: int) -> None:
    await fn()  # warm the cache and the connection pool
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    print(f"  {label:<46} best {min(times):8.1f} ms   median {statistics.median(times):8.1f} ms")


async def measure(url: str, runs: int) -> None:
    bx = Bastion.create(Settings(database_url=url, secret_key="bench-" + "x" * 40))
    now = utcnow()
    ctx = RequestContext(now=now)

    async def section(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        async with bx.db.read() as conn:
            return await fn(conn, *args)

    try:
        report = await report_flow.security_report(bx, now)
        print("  report totals:", report["totals"])
        await timed(
            "security report (all four lists + totals)",
            lambda: report_flow.security_report(bx, now),
            runs,
        )  # noqa: E501
        await timed(
            "  users without MFA", lambda: section(admin_store.users_without_mfa, 100, CAP), runs
        )  # noqa: E501
        await timed(
            "  locked accounts", lambda: section(admin_store.locked_accounts, now, 100, CAP), runs
        )  # noqa: E501
        since = now - timedelta(hours=24)
        await timed(
            "  suspicious logins (24 h)",
            lambda: section(admin_store.suspicious_logins, since, 5, 100, CAP),
            runs,
        )  # noqa: E501
        await timed(
            "  unusual locations",
            lambda: section(admin_store.unusual_locations, now, 100, CAP),
            runs,
        )  # noqa: E501
        await timed(
            "users list, first page (50)",
            lambda: admin_flow.list_users(bx, ctx, None, 50, None),
            runs,
        )  # noqa: E501
        page = await admin_flow.list_users(bx, ctx, None, 100, None)
        for _ in range(50):
            page = await admin_flow.list_users(bx, ctx, None, 100, page.next_cursor)
        await timed(
            "users list, page 51 by cursor",
            lambda: admin_flow.list_users(bx, ctx, None, 50, page.next_cursor),
            runs,
        )  # noqa: E501
        await timed(
            "users list, q=user12345 (substring)",
            lambda: admin_flow.list_users(bx, ctx, "user12345", 50, None),
            runs,
        )  # noqa: E501
        await timed(
            "users list, q=zzzz (no match)",
            lambda: admin_flow.list_users(bx, ctx, "zzzz", 50, None),
            runs,
        )  # noqa: E501
        await timed(
            "login attempts by email",
            lambda: admin_flow.login_attempts(bx, "user77@bench.example", None, None),
            runs,
        )  # noqa: E501
        await timed(
            "login attempts by ip",
            lambda: admin_flow.login_attempts(bx, None, "203.0.113.7", 100),
            runs,
        )  # noqa: E501
        await timed(
            "audit log, first page", lambda: admin_flow.audit_log(bx, None, None, 50, None), runs
        )  # noqa: E501
    finally:
        await bx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--database-url", help="an existing, migrated and filled database")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()
    name = None
    url = args.database_url
    if url is None:
        name = "bastion_bench_" + secrets.token_hex(4)
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {name}"],
            check=True,
        )  # noqa: E501
        url = f"{PG}/{name}"
    try:
        if args.database_url is None:
            print(f"database {name}: migrating and filling {args.users:,} users", flush=True)
            upgrade(url)
            t = time.perf_counter()
            asyncio.run(fill(url, args.users))
            print(f"  fill total: {time.perf_counter() - t:.1f} s", flush=True)
        print("timings:", flush=True)
        asyncio.run(measure(url, args.runs))
    finally:
        if name and not args.keep:
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE {name}"],
                check=False,
            )  # noqa: E501
        elif name:
            print(f"kept {url}", file=sys.stderr)


if __name__ == "__main__":
    main()
