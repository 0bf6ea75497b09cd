"""Target 5: cost of the session lookup, the lockout check and the security report with
10 million rows against 10 thousand (PostgreSQL, filled with generate_series).

The filled databases (``bench_growth_<rows>``) are kept between runs: filling 10 million
rows per table takes minutes, so a later run reuses them (after ``bastion migrate``).
``python3 bench/growth.py --drop`` removes them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from run import BENCH, MAIN_BIN, TARGETS, Table, Variant, ratio, side_by_side, verdict, wrk

from support import STRONG, http, psql

SMALL = 10_000
# Every table that one of the three paths reads gets ``rows`` rows: users, sessions,
# device_lockouts, login_attempts, audit_events. 70% of users have no MFA, 1 in 1000
# device counters is locked, 10% of attempts failed, spread over 90 days.
TABLES = ("users", "sessions", "device_lockouts", "login_attempts", "audit_events")
# Locks in force whenever the bench runs: locks that expire some minutes after the fill
# made the report's cost depend on the time since each database was filled (the 10,000
# live device locks of a just-filled database against none in an older one: 3×).
LOCKED_UNTIL = "2999-01-01 00:00:00+00"
LOCKS_IN_FORCE = f"""
UPDATE users SET locked_until = '{LOCKED_UNTIL}'
  WHERE locked_until IS NOT NULL AND locked_until <> '{LOCKED_UNTIL}';
UPDATE device_lockouts SET locked_until = '{LOCKED_UNTIL}'
  WHERE locked_until IS NOT NULL AND locked_until <> '{LOCKED_UNTIL}';
"""
FILL = """
SET synchronous_commit = off;
INSERT INTO users (id, email, name, password_hash, role, email_verified, mfa_enabled,
  token_version, failed_login_attempts, locked_until, created_at, updated_at)
SELECT md5('u' || i), 'u' || i || '@fill.example', 'User ' || i,
  '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNo',
  'viewer', true, i % 10 < 3, 0, 0,
  CASE WHEN i % 5000 = 0 THEN timestamptz '{locked_until}' END,
  now() - (i % 31536000) * interval '1 second', now()
FROM generate_series(1, {n}) i;
INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at, last_active_at,
  ip_address, user_agent, device_name, device_type, browser, os, location)
SELECT md5('s' || i), encode(sha256(('t' || i)::bytea), 'hex'), md5('u' || (1 + i % {n})),
  now() - (i % 2592000) * interval '1 second', now() + interval '30 days', now(),
  '203.0.113.' || (i % 250), 'Mozilla/5.0', 'Firefox on Ubuntu', 'desktop', 'Firefox',
  'Ubuntu', (ARRAY['Germany', 'France', 'Japan', 'Brazil'])[1 + i % 4]
FROM generate_series(1, {n}) i;
INSERT INTO device_lockouts (user_id, device_id, failed_login_attempts, locked_until)
SELECT md5('u' || i), md5('d' || i), i % 3,
  CASE WHEN i % 1000 = 0 THEN timestamptz '{locked_until}' END
FROM generate_series(1, {n}) i;
INSERT INTO login_attempts (email, user_id, ip_address, user_agent, success,
  failure_reason, created_at)
SELECT 'u' || (1 + i % {n}) || '@fill.example', md5('u' || (1 + i % {n})),
  '198.51.100.' || (i % 250), 'Mozilla/5.0', i % 10 <> 0,
  CASE WHEN i % 10 = 0 THEN 'invalid_password' END,
  now() - (i % 7776000) * interval '1 second'
FROM generate_series(1, {n}) i;
INSERT INTO audit_events (action, actor_id, user_id, ip_address, user_agent, created_at,
  prev_hash, hash)
SELECT (ARRAY['login_succeeded', 'login_failed', 'session_revoked', 'password_changed'])[1 + i % 4],
  md5('u' || (1 + i % {n})), md5('u' || (1 + i % {n})), '198.51.100.1', 'Mozilla/5.0',
  now() - (i % 7776000) * interval '1 second', md5('p' || i) || md5('q' || i),
  md5('h' || i) || md5('r' || i)
FROM generate_series(1, {n}) i;
"""


def bulk_fill(name: str, rows: int) -> None:
    """Bulk load the way PostgreSQL likes it: drop the tables' indexes and constraints
    (saving their definitions), insert, then rebuild them (sorted builds, not ten
    million random B-tree inserts), then VACUUM and ANALYZE: the steady state autovacuum
    keeps a live database in (visibility map set, so index-only scans stay index-only),
    and a CHECKPOINT, so that writing gigabytes of freshly loaded pages does not happen
    during the first measurement."""
    tables = ", ".join(f"'{t}'" for t in TABLES)
    q = (
        "SELECT c.conrelid::regclass::text || '|' || c.conname || '|' || c.contype::text || '|' || "
        "pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.contype IN ('p','u','f') "
        f"AND (c.conrelid::regclass::text IN ({tables}) "
        f"OR c.confrelid::regclass::text IN ({tables}))"
    )
    constraints = [line.split("|", 3) for line in psql(q, db=name).splitlines()]
    names = {c[1] for c in constraints}
    indexes = [
        line.split("|", 1)
        for line in psql(
            f"SELECT indexname || '|' || indexdef FROM pg_indexes WHERE tablename IN ({tables})",
            db=name,
        ).splitlines()
    ]
    indexes = [i for i in indexes if i[0] not in names]
    drop = [f'ALTER TABLE {t} DROP CONSTRAINT "{n}";' for t, n, k, _ in constraints if k == "f"]
    drop += [f'ALTER TABLE {t} DROP CONSTRAINT "{n}";' for t, n, k, _ in constraints if k != "f"]
    drop += [f'DROP INDEX "{n}";' for n, _ in indexes]
    build = [f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d};' for t, n, k, d in constraints if k != "f"]
    build += [d + ";" for _, d in indexes]
    build += [
        f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d};' for t, n, k, d in constraints if k == "f"
    ]
    fill = FILL.format(n=rows, locked_until=LOCKED_UNTIL)
    script = "\n".join(
        ["SET maintenance_work_mem = '1GB';", *drop, fill, *build,
         "VACUUM (ANALYZE);", "CHECKPOINT;", "CREATE TABLE bench_fill (rows bigint NOT NULL);",
         f"INSERT INTO bench_fill VALUES ({rows});"]
    )  # fmt: skip
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", name, "-v", "ON_ERROR_STOP=1", "-q"],
        input=script, text=True, check=True, capture_output=True,
    )  # fmt: skip


def db_name(rows: int) -> str:
    return f"bench_growth_{rows}"


def url(rows: int) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{db_name(rows)}"


def bastion_env(rows: int) -> dict[str, str]:
    return {
        **os.environ,
        "BASTION_DATABASE_URL": url(rows),
        "BASTION_SECRET_KEY": "bench-secret-key-" + "x" * 32,
        "BASTION_DATA_DIR": "/tmp/bastion-bench-growth",
    }


def ensure_filled(rows: int) -> None:
    name = db_name(rows)
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1"
    if exists:
        try:
            if psql("SELECT rows FROM bench_fill", db=name) == str(rows):
                subprocess.run(
                    [str(MAIN_BIN / "bastion"), "migrate"],
                    env=bastion_env(rows), check=True, capture_output=True,
                )  # fmt: skip
                subprocess.run(
                    [str(MAIN_BIN / "python"), str(BENCH / "growth_probe.py"), "--sync-schema",
                     url(rows)],
                    check=True, capture_output=True,
                )  # fmt: skip
                psql(LOCKS_IN_FORCE, db=name)  # databases filled before LOCKED_UNTIL
                return
        except subprocess.CalledProcessError:
            pass
        psql(f"DROP DATABASE {name} WITH (FORCE)")
    print(f"   filling {name} with {rows:,} rows per table (kept for later runs) ...", flush=True)
    t0 = time.monotonic()
    psql(f"CREATE DATABASE {name}")
    subprocess.run(
        [str(MAIN_BIN / "bastion"), "migrate"], env=bastion_env(rows), check=True,
        capture_output=True,
    )  # fmt: skip
    bulk_fill(name, rows)
    print(f"   filled in {time.monotonic() - t0:.0f} s", flush=True)


def lockout_probe(rows: int, n: int) -> float:
    """Mean microseconds of one lockout check (reserve + release) for random users."""
    out = subprocess.run(
        [str(MAIN_BIN / "python"), str(BENCH / "growth_probe.py"), url(rows), str(rows), str(n)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(out.split()[0])


def growth_tables(ctx: Any, results: dict[str, Any]) -> list[Table]:
    if not ctx.have_pg:
        return []
    big = ctx.growth_rows
    for rows in (SMALL, big):
        ensure_filled(rows)
    servers = {rows: ctx.bastion("pg", 1, url=url(rows)) for rows in (SMALL, big)}
    variants: dict[str, list[Variant]] = {"session lookup": [], "security report": []}
    for rows, s in servers.items():
        s.wait()
        email = f"probe-{time.time_ns()}@example.com"
        status, _, cookies = http(
            s.port, "POST", "/api/auth/register", {"email": email, "password": STRONG}
        )
        if status != 201:
            print(f"   growth: register answered {status} on {rows:,} rows", flush=True)
        hdr = {"Cookie": f"bastion_session={cookies.get('bastion_session', '')}"}
        variants["session lookup"].append(
            Variant(f"{rows:,}", s, lambda t, s=s, h=hdr: wrk(s.url + "/api/auth/session", t, 8, h))
        )
        admin = f"admin-{time.time_ns()}@example.com"
        subprocess.run(
            [str(MAIN_BIN / "bastion"), "create-user", "--email", admin, "--role", "admin",
             "--password-stdin"],
            input=STRONG + "\n", env=bastion_env(rows), check=True, capture_output=True, text=True,
        )  # fmt: skip
        _, _, ac = http(s.port, "POST", "/api/auth/login", {"email": admin, "password": STRONG})
        ah = {"Cookie": f"bastion_session={ac.get('bastion_session', '')}"}
        if http(s.port, "GET", "/api/admin/security-report", headers=ah)[0] == 200:
            variants["security report"].append(
                Variant(
                    f"{rows:,}", s,
                    lambda t, s=s, h=ah: wrk(s.url + "/api/admin/security-report", t, 1, h),
                )
            )  # fmt: skip
    t = Table(
        f"5. Growth (PostgreSQL): cost with {big:,} rows per table vs {SMALL:,}",
        ["path", f"{SMALL:,} rows", f"{big:,} rows", "cost ×", "cost × (CPU)", "floor", ""],
    )
    floor = TARGETS["growth"]
    for path, vs in variants.items():
        if len(vs) != 2:
            t.add(path, "n/a", "n/a", "n/a", "n/a", f"≤ {floor}", "n/a")
            continue
        for v in vs:
            v.load(1)
            v.server.refresh_pg_pids()
        side_by_side(vs, ctx.rounds, ctx.seconds)
        cost = ratio(vs[0], vs[1])  # small rps / big rps = big cost / small cost
        cpu = vs[1].med("cpu_us") / vs[0].med("cpu_us") if vs[0].med("cpu_us") else 0.0
        t.add(
            path + " (req/s)", vs[0].med("rps"), vs[1].med("rps"), f"{cost:.2f}", f"{cpu:.2f}",
            f"≤ {floor}", verdict(cost, floor, higher_is_better=False),
        )  # fmt: skip
        results[f"growth/{path}"] = {"small_rps": vs[0].med("rps"), "big_rps": vs[1].med("rps"),
                                     "cost_ratio": cost, "cost_ratio_cpu": cpu}  # fmt: skip
    small_us, big_us = [], []
    for _ in range(ctx.rounds):
        small_us.append(lockout_probe(SMALL, 300))
        big_us.append(lockout_probe(big, 300))
    s_us, b_us = sorted(small_us)[len(small_us) // 2], sorted(big_us)[len(big_us) // 2]
    cost = b_us / s_us if s_us else 0.0
    t.add(
        "lockout check (µs, reserve + release)", s_us, b_us, f"{cost:.2f}", "",
        f"≤ {floor}", verdict(cost, floor, higher_is_better=False),
    )  # fmt: skip
    results["growth/lockout"] = {"small_us": s_us, "big_us": b_us, "cost_ratio": cost}
    ctx.stop(*servers.values())
    return [t]


if __name__ == "__main__":
    if sys.argv[1:] == ["--drop"]:
        for name in psql(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bench_growth_%'"
        ).split():
            psql(f"DROP DATABASE {name} WITH (FORCE)")
    elif sys.argv[1:2] == ["--fill"]:
        ensure_filled(int(sys.argv[2]))
