"""SPEC §3 rate limits over HTTP: the per-IP login failure limit, client IP behind
proxies, endpoint budgets and the login-attempt log, with the limits in the database and
in Redis (two processes sharing them), and Redis failing closed."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from tests.conftest import REDIS_UP, ServerFactory
from tests.support import STRONG, Server, db_query, free_port, login, register, unique_email

REDIS_DB = 13  # this module's own Redis database, flushed per test
WRONG = "Wrong-Password-1!"


@pytest.fixture(params=["database", "redis"])
def limits_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings that put the limits in the database or in Redis."""
    if request.param == "database":
        yield {}
        return
    if not REDIS_UP:
        pytest.skip("Redis not reachable")
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    try:
        yield {"BASTION_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}"}
    finally:
        client.flushdb()
        client.close()


def q(server: Server, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return db_query(server.database_url, sql, *args)


def test_ip_failure_limit_spans_emails_and_processes(
    make_server: ServerFactory, limits_env: dict[str, str]
) -> None:
    env = {**limits_env, "BASTION_IP_FAILURE_LIMIT": "3"}
    a = make_server(env=env)
    b = make_server(env=env, database_url=a.database_url)
    victim = unique_email()
    with a.client() as c:
        assert register(c, victim).status_code == 201
    with a.client() as ca, b.client() as cb:
        assert login(ca, unique_email(), WRONG).status_code == 401  # unknown email counts
        assert login(cb, victim, WRONG).status_code == 401
        assert login(ca, unique_email(), WRONG).status_code == 401
        for c in (ca, cb):
            r = login(c, victim, STRONG)  # even the right password, from this IP
            assert r.status_code == 429, r.text
            assert r.json()["error"] == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1

    def over_budget(i: int) -> int:
        with (a if i % 2 else b).client() as c:
            return login(c, victim, STRONG).status_code

    with ThreadPoolExecutor(10) as pool:
        assert set(pool.map(over_budget, range(20))) == {429}
    # An IP over its budget never touches the account's lockout counter: only the one
    # wrong password above holds a slot (with the database limiter the budget's read and
    # the slot go out in one statement, the slot guarded by the budget).
    counted = q(a, "SELECT failed_login_attempts FROM users WHERE email = $1", victim)
    assert counted[0][0] == 1
    if limits_env:
        keys = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).keys("bastion:rl:*")
        assert any(b"login-fail:ip:127.0.0.1" in k for k in keys), keys
        assert q(a, "SELECT count(*) FROM rate_limits")[0][0] == 0  # nothing in the database
    else:
        assert q(a, "SELECT count(*) FROM rate_limits")[0][0] >= 1


def test_ip_limit_not_bypassed_by_forwarded_for_from_untrusted_peer(
    make_server: ServerFactory, limits_env: dict[str, str]
) -> None:
    srv = make_server(env={**limits_env, "BASTION_IP_FAILURE_LIMIT": "3"})
    with srv.client() as c:
        for i in range(3):
            spoof = {"X-Forwarded-For": f"203.0.113.{i}"}
            assert login(c, unique_email(), WRONG, headers=spoof).status_code == 401
        r = login(c, unique_email(), WRONG, headers={"X-Forwarded-For": "198.51.100.7"})
        assert r.status_code == 429
    ips = q(srv, "SELECT DISTINCT ip_address FROM login_attempts")
    assert ips == [("127.0.0.1",)]


def test_trusted_proxy_forwarded_client_ip_is_limited(
    make_server: ServerFactory, limits_env: dict[str, str]
) -> None:
    env = {
        **limits_env,
        "BASTION_IP_FAILURE_LIMIT": "3",
        "BASTION_TRUSTED_PROXIES": "127.0.0.1",
    }
    srv = make_server(env=env)
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    other = {"X-Forwarded-For": "198.51.100.7, 203.0.113.77"}  # rightmost untrusted wins
    with srv.client() as c:
        for _ in range(3):
            assert login(c, unique_email(), WRONG, headers=attacker).status_code == 401
        assert login(c, unique_email(), WRONG, headers=attacker).status_code == 429
        assert login(c, unique_email(), WRONG, headers=other).status_code == 401
    rows = q(srv, "SELECT ip_address, count(*) FROM login_attempts GROUP BY ip_address")
    assert dict(rows) == {"203.0.113.9": 4, "203.0.113.77": 1}


def test_login_attempts_log_every_attempt(server: Server) -> None:
    email = unique_email()
    ua = {"User-Agent": "attempt-log-test/1.0"}
    with server.client(headers=ua) as c:
        assert register(c, email).status_code == 201
        assert login(c, email, WRONG).status_code == 401
        assert login(c, email, STRONG).status_code == 200
    ghost = unique_email("ghost")
    with server.client(headers=ua) as c:
        assert login(c, ghost, WRONG).status_code == 401
    rows = q(
        server,
        "SELECT email, ip_address, user_agent, success, failure_reason FROM login_attempts "
        "WHERE email IN ($1, $2) ORDER BY id",
        email,
        ghost,
    )
    assert [(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows] == [
        (email, "127.0.0.1", "attempt-log-test/1.0", False, "invalid_password"),
        (email, "127.0.0.1", "attempt-log-test/1.0", True, None),
        (ghost, "127.0.0.1", "attempt-log-test/1.0", False, "unknown_email"),
    ]


def test_locked_and_rate_limited_attempts_are_logged(make_server: ServerFactory) -> None:
    srv = make_server(env={"BASTION_LOCKOUT_THRESHOLD": "2", "BASTION_IP_FAILURE_LIMIT": "3"})
    email = unique_email()
    with srv.client() as c:
        assert register(c, email).status_code == 201
    with srv.client() as c:
        assert [login(c, email, WRONG).status_code for _ in range(3)] == [401, 401, 423]
        # A refused (locked) attempt checks no password and does not count against the IP.
        assert login(c, unique_email(), WRONG).status_code == 401
        assert login(c, email, STRONG).status_code == 429
    reasons = q(
        srv, "SELECT failure_reason FROM login_attempts WHERE email = $1 ORDER BY id", email
    )
    assert [r[0] for r in reasons] == [
        "invalid_password",
        "invalid_password",
        "account_locked",
        "rate_limited",
    ]


def test_register_budget_per_ip_gives_429(
    make_server: ServerFactory, limits_env: dict[str, str]
) -> None:
    srv = make_server(env={**limits_env, "BASTION_RATE_LIMITS": '{"register:ip": [2, 60]}'})
    with srv.client() as c:
        assert register(c).status_code == 201
    with srv.client() as c:
        assert register(c).status_code == 201
    with srv.client() as c:
        r = register(c)
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_parallel_guesses_locked_with_redis_limits(
    make_server: ServerFactory, limits_env: dict[str, str]
) -> None:
    """Lockout counters stay in the database with Redis configured: still exact."""
    from tests.test_lockout import parallel_logins, statuses

    env = {**limits_env, "BASTION_LOCKOUT_THRESHOLD": "5"}
    a = make_server(env=env)
    b = make_server(env=env, database_url=a.database_url)
    email = unique_email()
    with a.client() as c:
        assert register(c, email).status_code == 201
    counts = statuses(parallel_logins([a, b], email, WRONG, 30))
    assert counts[401] <= 5 and counts[401] + counts[423] == 30, counts


def test_redis_down_fails_closed(make_server: ServerFactory) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    srv = make_server(env={"BASTION_REDIS_URL": dead})
    email = unique_email()
    with srv.client() as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] is False
        for password in (WRONG, STRONG):
            r = login(c, email, password)
            assert r.status_code in (503, 429), r.text
        r = register(c, email)
        assert r.status_code in (503, 429), r.text
    assert q(srv, "SELECT count(*) FROM users WHERE email = $1", email)[0][0] == 0


def test_readyz_checks_redis_when_configured(
    make_server: ServerFactory, limits_env: dict[str, str]
) -> None:
    srv = make_server(env=limits_env)
    with srv.client() as c:
        r = c.get("/readyz")
        assert r.status_code == 200
        assert ("redis" in r.json()["checks"]) == bool(limits_env)
