"""SPEC §3 account lockout over HTTP: the attempt is reserved before the password is
checked, across processes; device cookies keep the owner in; ``bastion unlock``.

Two server processes share one database (SQLite and PostgreSQL) wherever concurrency
matters, so that "across processes" is what is tested.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.support import STRONG, TLS, Server, db_query, login, register, unique_email

THRESHOLD = 5
WRONG = "Wrong-Password-1!"


def q(server: Server, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return db_query(server.database_url, sql, *args)


def two_servers(make_server: ServerFactory, env: dict[str, str]) -> tuple[Server, Server]:
    first = make_server(env=env)
    second = make_server(env=env, database_url=first.database_url)
    return first, second


def parallel_logins(
    servers: list[Server],
    email: str,
    password: str,
    n: int,
    cookies: dict[str, str] | None = None,
) -> list[httpx.Response]:
    def one(i: int) -> httpx.Response:
        srv = servers[i % len(servers)]
        with httpx.Client(base_url=srv.url, timeout=60, cookies=cookies, verify=TLS) as c:
            return login(c, email, password)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def lock_state(server: Server, email: str) -> tuple[int, Any]:
    row = q(server, "SELECT failed_login_attempts, locked_until FROM users WHERE email = $1", email)
    return int(row[0][0]), row[0][1]


def mails(server: Server, email: str, event: str) -> int:
    rows = q(
        server, "SELECT count(*) FROM outbox WHERE recipient = $1 AND event = $2", email, event
    )
    return int(rows[0][0])


def new_account(server: Server) -> tuple[str, httpx.Client]:
    """A registered account, and the owner's client holding its bastion_device cookie."""
    email = unique_email("victim")
    owner = server.client()
    assert register(owner, email).status_code == 201
    assert owner.cookies.get("bastion_device")
    assert owner.post("/api/auth/logout", headers={"X-CSRF-Token": owner.cookies["bastion_csrf"]})
    return email, owner


def test_parallel_guesses_across_two_processes_get_at_most_threshold_checks(
    make_server: ServerFactory,
) -> None:
    a, b = two_servers(make_server, {"BASTION_LOCKOUT_THRESHOLD": str(THRESHOLD)})
    email, owner = new_account(a)
    owner.close()
    answers = parallel_logins([a, b], email, WRONG, 50)
    counts = statuses(answers)
    assert counts[401] <= THRESHOLD, counts
    assert counts[401] + counts[423] == 50, counts
    assert all(r.json()["error"] == "account_locked" for r in answers if r.status_code == 423)
    failed, locked_until = lock_state(a, email)
    assert locked_until is not None
    checked = q(
        a,
        "SELECT count(*) FROM login_attempts WHERE email = $1 AND failure_reason = $2",
        email,
        "invalid_password",
    )[0][0]
    assert checked <= THRESHOLD
    assert mails(a, email, "account_locked") == 1  # locking mails the owner once


def test_locked_account_refuses_right_password_with_retry_after_then_expires(
    make_server: ServerFactory,
) -> None:
    srv = make_server(env={"BASTION_LOCKOUT_THRESHOLD": "3", "BASTION_LOCKOUT_DURATION": "2"})
    email = unique_email()
    with srv.client() as c:
        assert register(c, email).status_code == 201
    with srv.client() as c:  # an anonymous client: no device cookie
        for _ in range(3):
            assert login(c, email, WRONG).status_code == 401
        r = login(c, email, STRONG)
        assert r.status_code == 423, r.text
        body = r.json()
        assert body["error"] == "account_locked"
        assert 1 <= body["retry_after"] <= 2
        assert 1 <= int(r.headers["Retry-After"]) <= 2
        time.sleep(2.2)
        r = login(c, email, STRONG)
        assert r.status_code == 200, r.text
    assert lock_state(srv, email) == (0, None)  # a success resets the count


def test_parallel_right_password_logins_all_succeed(make_server: ServerFactory) -> None:
    a, b = two_servers(make_server, {"BASTION_LOCKOUT_THRESHOLD": str(THRESHOLD)})
    email, owner = new_account(a)
    owner.close()
    answers = parallel_logins([a, b], email, STRONG, 20)
    assert statuses(answers) == Counter({200: 20}), [
        r.text for r in answers if r.status_code != 200
    ]
    assert lock_state(a, email)[1] is None


def test_attacker_cannot_lock_out_owner_holding_device_cookie(make_server: ServerFactory) -> None:
    a, b = two_servers(make_server, {"BASTION_LOCKOUT_THRESHOLD": str(THRESHOLD)})
    email, owner = new_account(a)
    try:
        attack = parallel_logins([a, b], email, WRONG, 50)
        assert statuses(attack)[401] <= THRESHOLD
        with a.client() as anonymous:
            assert login(anonymous, email, STRONG).status_code == 423
        r = login(owner, email, STRONG)
        assert r.status_code == 200, r.text
        # The device cookie works on the other process too.
        device = owner.cookies["bastion_device"]
        with b.client(cookies={"bastion_device": device}) as same_browser:
            assert login(same_browser, email, STRONG).status_code == 200
    finally:
        owner.close()


def test_device_cookie_of_another_account_or_forged_gives_nothing(
    make_server: ServerFactory,
) -> None:
    srv = make_server(env={"BASTION_LOCKOUT_THRESHOLD": "3"})
    victim, owner = new_account(srv)
    owner.close()
    with srv.client() as attacker:
        assert register(attacker).status_code == 201
        foreign = attacker.cookies["bastion_device"]
    uid = q(srv, "SELECT id FROM users WHERE email = $1", victim)[0][0]
    forged_value = f"{uid}:abcdef"
    forged = [forged_value, f"{forged_value}.AAAA", foreign.replace(foreign[-4:], "AAAA")]
    with srv.client() as c:
        for _ in range(3):
            assert login(c, victim, WRONG).status_code == 401
    for cookie in [foreign, *forged]:
        with srv.client(cookies={"bastion_device": cookie}) as c:
            r = login(c, victim, STRONG)
            assert r.status_code == 423, (cookie, r.text)


def test_device_cookie_client_is_locked_separately(make_server: ServerFactory) -> None:
    srv = make_server(env={"BASTION_LOCKOUT_THRESHOLD": "3"})
    email, owner = new_account(srv)
    try:
        for _ in range(3):
            assert login(owner, email, WRONG).status_code == 401
        assert login(owner, email, STRONG).status_code == 423
        with srv.client() as anonymous:  # the anonymous counter is untouched
            assert login(anonymous, email, STRONG).status_code == 200
    finally:
        owner.close()


def test_unlock_cli_clears_lock_and_is_audited(make_server: ServerFactory) -> None:
    srv = make_server(env={"BASTION_LOCKOUT_THRESHOLD": "3"})
    email, owner = new_account(srv)
    try:
        for _ in range(3):
            assert login(owner, email, WRONG).status_code == 401
        with srv.client() as c:
            for _ in range(3):
                assert login(c, email, WRONG).status_code == 401
            assert login(c, email, STRONG).status_code == 423
        assert login(owner, email, STRONG).status_code == 423
        done = srv.cli("unlock", email.upper())
        assert done.returncode == 0, done.stderr
        assert lock_state(srv, email) == (0, None)
        assert q(srv, "SELECT count(*) FROM device_lockouts")[0][0] == 0
        with srv.client() as c:
            assert login(c, email, STRONG).status_code == 200
        assert login(owner, email, STRONG).status_code == 200
    finally:
        owner.close()
    rows = q(
        srv,
        "SELECT actor_id, details FROM audit_events WHERE action = 'account_unlocked' "
        "AND user_id = (SELECT id FROM users WHERE email = $1)",
        email,
    )
    assert len(rows) == 1
    actor, details = rows[0]
    details = json.loads(details) if isinstance(details, str) else details
    assert actor is None and details["via"] == "cli" and details["was_locked"] is True


def test_unlock_cli_unknown_email_is_one_line_error_exit_2(server: Server) -> None:
    done = server.cli("unlock", unique_email("nobody"))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:")
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""
