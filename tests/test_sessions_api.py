"""SPEC §7 over HTTP: device-aware sessions, revocation, last-active throttling and the
new-device alert, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support import (
    STRONG,
    Server,
    csrf,
    db_query,
    login,
    register,
    run_async,
    unique_email,
)

FIREFOX_UBUNTU = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def client(server: Server, ua: str) -> httpx.Client:
    return server.client(headers={"User-Agent": ua})


def q(server: Server, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return db_query(server.database_url, sql, *args)


def user_id_of(server: Server, email: str) -> str:
    return str(q(server, "SELECT id FROM users WHERE email = $1", email)[0][0])


def mails(server: Server, email: str, event: str) -> int:
    rows = q(
        server, "SELECT count(*) FROM outbox WHERE recipient = $1 AND event = $2", email, event
    )
    return int(rows[0][0])


def audit_actions(server: Server, user_id: str) -> list[tuple[str, Any, Any]]:
    rows = q(
        server,
        "SELECT action, actor_id, details FROM audit_events WHERE user_id = $1 ORDER BY id",
        user_id,
    )
    return [(r[0], r[1], json.loads(r[2]) if isinstance(r[2], str) else r[2]) for r in rows]


def as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def set_last_active(server: Server, session_id: str, when: datetime) -> None:
    value: Any = when
    if server.database_url.startswith("sqlite"):
        value = when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    q(server, "UPDATE sessions SET last_active_at = $1 WHERE id = $2", value, session_id)


def last_active(server: Server, session_id: str) -> datetime:
    return as_utc(q(server, "SELECT last_active_at FROM sessions WHERE id = $1", session_id)[0][0])


def test_sessions_list_describes_each_device(server: Server) -> None:
    email = unique_email()
    with client(server, FIREFOX_UBUNTU) as a, client(server, IPHONE) as b:
        assert register(a, email).status_code == 201
        r = login(b, email)
        assert r.status_code == 200, r.text
        current = r.json()["session"]["id"]
        listing = b.get("/api/auth/sessions")
        assert listing.status_code == 200
        assert listing.headers["cache-control"] == "no-store"
        sessions = listing.json()["sessions"]
        assert len(sessions) == 2
        by_id = {s["id"]: s for s in sessions}
        mine = by_id[current]
        assert set(mine) == {
            "id",
            "device_name",
            "device_type",
            "browser",
            "os",
            "ip_address",
            "location",
            "created_at",
            "last_active_at",
            "current",
        }
        assert mine["current"] is True
        assert mine["device_name"] == "Mobile Safari on iOS"
        assert mine["device_type"] == "mobile"
        assert mine["ip_address"] == "127.0.0.1"
        assert mine["location"] == "Unknown"  # loopback
        other = next(s for s in sessions if s["id"] != current)
        assert other["current"] is False
        assert other["device_name"] == "Firefox on Ubuntu"
        assert (other["browser"], other["os"], other["device_type"]) == (
            "Firefox",
            "Ubuntu",
            "desktop",
        )
        assert other["created_at"].endswith("Z") and other["last_active_at"].endswith("Z")


def test_sessions_require_authentication(server: Server) -> None:
    with server.client() as c:
        assert c.get("/api/auth/sessions").status_code == 401
        assert c.post("/api/auth/sessions/revoke-all").status_code == 401


def test_revoke_one_session_ends_it_and_is_audited(server: Server) -> None:
    email = unique_email()
    with client(server, FIREFOX_UBUNTU) as a, client(server, CHROME_WINDOWS) as b:
        a_session = register(a, email).json()["session"]["id"]
        assert login(b, email).status_code == 200
        r = b.delete(f"/api/auth/sessions/{a_session}", headers=csrf(b))
        assert r.status_code == 204, r.text
        assert a.get("/api/auth/session").status_code == 401
        assert b.get("/api/auth/session").status_code == 200
        again = b.delete(f"/api/auth/sessions/{a_session}", headers=csrf(b))
        assert again.status_code == 404
    uid = user_id_of(server, email)
    revoked = [a for a in audit_actions(server, uid) if a[0] == "session_revoked"]
    assert revoked and revoked[0][1] == uid and revoked[0][2]["session_id"] == a_session


def test_cannot_revoke_another_users_session(server: Server) -> None:
    with client(server, FIREFOX_UBUNTU) as victim, client(server, CHROME_WINDOWS) as attacker:
        victim_session = register(victim).json()["session"]["id"]
        assert register(attacker).status_code == 201
        r = attacker.delete(f"/api/auth/sessions/{victim_session}", headers=csrf(attacker))
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"
        assert victim.get("/api/auth/session").status_code == 200


def test_session_revocation_needs_csrf_token(server: Server) -> None:
    with client(server, FIREFOX_UBUNTU) as a:
        sid = register(a).json()["session"]["id"]
        assert a.delete(f"/api/auth/sessions/{sid}").status_code == 403
        assert a.post("/api/auth/sessions/revoke-others").status_code == 403
        assert a.post("/api/auth/sessions/revoke-all").status_code == 403
        assert a.get("/api/auth/session").status_code == 200


def test_revoke_others_keeps_only_current(server: Server) -> None:
    email = unique_email()
    with (
        client(server, FIREFOX_UBUNTU) as a,
        client(server, CHROME_WINDOWS) as b,
        client(server, IPHONE) as c,
    ):
        assert register(a, email).status_code == 201
        assert login(b, email).status_code == 200
        assert login(c, email).status_code == 200
        r = c.post("/api/auth/sessions/revoke-others", headers=csrf(c))
        assert r.status_code == 200, r.text
        assert r.json() == {"revoked": 2}
        assert a.get("/api/auth/session").status_code == 401
        assert b.get("/api/auth/session").status_code == 401
        assert c.get("/api/auth/session").status_code == 200
        assert len(c.get("/api/auth/sessions").json()["sessions"]) == 1
    uid = user_id_of(server, email)
    assert any(
        a[0] == "sessions_revoked" and a[2]["count"] == 2 for a in audit_actions(server, uid)
    )


def test_revoke_all_ends_everything_and_bumps_token_version(server: Server) -> None:
    email = unique_email()
    with client(server, FIREFOX_UBUNTU) as a, client(server, CHROME_WINDOWS) as b:
        assert register(a, email).status_code == 201
        assert login(b, email).status_code == 200
        uid = user_id_of(server, email)
        version = q(server, "SELECT token_version FROM users WHERE id = $1", uid)[0][0]
        now = datetime.now(UTC)
        stamp: Any = now + timedelta(days=1)
        created: Any = now
        if server.database_url.startswith("sqlite"):
            stamp = stamp.replace(tzinfo=None).isoformat(sep=" ")
            created = created.replace(tzinfo=None).isoformat(sep=" ")
        q(
            server,
            "INSERT INTO refresh_tokens (id, token_hash, family_id, user_id, created_at, "
            "expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            "rt" + uid[:20],
            "h" * 64,
            "fam" + uid[:20],
            uid,
            created,
            stamp,
        )
        r = b.post("/api/auth/sessions/revoke-all", headers=csrf(b))
        assert r.status_code == 204, r.text
        assert a.get("/api/auth/session").status_code == 401
        assert b.get("/api/auth/session").status_code == 401
    assert q(server, "SELECT token_version FROM users WHERE id = $1", uid)[0][0] == version + 1
    assert q(server, "SELECT count(*) FROM sessions WHERE user_id = $1", uid)[0][0] == 0
    open_tokens = q(
        server,
        "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL",
        uid,
    )
    assert open_tokens[0][0] == 0
    assert any(a[0] == "sessions_revoked" and a[1] == uid for a in audit_actions(server, uid))


def test_last_active_written_at_most_once_a_minute(server: Server) -> None:
    with client(server, FIREFOX_UBUNTU) as a:
        sid = register(a).json()["session"]["id"]
        recent = datetime.now(UTC) - timedelta(seconds=30)
        set_last_active(server, sid, recent)
        for _ in range(3):
            assert a.get("/api/auth/session").status_code == 200
        # Within the minute: no write.
        assert abs((last_active(server, sid) - recent).total_seconds()) < 0.01
        stale = datetime.now(UTC) - timedelta(minutes=2)
        set_last_active(server, sid, stale)
        before = datetime.now(UTC)
        assert a.get("/api/auth/session").status_code == 200
        touched = last_active(server, sid)
        assert touched >= before - timedelta(seconds=2)
        assert a.get("/api/auth/session").status_code == 200
        assert last_active(server, sid) == touched  # written once, not again


def test_requests_that_find_last_active_stale_together_all_answer(
    make_server: ServerFactory,
) -> None:
    """A page firing its API calls at once when last active is a minute old, its
    requests spread over two server processes on one database: every request answers
    (cookie and bearer alike) and last active is written."""
    public = {"BASTION_BASE_URL": "http://bastion.test"}  # one issuer, as behind a proxy
    first = make_server(env=public)
    servers = [first, make_server(env=public, database_url=first.database_url)]
    with client(first, FIREFOX_UBUNTU) as a:
        email = unique_email("burst")
        sid = register(a, email).json()["session"]["id"]
        cookie = a.cookies.get("bastion_session") or ""
        grant = a.post(
            "/api/auth/token",
            data={"grant_type": "password", "username": email, "password": STRONG},
        )
        assert grant.status_code == 200, grant.text
        user_id = q(first, "SELECT user_id FROM sessions WHERE id = $1", sid)[0][0]
        sids = q(first, "SELECT id FROM sessions WHERE user_id = $1", user_id)
        bearer_sid = next(row[0] for row in sids if row[0] != sid)
        access = grant.json()["access_token"]
    for session_id, headers in (
        (sid, {"Cookie": f"bastion_session={cookie}"}),
        (bearer_sid, {"Authorization": f"Bearer {access}"}),
    ):
        set_last_active(first, session_id, datetime.now(UTC) - timedelta(minutes=5))
        before = datetime.now(UTC)

        def check(i: int, headers: dict[str, str] = headers) -> int:
            with servers[i % 2].client(headers=headers) as c:
                return c.get("/api/auth/session").status_code

        with ThreadPoolExecutor(24) as pool:
            statuses = list(pool.map(check, range(48)))
        assert statuses == [200] * 48
        assert last_active(first, session_id) >= before - timedelta(seconds=2)


def test_concurrent_last_active_writes_of_one_session_are_one_write(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The requests of one process that find a session stale at the same moment share
    one write (flows/sessions.py ``touch_last_active``): on SQLite, 32 requests each
    queueing for the write lock stalled for over a second."""
    from bastion.flows import sessions as session_flow
    from bastion.runtime import Bastion
    from bastion.settings import load_settings
    from bastion.store import direct

    with client(server, FIREFOX_UBUNTU) as a:
        sid = register(a, unique_email("touch")).json()["session"]["id"]
    set_last_active(server, sid, datetime.now(UTC) - timedelta(minutes=5))
    writes: list[int] = []
    real = direct.transaction

    async def counted(*args: Any, **kw: Any) -> Any:
        writes.append(1)
        return await real(*args, **kw)

    monkeypatch.setattr(direct, "transaction", counted)
    settings = load_settings(
        database_url=server.database_url, secret_key="touch-test-" + "x" * 40, data_dir=tmp_path
    )
    first = datetime.now(UTC).replace(microsecond=0)

    async def go() -> None:
        bx = Bastion.create(settings)
        try:
            now = first
            await asyncio.gather(*(session_flow.touch_last_active(bx, sid, now) for _ in range(32)))
            assert len(writes) == 1 and bx.touching == {}
            later = first + timedelta(minutes=2)
            await asyncio.gather(
                *(session_flow.touch_last_active(bx, sid, later) for _ in range(8))
            )
            assert len(writes) == 2 and bx.touching == {}
        finally:
            await direct.close_direct(bx.db)
            await bx.close()

    run_async(go())
    assert last_active(server, sid) == first + timedelta(minutes=2)


def test_new_device_alert_fires_for_unseen_device_only(server: Server) -> None:
    email = unique_email()
    with client(server, FIREFOX_UBUNTU) as a:
        assert register(a, email).status_code == 201
    # Registration is the first sign-in: no alert.
    assert mails(server, email, "new_device") == 0
    with client(server, FIREFOX_UBUNTU) as a:
        assert login(a, email).status_code == 200
    assert mails(server, email, "new_device") == 0  # known device
    with client(server, CHROME_WINDOWS) as b:
        assert login(b, email).status_code == 200
        assert mails(server, email, "new_device") == 1
        body = q(
            server,
            "SELECT text_body FROM outbox WHERE recipient = $1 AND event = 'new_device'",
            email,
        )[0][0]
        assert "Chrome on Windows" in body
        # A device stays known after its sessions are revoked.
        assert b.post("/api/auth/sessions/revoke-all", headers=csrf(b)).status_code == 204
    with client(server, CHROME_WINDOWS) as b:
        assert login(b, email).status_code == 200
    assert mails(server, email, "new_device") == 1
    with client(server, IPHONE) as c:
        assert login(c, email).status_code == 200
    assert mails(server, email, "new_device") == 2


def test_new_device_alert_not_sent_on_first_login_of_cli_user(server: Server) -> None:
    email = unique_email("cli")
    created = server.cli("create-user", "--email", email, "--password-stdin", stdin=STRONG + "\n")
    assert created.returncode == 0, created.stderr
    with client(server, CHROME_WINDOWS) as a:
        assert login(a, email).status_code == 200
    assert mails(server, email, "new_device") == 0
    with client(server, IPHONE) as b:
        assert login(b, email).status_code == 200
    assert mails(server, email, "new_device") == 1


def test_session_location_from_trusted_proxy_forwarded_ip(make_server: Any) -> None:
    srv = make_server(env={"BASTION_TRUSTED_PROXIES": "127.0.0.1"})
    headers = {"User-Agent": FIREFOX_UBUNTU, "X-Forwarded-For": "81.2.69.160"}
    with srv.client(headers=headers) as a:
        r = register(a)
        assert r.status_code == 201, r.text
        sessions = a.get("/api/auth/sessions").json()["sessions"]
    assert sessions[0]["ip_address"] == "81.2.69.160"
    assert sessions[0]["location"] == "United Kingdom"
