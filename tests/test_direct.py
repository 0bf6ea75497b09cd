"""The driver-level statements and transactions of store/direct.py (docs/performance.md):
the same steps give the same rows through the engine and through the driver, a failed
step commits nothing, and the sign-in answered from the ASGI layer equals the router's,
on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from tests.admin_helpers import sql
from tests.support import STRONG, Server, register, run_async, unique_email


def _module_statements() -> Iterator[tuple[str, str, Any]]:
    """(name, dialect, statement) for every statement built once in a steps module."""
    from bastion.flows import locations, lockout
    from bastion.limits import database as limits_db
    from bastion.mail import outbox
    from bastion.store import attempts, audit, devices, sessions, tokens, users

    for module in (lockout, locations, attempts, audit, devices, outbox, sessions, users,
                   tokens, limits_db):  # fmt: skip
        for name, value in vars(module).items():
            if not (name.startswith("_") and name.lstrip("_").isupper()):
                continue
            if isinstance(value, dict):
                for dialect, stmt in value.items():
                    if stmt is not None:
                        yield f"{module.__name__}.{name}", dialect, stmt
            elif isinstance(value, lockout._Statements):
                for field in ("take", "state", "release", "lock_if_full", "lock_leaked"):
                    for dialect in ("sqlite", "postgresql"):
                        yield f"{name}.{field}", dialect, getattr(value, field)
            elif hasattr(value, "compile"):
                for dialect in ("sqlite", "postgresql"):
                    yield f"{module.__name__}.{name}", dialect, value


def _sample(type_: Any) -> Any:
    kind = type(type_).__name__.upper() + str(getattr(type_, "impl", ""))
    if "DATETIME" in kind or "TIMESTAMP" in kind:
        return datetime(2026, 11, 26, 12, 30, 1, 5, tzinfo=UTC)
    if "JSON" in kind:
        return {"method": "password"}
    if "INT" in kind:
        return 3
    if "BOOL" in kind:
        return True
    return "x"


def test_bind_arguments_equal_sqlalchemys_for_every_prebuilt_statement() -> None:
    from bastion.store.direct import Prepared

    dialects = {"sqlite": sqlite.dialect(), "postgresql": postgresql.asyncpg.dialect()}
    checked = 0
    for name, dialect_name, stmt in _module_statements():
        prep = Prepared(stmt, dialects[dialect_name])
        binds = {b.key: b for b in prep.compiled.binds.values()}
        params = {key: _sample(binds[key].type) for key, *_ in prep.plan}
        reference = prep.compiled.construct_params(params)
        expected = tuple(
            prep.bind_procs[n](reference[n]) if prep.bind_procs[n] else reference[n]
            for n in prep.order
        )
        assert prep.args(params) == expected, name
        checked += 1
    assert checked > 40  # the sign-in's statements and the hot paths' are all here


def test_missing_bind_value_is_an_error_not_a_null() -> None:
    from bastion.store.direct import Prepared
    from bastion.store.users import _BY_EMAIL

    with pytest.raises(KeyError):
        Prepared(_BY_EMAIL, sqlite.dialect()).args({})


def test_steps_give_the_engines_rows_and_a_failed_step_commits_nothing(server: Server) -> None:
    from bastion.store import attempts, direct, users
    from bastion.store.db import Database

    email = unique_email("direct")
    with server.client() as c:
        assert register(c, email).status_code == 201
    user_id = sql(server, "SELECT id FROM users WHERE email = ?", (email,))[0][0]

    async def check() -> tuple[dict[str, Any], dict[str, Any]]:
        db = Database(server.database_url)
        try:
            on_driver = await direct.transaction(db, users.by_id(user_id))
            async with db.read() as conn:
                on_engine = await direct.run_in(conn, users.by_id(user_id))
            assert on_driver is not None and on_engine is not None

            def fails() -> direct.Steps[None]:
                yield from attempts.logged(
                    email=email, user_id=user_id, ip_address=None, user_agent=None,
                    success=False, failure_reason="test", now=datetime.now(UTC),
                )  # fmt: skip
                raise RuntimeError("after the first statement")

            with pytest.raises(RuntimeError):
                await direct.transaction(db, fails())
            return dict(on_driver), dict(on_engine)
        finally:
            await direct.close_direct(db)
            await db.dispose()

    on_driver, on_engine = run_async(check())
    assert on_driver == on_engine
    assert {k: type(v) for k, v in on_driver.items()} == {k: type(v) for k, v in on_engine.items()}
    logged = sql(server, "SELECT count(*) FROM login_attempts WHERE failure_reason = 'test'")
    assert int(logged[0][0]) == 0


def test_steps_run_together_answer_as_they_do_one_by_one(server: Server) -> None:
    """``direct.together``: on PostgreSQL one statement of CTEs, elsewhere in order. The
    parts' answers (a row, rows, an insert's RETURNING, none) equal the engine's, the
    writes land, and a failure after the batch commits none of it."""
    from bastion.flows import locations
    from bastion.store import attempts, devices, direct, users
    from bastion.store.db import Database

    email = unique_email("together")
    with server.client() as c:
        assert register(c, email).status_code == 201
    user_id = sql(server, "SELECT id FROM users WHERE email = ?", (email,))[0][0]
    now = datetime.now(UTC)

    def parts(fp: str) -> direct.Steps[tuple[Any, ...]]:
        return (
            yield from direct.together(
                users.by_id(user_id),
                None,
                devices.remembered(user_id, fp, "Paris, France", now),
                devices.others_known(user_id, fp),
                # Reads the baseline, then adds to it: a second round of its own.
                locations.noted(user_id, "s" * 32, "Paris, France", now),
                attempts.logged(
                    email=email, user_id=user_id, ip_address="203.0.113.9", user_agent="ua",
                    success=True, failure_reason=None, now=now,
                ),
            )
        )  # fmt: skip

    def failing() -> direct.Steps[None]:
        yield from parts("failed|device|type")
        raise RuntimeError("after the batch")

    async def check() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        db = Database(server.database_url)
        try:
            on_driver = await direct.transaction(db, parts("driver|device|type"))
            async with db.write() as conn:
                on_engine = await direct.run_in(conn, parts("engine|device|type"))
            with pytest.raises(RuntimeError):
                await direct.transaction(db, failing())
            return on_driver, on_engine
        finally:
            await direct.close_direct(db)
            await db.dispose()

    on_driver, on_engine = run_async(check())
    user_d, none_d, new_d, others_d, unusual_d, logged_d = on_driver
    user_e, none_e, new_e, others_e, unusual_e, logged_e = on_engine
    assert dict(user_d) == dict(user_e) and user_d["email"] == email
    assert {k: type(v) for k, v in user_d.items()} == {k: type(v) for k, v in user_e.items()}
    assert none_d is none_e is None and logged_d is logged_e is None
    assert new_d is new_e is True
    assert others_d is others_e is True  # the device that registered

    assert unusual_d is unusual_e is False
    fps = sql(server, "SELECT fingerprint FROM known_devices WHERE user_id = ?", (user_id,))
    assert {"driver|device|type", "engine|device|type"} <= {r[0] for r in fps}
    assert "failed|device|type" not in {r[0] for r in fps}
    seqs = sql(server, "SELECT seq FROM login_locations WHERE user_id = ? ORDER BY seq", (user_id,))
    assert [int(r[0]) for r in seqs] == [1, 2, 3]  # registration, driver, engine
    logged = sql(server, "SELECT count(*) FROM login_attempts WHERE user_agent = 'ua'")
    assert int(logged[0][0]) == 2


def test_a_batch_renumbers_each_statements_parameters() -> None:
    from sqlalchemy import bindparam, select

    from bastion.store.direct import Prepared, PreparedBatch
    from bastion.store.tables import users

    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]
    one = Prepared(select(users.c.id).where(users.c.email == bindparam("email")), dialect)
    two = Prepared(
        select(users.c.id).where(users.c.id == bindparam("a"), users.c.email != bindparam("b")),
        dialect,
    )
    batch = PreparedBatch([one, two, one])
    assert "$1" in batch.sql and "$4" in batch.sql and "$5" not in batch.sql
    args = batch.args([{"email": "e"}, {"a": "x", "b": "y"}, {"email": "f"}])
    assert args == ("e", "x", "y", "f")


VOLATILE_HEADERS = {"date", "content-length", "set-cookie"}


def test_login_from_the_asgi_layer_answers_like_the_router(server: Server) -> None:
    email = unique_email("fastlogin")
    with server.client() as c:
        assert register(c, email).status_code == 201
    answers = []
    for path in ("/api/auth/login", "/api/auth/login?via=router"):
        with server.client() as c:
            r = c.post(path, json={"email": email, "password": STRONG})
            assert r.status_code == 200, r.text
            cookies = sorted(
                v.split("=", 1)[0] + ";" + v.split(";", 1)[1]
                for v in r.headers.get_list("set-cookie")
            )
            headers = {k: v for k, v in r.headers.items() if k not in VOLATILE_HEADERS}
            body = r.json()
            answers.append((sorted(body), sorted(body["user"].items()), cookies, headers))
            assert c.get("/api/auth/session").status_code == 200
    assert answers[0] == answers[1]
    with server.client() as c:  # wrong password and malformed bodies: same answers too
        for path in ("/api/auth/login", "/api/auth/login?via=router"):
            wrong = c.post(path, json={"email": email, "password": "Wrong-Password-1!"})
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_credentials"
            bad = c.post(path, content=b"{not json", headers={"content-type": "application/json"})
            assert bad.status_code == 422 or bad.status_code == 400
            assert bad.json()["error"] == "invalid_request"


def _together_and_one_by_one(
    server: Server,
    together: Callable[[Any], list[Awaitable[Any]]],
    one_by_one: Callable[[Any], list[Awaitable[Any]]],
) -> tuple[list[Any], list[Any]]:
    """Rows of lookups made at once through the hot path (one loop iteration, so batched
    on PostgreSQL), and of the same lookups one by one through the engine."""
    from bastion.store import direct
    from bastion.store.db import Database

    async def run() -> tuple[list[Any], list[Any]]:
        import asyncio

        db = Database(server.database_url)
        try:
            at_once = await asyncio.gather(*together(db))
            async with db.read() as conn:
                each = [await lookup for lookup in one_by_one(conn)]
            return [None if r is None else dict(r) for r in at_once], [
                None if r is None else dict(r) for r in each
            ]
        finally:
            await direct.close_direct(db)
            await db.dispose()

    result: tuple[list[Any], list[Any]] = run_async(run())
    return result


def test_session_lookups_made_together_each_get_their_own_row(server: Server) -> None:
    """On PostgreSQL the lookups of one loop iteration share a query (store/direct.py
    ``_Batch``): every caller still gets the row of its own token, None for an unknown
    one, and the same as the engine's."""
    from bastion.core.secrets import token_hash
    from bastion.store import sessions as session_store

    tokens = []
    for _ in range(5):
        with server.client() as c:
            assert register(c, unique_email("batch")).status_code == 201
            tokens.append(c.cookies.get("bastion_session") or "")
    hashes = [token_hash(t) for t in tokens]
    asked = [*hashes, token_hash("unknown"), hashes[0], *reversed(hashes)]

    together, one_by_one = _together_and_one_by_one(
        server,
        lambda db: [session_store.lookup_direct(db, h) for h in asked],
        lambda conn: [session_store.lookup(conn, h) for h in asked],
    )
    assert together == one_by_one
    assert together[len(hashes)] is None
    assert len({row["session_id"] for row in together if row}) == len(hashes)


def test_bearer_principals_looked_up_together_each_get_their_own_row(server: Server) -> None:
    """The bearer check's user + session read, batched like the session lookup."""
    from bastion.store import tokens as token_store

    pairs = []
    for _ in range(4):
        email = unique_email("bearer")
        with server.client() as c:
            assert register(c, email).status_code == 201
        pairs.append(
            sql(
                server,
                "SELECT u.id, s.id FROM users u JOIN sessions s ON s.user_id = u.id "
                "WHERE u.email = ?",
                (email,),
            )[0]
        )
    asked = [*pairs, (pairs[0][0], "no-such-session"), ("no-such-user", pairs[1][1]), pairs[2]]

    together, one_by_one = _together_and_one_by_one(
        server,
        lambda db: [token_store.principal_direct(db, sub, sid) for sub, sid in asked],
        lambda conn: [token_store.principal(conn, sub, sid) for sub, sid in asked],
    )
    assert together == one_by_one
    assert together[len(pairs)]["live_session_id"] is None  # the user, without that session
    assert together[len(pairs) + 1] is None


_HOLD_QUEUE = """
import sys, time
from bastion.store.direct import _open_write_queue, _queued
fd = _open_write_queue(sys.argv[1])
print("waiting", flush=True)
with _queued(fd):
    print("in", time.monotonic(), flush=True)
    time.sleep(0.3)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the queue needs fcntl")
def test_sqlite_write_queue_makes_processes_take_turns(tmp_path: Path) -> None:
    """A writer of another process waits at the queue while this one holds it, and gets
    it before this one can take it back (the turnstile), so that no process starves."""
    import threading

    from bastion.store.direct import _open_write_queue, _queued

    database = str(tmp_path / "queue.db")
    fd = _open_write_queue(database)
    assert fd is not None
    released = threading.Event()
    retaken: list[float] = []
    with _queued(fd):
        other = subprocess.Popen(
            [sys.executable, "-c", _HOLD_QUEUE, database], stdout=subprocess.PIPE, text=True
        )
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "waiting"
        time.sleep(0.3)  # it is blocked in the kernel by now, holding the turnstile
        assert other.poll() is None

        def take_again() -> None:
            released.wait()
            with _queued(fd):
                retaken.append(time.monotonic())

        again = threading.Thread(target=take_again)
        again.start()
    released.set()
    entered = other.stdout.readline().split()
    assert entered[0] == "in"
    again.join(timeout=10)
    assert other.wait(timeout=10) == 0
    assert retaken and float(entered[1]) < retaken[0]


def test_sign_in_does_the_same_database_work_before_the_hash_for_unknown_emails(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §3: timing must not tell which emails have accounts. Up to the password hash
    a sign-in for an unknown email makes the same driver calls as one for an account
    (the IP's failure count, the user read and the lockout slot go out together: one
    round trip on PostgreSQL); before, an unknown email cost one statement more (the
    slot's state read after the take found no row)."""
    from bastion.flows import accounts
    from bastion.flows.context import RequestContext
    from bastion.flows.errors import InvalidCredentials
    from bastion.runtime import Bastion
    from bastion.settings import load_settings
    from bastion.store import direct

    email = unique_email("parity")
    with server.client() as c:
        assert register(c, email).status_code == 201
    calls: list[str] = []  # every statement sent (a batch is one on PostgreSQL)
    for owner, name in (
        (direct.Direct, "_sqlite_first"),
        (direct.Direct, "_sqlite_query"),
        (direct.Direct, "_pg_query"),
        (direct.Direct, "_pg_batch"),
        (direct._PgPool, "fetchrow"),
    ):
        real = getattr(owner, name)

        def counted(self: Any, *args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return _real(self, *args, **kw)

        monkeypatch.setattr(owner, name, counted)
    settings = load_settings(
        database_url=server.database_url, secret_key="parity-test-" + "x" * 40, data_dir=tmp_path
    )

    async def before_hash(who: str, device_cookie: str | None = None) -> list[str]:
        bx = Bastion.create(settings)
        seen: list[str] = []
        verify = bx.verify_password

        async def noted(stored: str | None, password: str) -> bool:
            seen.extend(calls)
            return await verify(stored, password)

        bx.verify_password = noted  # type: ignore[method-assign]
        calls.clear()
        try:
            with pytest.raises(InvalidCredentials):
                context = RequestContext(ip="192.0.2.7", device_cookie=device_cookie)
                await accounts.login(bx, context, who, "Wrong-Horse-1!")
        finally:
            await direct.close_direct(bx.db)
            await bx.close()
        return seen

    known = run_async(before_hash(email))
    unknown = run_async(before_hash(unique_email("nobody")))
    assert known == unknown
    if server.database_url.startswith("postgresql"):
        assert known == ["_pg_batch"]  # the IP's failures, the user and the slot
    # A device cookie that is no account's (an attacker's guess) changes nothing.
    assert run_async(before_hash(email, "forged.cookie")) == run_async(
        before_hash(unique_email("nobody"), "forged.cookie")
    )


def test_a_password_sign_in_is_two_statements_on_postgresql(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/performance.md: once the account's location baseline is full and the device
    known, a PostgreSQL sign-in sends two statements: the first reads (IP failures,
    user, lockout slot) and the sign-in's transaction, whose one statement also appends
    the audit event (``bastion_audit_link``, migration 0006); the events still chain."""
    from bastion.flows import accounts
    from bastion.flows.context import RequestContext
    from bastion.flows.report import verify_audit_chain
    from bastion.runtime import Bastion
    from bastion.settings import load_settings
    from bastion.store import direct

    email = unique_email("two-statements")
    with server.client() as c:
        assert register(c, email).status_code == 201
    calls: list[str] = []
    for name in ("_sqlite_first", "_sqlite_query", "_pg_query", "_pg_batch"):
        real = getattr(direct.Direct, name)

        def counted(self: Any, *args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return _real(self, *args, **kw)

        monkeypatch.setattr(direct.Direct, name, counted)
    settings = load_settings(
        database_url=server.database_url, secret_key="two-statements-" + "x" * 40, data_dir=tmp_path
    )

    async def sign_ins() -> tuple[Any, list[list[str]], tuple[int, int | None]]:
        bx = Bastion.create(settings)
        sent = []
        try:
            for _ in range(4):  # the first ones also fill the location baseline
                calls.clear()
                signed = await accounts.login(bx, RequestContext(ip="192.0.2.8"), email, STRONG)
                sent.append(list(calls))
            return signed, sent, await verify_audit_chain(bx)
        finally:
            await direct.close_direct(bx.db)
            await bx.close()

    signed, sent, (events, broken) = run_async(sign_ins())
    assert signed.user["email"] == email
    assert broken is None and events >= 5  # the registration's and these sign-ins'
    if server.database_url.startswith("postgresql"):
        assert sent[-1] == ["_pg_batch", "_pg_batch"], sent
