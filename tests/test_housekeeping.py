"""The sweep of expired rows (flows/housekeeping.py, store/housekeeping.py): it deletes
expired sessions, one-time tokens, dead refresh-token families, rate-limit windows and
old suspicious-email marks, login attempts and finished mail past their retention, and
nothing live; by hand (``bastion housekeeping``) and periodically in the server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import ServerFactory
from tests.support import STRONG, TLS, Server, db_query, register, unique_email

OFF = {"BASTION_HOUSEKEEPING_INTERVAL": "0"}


def _time(server: Server, year: int) -> str:
    """A UTC instant in the form the server stores it (naive on SQLite)."""
    if server.database_url.startswith("sqlite"):
        return f"{year}-01-01 00:00:00.000000"
    return f"{year}-01-01 00:00:00+00"


def _count(server: Server, table: str, where: str = "1=1") -> int:
    return int(db_query(server.database_url, f"SELECT count(*) FROM {table} WHERE {where}")[0][0])


def _session_id(client: httpx.Client) -> str:
    r = client.get("/api/auth/session")
    assert r.status_code == 200, r.text
    return str(r.json()["session"]["id"])


def _token(server: Server, token_id: str, user_id: str, expires: str) -> None:
    db_query(
        server.database_url,
        "INSERT INTO one_time_tokens (id, token_hash, user_id, purpose, created_at, "
        f"expires_at, failed_attempts) VALUES ('{token_id}', '{token_id * 2}', '{user_id}', "
        f"'password_reset', '{_time(server, 1999)}', '{expires}', 0)",
    )


def _ended_windows(server: Server, prefix: str, n: int) -> None:
    """n rate-limit rows whose windows ended long ago, keyed prefix1..prefixN."""
    db_query(
        server.database_url,
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) "
        "INSERT INTO rate_limits (key, count, window_ends_at) "
        f"SELECT '{prefix}' || i, 1, '{_time(server, 2000)}' FROM n",
    )


def _old_history(server: Server) -> None:
    """A login attempt and three messages from 2000 (one still pending), and a recent
    attempt and sent message."""
    old, recent = _time(server, 2000), _time(server, 2999)
    db_query(
        server.database_url,
        "INSERT INTO login_attempts (email, success, created_at) VALUES "
        f"('hk-old@example.com', false, '{old}'), ('hk-new@example.com', true, '{recent}')",
    )
    db_query(
        server.database_url,
        "INSERT INTO outbox (recipient, event, subject, text_body, html_body, status, "
        "attempts, next_attempt_at, created_at) VALUES "
        f"('hk@example.com', 'new_device', 's', 't', 'h', 'sent', 1, '{old}', '{old}'), "
        f"('hk@example.com', 'new_device', 's', 't', 'h', 'failed', 9, '{old}', '{old}'), "
        f"('hk@example.com', 'new_device', 's', 't', 'h', 'pending', 0, '{old}', '{old}'), "
        f"('hk@example.com', 'new_device', 's', 't', 'h', 'sent', 1, '{recent}', '{recent}')",
    )


def test_sweep_deletes_what_expired_and_nothing_live(make_server: ServerFactory) -> None:
    server = make_server(env=OFF)
    old, new = _time(server, 2000), _time(server, 2999)
    with server.client() as gone, server.client() as live:
        assert register(gone, unique_email("hk-gone")).status_code == 201
        assert register(live, unique_email("hk-live")).status_code == 201
        gone_id, live_id = _session_id(gone), _session_id(live)
        user_id = live.get("/api/auth/session").json()["user"]["id"]
        db_query(
            server.database_url, f"UPDATE sessions SET expires_at = '{old}' WHERE id = '{gone_id}'"
        )
        _token(server, "hkoldtoken", user_id, old)
        _token(server, "hknewtoken", user_id, new)
        db_query(
            server.database_url,
            "INSERT INTO rate_limits (key, count, window_ends_at) VALUES "
            f"('hk-old', 3, '{old}'), ('hk-new', 3, '{new}')",
        )
        db_query(
            server.database_url,
            "INSERT INTO suspicious_emails (email, last_failed_at) VALUES "
            f"('hk-old@example.com', '{old}'), ('hk-new@example.com', '{new}')",
        )
        _old_history(server)
        tables = ("sessions", "one_time_tokens", "rate_limits", "login_attempts", "outbox")
        before = {t: _count(server, t) for t in tables}

        r = server.cli("housekeeping")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == (
            "sessions: 1, one_time_tokens: 1, refresh_tokens: 0, rate_limits: 1, "
            "suspicious_emails: 1, login_attempts: 1, outbox: 2"
        )
        assert _count(server, "login_attempts") == before["login_attempts"] - 1
        assert _count(server, "login_attempts", "email = 'hk-old@example.com'") == 0
        assert _count(server, "outbox") == before["outbox"] - 2
        assert _count(server, "outbox", "recipient = 'hk@example.com'") == 2  # pending, recent
        assert _count(server, "sessions") == before["sessions"] - 1
        assert _count(server, "sessions", f"id = '{gone_id}'") == 0
        assert _count(server, "one_time_tokens") == before["one_time_tokens"] - 1
        assert _count(server, "one_time_tokens", "id = 'hknewtoken'") == 1
        assert _count(server, "rate_limits") == before["rate_limits"] - 1
        assert _count(server, "rate_limits", "key = 'hk-new'") == 1
        assert _count(server, "suspicious_emails") == 1
        assert _count(server, "suspicious_emails", "email = 'hk-new@example.com'") == 1
        # The live session still works, the expired one answered 401 before and after.
        assert _session_id(live) == live_id
        assert gone.get("/api/auth/session").status_code == 401

        # A second sweep finds nothing.
        r = server.cli("housekeeping")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == (
            "sessions: 0, one_time_tokens: 0, refresh_tokens: 0, rate_limits: 0, "
            "suspicious_emails: 0, login_attempts: 0, outbox: 0"
        )


def test_retention_zero_keeps_login_attempts_and_mail(make_server: ServerFactory) -> None:
    server = make_server(
        env={
            **OFF,
            "BASTION_LOGIN_ATTEMPT_RETENTION_DAYS": "0",
            "BASTION_OUTBOX_RETENTION_DAYS": "0",
        }
    )
    _old_history(server)
    before = {t: _count(server, t) for t in ("login_attempts", "outbox")}
    r = server.cli("housekeeping")
    assert r.returncode == 0, r.stderr
    assert "login_attempts: 0, outbox: 0" in r.stdout
    assert {t: _count(server, t) for t in ("login_attempts", "outbox")} == before


def test_sweep_deletes_more_than_one_batch(make_server: ServerFactory) -> None:
    server = make_server(env=OFF)
    _ended_windows(server, "hk-bulk-", 2500)
    r = server.cli("housekeeping")
    assert r.returncode == 0, r.stderr
    assert "rate_limits: 2500," in r.stdout
    assert _count(server, "rate_limits", "key LIKE 'hk-bulk-%'") == 0


def test_two_sweeps_at_once_delete_every_row_once(make_server: ServerFactory) -> None:
    server = make_server(env=OFF)
    _ended_windows(server, "hk-race-", 3000)
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: server.cli("housekeeping"), range(2)))
    for r in runs:
        assert r.returncode == 0, r.stderr
    counts = [int(r.stdout.split("rate_limits: ")[1].split(",")[0]) for r in runs]
    assert sum(counts) == 3000, counts
    assert _count(server, "rate_limits", "key LIKE 'hk-race-%'") == 0


def test_the_server_sweeps_by_itself(make_server: ServerFactory) -> None:
    server = make_server(env={"BASTION_HOUSEKEEPING_INTERVAL": "0.5"})
    db_query(
        server.database_url,
        "INSERT INTO rate_limits (key, count, window_ends_at) "
        f"VALUES ('hk-auto', 1, '{_time(server, 2000)}')",
    )
    deadline = time.monotonic() + 15
    while _count(server, "rate_limits", "key = 'hk-auto'") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _count(server, "rate_limits", "key = 'hk-auto'") == 0


def _refresh_row(server: Server, token_id: str, family: str, user_id: str, expires: str) -> None:
    db_query(
        server.database_url,
        "INSERT INTO refresh_tokens (id, token_hash, family_id, user_id, created_at, "
        f"expires_at, used_at) VALUES ('{token_id}', '{token_id * 2}', '{family}', "
        f"'{user_id}', '{expires}', '{expires}', '{expires}')",
    )


def test_refresh_tokens_go_with_their_family_once_all_of_it_expired(
    make_server: ServerFactory,
) -> None:
    """A spent refresh token is what detects its replay, so a family's tokens stay as
    long as any of them is live, and all go once the newest expired (plus the grace)."""
    server = make_server(env=OFF)
    old = _time(server, 2000)
    email = unique_email("hk-rt")
    with server.client() as c:
        assert register(c, email).status_code == 201
        user_id = c.get("/api/auth/session").json()["user"]["id"]
        grant = {"grant_type": "password", "username": email, "password": STRONG}
        spent = c.post("/api/auth/token", data=grant).json()["refresh_token"]
        r = c.post("/api/auth/token", data={"grant_type": "refresh_token", "refresh_token": spent})
        assert r.status_code == 200, r.text
        newest = r.json()["refresh_token"]
    family = db_query(
        server.database_url, f"SELECT family_id FROM refresh_tokens WHERE user_id = '{user_id}'"
    )[0][0]
    # The live family's spent token expired long ago; its newest token is live.
    db_query(
        server.database_url,
        f"UPDATE refresh_tokens SET expires_at = '{old}' WHERE family_id = '{family}' "
        "AND used_at IS NOT NULL",
    )
    # A dead family: every token expired in 2000.
    _refresh_row(server, "hkdeadrt1", "hkdeadfamily", user_id, old)
    _refresh_row(server, "hkdeadrt2", "hkdeadfamily", user_id, old)

    r = server.cli("housekeeping")
    assert r.returncode == 0, r.stderr
    assert "refresh_tokens: 2," in r.stdout
    assert _count(server, "refresh_tokens", "family_id = 'hkdeadfamily'") == 0
    assert _count(server, "refresh_tokens", f"family_id = '{family}'") == 2
    # The spent token still gives its replay away: the whole family is revoked.
    with httpx.Client(base_url=server.url, verify=TLS) as c:
        replay = {"grant_type": "refresh_token", "refresh_token": spent}
        assert c.post("/api/auth/token", data=replay).status_code == 400
        after = {"grant_type": "refresh_token", "refresh_token": newest}
        assert c.post("/api/auth/token", data=after).status_code == 400
