"""SPEC §11: the audit trail is hash-chained, and ``bastion audit --verify`` detects an
edited or a deleted row, on SQLite and PostgreSQL. The rows are changed straight in the
database (sqlite3 / psql), as someone with database access would."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from tests.admin_helpers import create_user, sql
from tests.conftest import PG_UP, ServerFactory
from tests.support import Server, login, register, unique_email


def chain_of_events(srv: Server, n_users: int = 3) -> list[int]:
    for _ in range(n_users):
        email = unique_email("chain")
        with srv.client() as c:
            register(c, email)
            login(c, email, "Wrong-Password-1!")
            login(c, email)
    return [int(r[0]) for r in sql(srv, "SELECT id FROM audit_events ORDER BY id")]


def verify(srv: Server) -> tuple[int, str]:
    r = srv.cli("audit", "--verify")
    return r.returncode, (r.stdout + r.stderr).strip()


def test_audit_verify_ok_on_an_intact_chain(make_server: ServerFactory) -> None:
    srv = make_server()
    assert verify(srv) == (0, "ok: 0 events")
    create_user(srv, "admin")  # the CLI's events chain too
    ids = chain_of_events(srv)
    code, out = verify(srv)
    assert (code, out) == (0, f"ok: {len(ids)} events")


def test_audit_verify_detects_an_edited_row(make_server: ServerFactory) -> None:
    srv = make_server()
    ids = chain_of_events(srv)
    victim = ids[len(ids) // 2]
    sql(srv, "UPDATE audit_events SET ip_address = '203.0.113.9' WHERE id = ?", (victim,))
    code, out = verify(srv)
    assert code == 1, out
    assert re.search(rf"\bevent {victim}\b", out), out


def test_audit_verify_detects_an_edit_with_a_recomputed_hash(make_server: ServerFactory) -> None:
    """Rewriting the edited row's own hash does not help: the next row's link breaks."""
    from bastion.store.audit import event_hash
    from bastion.store.tables import UTCDateTime

    srv = make_server()
    ids = chain_of_events(srv)
    victim = ids[2]
    prev_hash, _action, actor, user, ip, ua, details, created = sql(
        srv,
        "SELECT prev_hash, action, actor_id, user_id, ip_address, user_agent, details,"
        " created_at FROM audit_events WHERE id = ?",
        (victim,),
    )[0]
    dialect = type("D", (), {"name": "sqlite" if srv.database_url.startswith("sqlite") else ""})
    row = {
        "action": "login_failed",
        "actor_id": actor or None,
        "user_id": user or None,
        "ip_address": ip or None,
        "user_agent": ua or None,
        "details": json.loads(details) if details else None,
        "created_at": UTCDateTime().process_result_value(created.replace(" ", "T"), dialect),
    }
    forged = event_hash(prev_hash, row)
    sql(
        srv,
        "UPDATE audit_events SET action = 'login_failed', hash = ? WHERE id = ?",
        (forged, victim),
    )
    code, out = verify(srv)
    assert code == 1, out
    assert re.search(rf"\bevent {ids[3]}\b", out), out


def test_audit_verify_detects_a_deleted_row(make_server: ServerFactory) -> None:
    srv = make_server()
    ids = chain_of_events(srv)
    victim = ids[4]
    sql(srv, "DELETE FROM audit_events WHERE id = ?", (victim,))
    code, out = verify(srv)
    assert code == 1, out
    assert re.search(rf"\bevent {ids[5]}\b", out), out


def test_chain_stays_whole_under_parallel_sign_ins_from_two_processes(
    make_server: ServerFactory,
) -> None:
    """Sign-ins append to the chain from many requests at once, in two server processes
    on one database (on PostgreSQL each append is one statement, which locks, reads the
    last hash and hashes in SQL: `bastion_audit_link`, migration 0006, and within the
    sign-in's one statement):
    no fork, no lost event, every event hashed as ``event_hash`` does."""
    first = make_server()
    second = make_server(database_url=first.database_url)
    emails = [unique_email("parallel") for _ in range(8)]
    with first.client() as c:
        for email in emails:
            assert register(c, email).status_code == 201
    before = int(sql(first, "SELECT count(*) FROM audit_events")[0][0])

    def sign_in(job: tuple[int, str]) -> int:
        n, email = job
        srv = first if n % 2 == 0 else second
        password = "Wrong-Password-1!" if n % 4 == 3 else "Correct-Horse-9!"
        with srv.client() as c:
            return login(c, email, password).status_code

    # Every fourth attempt a wrong password, at most two per account: none gets locked.
    jobs = [(n, emails[(n // 4 if n % 4 == 3 else n) % len(emails)]) for n in range(48)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(sign_in, jobs))
    right = [s for n, s in enumerate(statuses) if n % 4 != 3]
    wrong = [s for n, s in enumerate(statuses) if n % 4 == 3]
    # A wrong password may find every lockout slot taken by the sign-ins in flight
    # beside it (423, flows/lockout.py); a right one always gets in.
    assert right == [200] * 36 and set(wrong) <= {401, 423}, statuses
    succeeded = sql(
        first,
        "SELECT count(*) FROM audit_events WHERE action = 'login_succeeded' AND id > ?",
        (before,),
    )
    assert int(succeeded[0][0]) == 36
    code, out = verify(first)
    assert code == 0, out
    # Every link: each event's prev_hash is the hash of the event before it, in id order.
    rows = sql(first, "SELECT prev_hash, hash FROM audit_events ORDER BY id")
    assert all(rows[i][0] == rows[i - 1][1] for i in range(1, len(rows)))


@pytest.mark.skipif(not PG_UP, reason="PostgreSQL not reachable")
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # SQLite: nothing changed
def test_appends_of_the_previous_version_and_this_one_share_one_chain(server: Server) -> None:
    """A rolling upgrade (migration 0006): servers still running the previous version
    append with the advisory lock and an ``INSERT ... SELECT`` that reads the last hash,
    in two statements; this version appends in one, through ``bastion_audit_link``,
    which takes the same lock. Interleaved in parallel, they still make one chain."""
    import asyncpg
    from sqlalchemy.dialects import postgresql

    from bastion.store import audit
    from bastion.store.direct import Prepared

    dsn = server.database_url.replace("postgresql+asyncpg://", "postgresql://")
    # The previous version's append, as it was compiled (store/audit.py at 3a8a08e).
    previous = (
        "INSERT INTO audit_events (action, actor_id, user_id, ip_address, user_agent, "
        "details, created_at, prev_hash, hash) SELECT $1, NULL, NULL, NULL, NULL, NULL, "
        "$2, last.h, encode(sha256(convert_to('[\"' || last.h || '\"' || $3, 'UTF8')), "
        "'hex') FROM (SELECT coalesce((SELECT audit_events.hash FROM audit_events ORDER BY "
        f"audit_events.id DESC LIMIT 1), '{audit.GENESIS}') AS h) AS last"
    )
    this_version = Prepared(audit._FIRST["postgresql"], postgresql.asyncpg.dialect())

    async def one(n: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            now = datetime.now(UTC)
            row = {"action": f"rolling_{n}", "created_at": now}
            content = audit._content(row)
            async with conn.transaction():
                if n % 2:
                    await conn.execute(f"SELECT pg_advisory_xact_lock({audit.AUDIT_LOCK_ID})")
                    await conn.execute(previous, row["action"], now, content)
                else:  # this version's statement, as store/direct.py prepares it
                    params = dict.fromkeys(c.key for c in audit._FIELDS)
                    params.update(row, content=content)
                    await conn.execute(this_version.sql, *this_version.args(params))
        finally:
            await conn.close()

    async def all_of_them() -> None:
        await asyncio.gather(*(one(n) for n in range(40)))

    asyncio.run(all_of_them())
    code, out = verify(server)
    assert code == 0, out
    rows = sql(server, "SELECT prev_hash, hash, action FROM audit_events ORDER BY id")
    assert all(rows[i][0] == rows[i - 1][1] for i in range(1, len(rows)))
    assert sum(1 for r in rows if str(r[2]).startswith("rolling_")) == 40


def test_a_rehearsed_append_waits_for_the_chain_and_writes_nothing(server: Server) -> None:
    """The unknown-email decoy of forgot-password (flows/recovery.py) rehearses the audit
    append: the same lock (PostgreSQL: it waits while another transaction holds it, as
    an append would), read and hash, and no event. The chain is unchanged after it."""
    import asyncpg

    from bastion.store import audit
    from bastion.store.db import Database

    with server.client() as c:
        assert register(c).status_code == 201  # at least one event in the chain
    before = sql(server, "SELECT count(*) FROM audit_events")[0][0]
    postgres = not server.database_url.startswith("sqlite")

    async def rehearse(db: Database) -> None:
        async with db.write() as conn:
            await audit.rehearse(
                conn, "password_reset_requested", now=datetime.now(UTC), ip_address="192.0.2.9"
            )

    async def scenario() -> None:
        db = Database(server.database_url)
        try:
            await rehearse(db)
            if not postgres:
                return
            dsn = server.database_url.replace("postgresql+asyncpg://", "postgresql://")
            holder = await asyncpg.connect(dsn)
            try:
                tx = holder.transaction()
                await tx.start()
                await holder.execute(f"SELECT pg_advisory_xact_lock({audit.AUDIT_LOCK_ID})")
                waiting = asyncio.ensure_future(rehearse(db))
                await asyncio.sleep(0.5)
                assert not waiting.done()  # queued behind the lock, as an append
                await tx.commit()
                await asyncio.wait_for(waiting, 10)
            finally:
                await holder.close()
        finally:
            await db.dispose()

    asyncio.run(scenario())
    assert sql(server, "SELECT count(*) FROM audit_events")[0][0] == before
    code, out = verify(server)
    assert code == 0, out
