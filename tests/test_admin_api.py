"""SPEC §10 admin API over HTTP against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import threading
from contextlib import closing

import httpx
import pytest

from tests.admin_helpers import admin_client, create_user, signed_in, sql
from tests.conftest import ServerFactory
from tests.support import STRONG, Server, csrf, login, register, unique_email

FAKE_ID = "0" * 32
ENDPOINTS = [
    ("GET", "/api/admin/users"),
    ("GET", f"/api/admin/users/{FAKE_ID}"),
    ("PATCH", f"/api/admin/users/{FAKE_ID}"),
    ("POST", f"/api/admin/users/{FAKE_ID}/unlock"),
    ("POST", f"/api/admin/users/{FAKE_ID}/revoke-sessions"),
    ("GET", "/api/admin/audit-log"),
    ("GET", "/api/admin/login-attempts"),
    ("GET", "/api/admin/security-report"),
]


def call(c: httpx.Client, method: str, path: str) -> httpx.Response:
    return c.request(method, path, json={"role": "admin"} if method == "PATCH" else None)


def test_admin_api_requires_authentication(server: Server) -> None:
    with server.client() as c:
        for method, path in ENDPOINTS:
            r = call(c, method, path)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"] == "unauthenticated"


def test_admin_api_forbidden_without_manage_users(server: Server) -> None:
    """Checked on the server: a viewer and an editor get 403 on every admin endpoint,
    including the writes that would make them admin."""
    for role in ("viewer", "editor"):
        _, email = create_user(server, role)
        with closing(signed_in(server, email)) as c:
            for method, path in ENDPOINTS:
                r = call(c, method, path)
                assert r.status_code == 403, (role, method, path, r.text)
                assert r.json()["error"] == "forbidden"
            me = c.get("/api/auth/session").json()["user"]
            assert me["role"] == role


def test_admin_cookie_writes_need_csrf_token(server: Server) -> None:
    admin, _ = admin_client(server)
    target, _ = create_user(server, "viewer")
    with closing(admin):
        del admin.headers["X-CSRF-Token"]
        r = admin.patch(f"/api/admin/users/{target}", json={"role": "editor"})
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
        r = admin.post(f"/api/admin/users/{target}/revoke-sessions")
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"


def test_list_users_keyset_pagination_and_search(server: Server) -> None:
    admin, _ = admin_client(server)
    tag = "pg" + secrets.token_hex(4)
    ids = {create_user(server, "viewer", f"{tag}-{i}@example.com")[0] for i in range(5)}
    with closing(admin):
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params = {"q": tag.upper(), "limit": 2} | ({"cursor": cursor} if cursor else {})
            r = admin.get("/api/admin/users", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"users", "next_cursor"}
            assert len(body["users"]) <= 2
            seen += [u["id"] for u in body["users"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 5 and set(seen) == ids
        user = admin.get("/api/admin/users", params={"q": tag, "limit": 1}).json()["users"][0]
        assert {"locked_until", "failed_login_attempts", "permissions"} <= set(user)
        # Name search, and wildcards in q are literal.
        r = admin.get("/api/admin/users", params={"q": "%"}).json()
        assert all("%" in (u["email"] + (u["name"] or "")) for u in r["users"])
        default = admin.get("/api/admin/users").json()["users"]
        assert 1 <= len(default) <= 50


@pytest.mark.parametrize(
    "params",
    [{"cursor": "not-a-cursor!"}, {"cursor": "WzFd"}, {"limit": 0}, {"limit": 101}, {"limit": "x"}],
)
def test_list_users_bad_parameters_are_422(server: Server, params: dict[str, object]) -> None:
    admin, _ = admin_client(server)
    with closing(admin):
        r = admin.get("/api/admin/users", params=params)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_request"


def test_unknown_user_is_404(server: Server) -> None:
    admin, _ = admin_client(server)
    with closing(admin):
        for method, path in ENDPOINTS[1:5]:
            r = call(admin, method, path)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"] == "not_found"


def test_admin_sees_lockout_and_unlock_is_audited_with_actor(server: Server) -> None:
    admin, admin_id = admin_client(server)
    email = unique_email("locked")
    with server.client() as c:
        user_id = register(c, email).json()["user"]["id"]
    with server.client() as attacker:  # no device cookie: the account counter
        for _ in range(5):
            assert login(attacker, email, "Wrong-Password-1!").status_code == 401
        assert login(attacker, email).status_code == 423
    with closing(admin):
        user = admin.get(f"/api/admin/users/{user_id}").json()["user"]
        assert user["locked_until"] is not None and user["failed_login_attempts"] == 5
        r = admin.post(f"/api/admin/users/{user_id}/unlock")
        assert r.status_code == 204, r.text
        user = admin.get(f"/api/admin/users/{user_id}").json()["user"]
        assert user["locked_until"] is None and user["failed_login_attempts"] == 0
        events = admin.get(
            "/api/admin/audit-log", params={"user_id": user_id, "action": "account_unlocked"}
        ).json()["events"]
        assert events and events[0]["actor_id"] == admin_id
    with server.client() as c:
        assert login(c, email).status_code == 200


def test_role_change_applies_at_once_and_is_audited(server: Server) -> None:
    admin, admin_id = admin_client(server)
    user_id, email = create_user(server, "viewer")
    with closing(admin), closing(signed_in(server, email)) as user:
        assert user.get("/api/admin/users").status_code == 403
        r = admin.patch(f"/api/admin/users/{user_id}", json={"role": "nope"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"
        r = admin.patch(f"/api/admin/users/{user_id}", json={})
        assert r.status_code == 422
        r = admin.patch(f"/api/admin/users/{user_id}", json={"role": "editor"})
        assert r.status_code == 200, r.text
        assert r.json()["user"]["role"] == "editor"
        assert r.json()["user"]["permissions"] == ["read", "write", "delete"]
        me = user.get("/api/auth/session").json()["user"]
        assert me["role"] == "editor" and "write" in me["permissions"]
        event = admin.get(
            "/api/admin/audit-log", params={"user_id": user_id, "action": "role_changed"}
        ).json()["events"][0]
        assert event["actor_id"] == admin_id
        assert event["details"] == {"from": "viewer", "to": "editor"}
        # Promotion to admin takes effect server-side on the next request.
        admin.patch(f"/api/admin/users/{user_id}", json={"role": "admin"})
        assert user.get("/api/admin/users").status_code == 200
        admin.patch(f"/api/admin/users/{user_id}", json={"role": "viewer"})
        assert user.get("/api/admin/users").status_code == 403


def test_revoke_sessions_ends_every_session_and_is_audited(server: Server) -> None:
    admin, admin_id = admin_client(server)
    user_id, email = create_user(server, "viewer")
    with (
        closing(admin),
        closing(signed_in(server, email)) as one,
        closing(signed_in(server, email)) as two,
    ):
        r = admin.post(f"/api/admin/users/{user_id}/revoke-sessions")
        assert r.status_code == 204, r.text
        assert one.get("/api/auth/session").status_code == 401
        assert two.get("/api/auth/session").status_code == 401
        event = admin.get(
            "/api/admin/audit-log", params={"user_id": user_id, "action": "sessions_revoked"}
        ).json()["events"][0]
        assert event["actor_id"] == admin_id and event["details"] == {
            "scope": "all",
            "count": 2,
            "via": "admin_api",
        }


def test_audit_log_newest_first_filters_and_cursor(server: Server) -> None:
    admin, _ = admin_client(server)
    user_id, email = create_user(server, "viewer")
    for _ in range(3):
        signed_in(server, email).close()
    with closing(admin):
        r = admin.get("/api/admin/audit-log", params={"user_id": user_id, "limit": 2})
        assert r.status_code == 200
        page = r.json()
        assert [e["action"] for e in page["events"]] == ["login_succeeded"] * 2
        assert set(page["events"][0]) == {
            "id",
            "action",
            "actor_id",
            "user_id",
            "ip_address",
            "user_agent",
            "details",
            "created_at",
        }
        rest = admin.get(
            "/api/admin/audit-log",
            params={"user_id": user_id, "limit": 10, "cursor": page["next_cursor"]},
        ).json()
        ids = [e["id"] for e in page["events"] + rest["events"]]
        assert ids == sorted(ids, reverse=True) and len(ids) == 4  # 3 logins + registered
        assert rest["events"][-1]["action"] == "registered" and rest["next_cursor"] is None
        actions = admin.get("/api/admin/audit-log", params={"action": "registered"}).json()
        assert all(e["action"] == "registered" for e in actions["events"])
        r = admin.get("/api/admin/audit-log", params={"cursor": "%%%"})
        assert r.status_code == 422


def test_login_attempts_filter_by_email_and_ip(server: Server) -> None:
    admin, _ = admin_client(server)
    email = unique_email("att")
    with server.client() as c:
        register(c, email)
        login(c, email, "Wrong-Password-1!")
        login(c, email.upper())
    with closing(admin):
        attempts = admin.get("/api/admin/login-attempts", params={"email": email.upper()}).json()[
            "attempts"
        ]
        assert [a["success"] for a in attempts] == [True, False]
        assert attempts[1]["failure_reason"] == "invalid_password"
        assert set(attempts[0]) == {
            "email",
            "ip_address",
            "user_agent",
            "success",
            "failure_reason",
            "created_at",
        }
        by_ip = admin.get("/api/admin/login-attempts", params={"ip": "127.0.0.1"}).json()
        assert by_ip["attempts"] and all(a["ip_address"] == "127.0.0.1" for a in by_ip["attempts"])
        none = admin.get("/api/admin/login-attempts", params={"ip": "203.0.113.250"}).json()
        assert none == {"attempts": []}


def test_security_report_lists_each_finding(server: Server) -> None:
    admin, _ = admin_client(server)
    noisy, quiet = unique_email("noisy"), unique_email("quiet")
    with server.client() as c:
        for _ in range(6):
            login(c, noisy, "Wrong-Password-1!")  # unknown email: counted too
        for _ in range(5):
            login(c, quiet, "Wrong-Password-1!")
    locked_id, locked_email = create_user(server, "viewer")
    with server.client() as c:
        for _ in range(5):
            login(c, locked_email, "Wrong-Password-1!")
    with closing(admin):
        r = admin.get("/api/admin/security-report", params={"limit": 1000})
        assert r.status_code == 200, r.text
        report = r.json()
    suspicious = {s["email"]: s["failed_attempts"] for s in report["suspicious_logins"]}
    assert suspicious.get(noisy) == 6 and quiet not in suspicious
    assert locked_id in {a["id"] for a in report["locked_accounts"]}
    assert locked_id in {u["id"] for u in report["users_without_mfa"]}
    assert report["totals"]["users_without_mfa"] >= len(report["users_without_mfa"])


GERMANY, JAPAN, FRANCE = "5.9.0.1", "133.242.0.1", "62.210.0.1"


def test_report_flags_a_session_from_outside_the_first_three_locations(
    make_server: ServerFactory,
) -> None:
    """The first three sessions set the baseline, and it survives their logout; a later
    session from elsewhere is listed while it lives; loopback (Unknown) never is."""
    srv = make_server(env={"BASTION_TRUSTED_PROXIES": "127.0.0.1"})
    admin, _ = admin_client(srv)
    email = unique_email("traveller")

    def from_ip(ip: str | None) -> httpx.Client:
        return srv.client(headers={"X-Forwarded-For": ip} if ip else {})

    with from_ip(GERMANY) as c:
        user_id = register(c, email).json()["user"]["id"]
        c.post("/api/auth/logout", headers=csrf(c))
    for ip in (GERMANY, JAPAN):
        with from_ip(ip) as c:
            assert login(c, email).status_code == 200
            c.post("/api/auth/logout", headers=csrf(c))
    clients = [from_ip(ip) for ip in (FRANCE, GERMANY, None)]
    for c in clients:
        assert login(c, email).status_code == 200
    with closing(admin):
        sessions = admin.get("/api/admin/security-report").json()["unusual_locations"]
        mine = [u for u in sessions if u["user_id"] == user_id]
        assert len(mine) == 1, sessions
        assert mine[0]["location"] == "France" and mine[0]["email"] == email
        assert mine[0]["ip_address"] == FRANCE
        assert mine[0]["usual_locations"] == ["Germany", "Japan"]
        assert admin.post(f"/api/admin/users/{user_id}/revoke-sessions").status_code == 204
        sessions = admin.get("/api/admin/security-report").json()["unusual_locations"]
        assert not [u for u in sessions if u["user_id"] == user_id]
    for c in clients:
        c.close()


def demote(c: httpx.Client, target: str, barrier: threading.Barrier, results: list[int]) -> None:
    barrier.wait()
    results.append(c.patch(f"/api/admin/users/{target}", json={"role": "viewer"}).status_code)


def test_last_admin_cannot_be_demoted_even_concurrently(make_server: ServerFactory) -> None:
    srv = make_server()
    first_id, first_email = create_user(srv, "admin")
    with closing(signed_in(srv, first_email)) as first:
        r = first.patch(f"/api/admin/users/{first_id}", json={"role": "viewer"})
        assert r.status_code == 409 and r.json()["error"] == "last_admin"
        second_id, second_email = create_user(srv, "admin")
        with closing(signed_in(srv, second_email)) as second:
            # Two admins demote each other at the same moment: exactly one may win.
            for _ in range(3):
                results: list[int] = []
                barrier = threading.Barrier(2)
                threads = [
                    threading.Thread(target=demote, args=(first, second_id, barrier, results)),
                    threading.Thread(target=demote, args=(second, first_id, barrier, results)),
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                admins = sql(srv, "SELECT count(*) FROM users WHERE role = 'admin'")[0][0]
                assert admins == "1", results
                assert sorted(results) in ([200, 403], [200, 409]), results
                # Restore both admins for the next round, as the CLI would.
                sql(srv, "UPDATE users SET role = 'admin'")


def test_bastion_roles_replaces_the_map(make_server: ServerFactory) -> None:
    """BASTION_ROLES replaces §10's map: its manage_users role administers, its
    permissions appear in the user object, the old roles are unknown."""
    roles = '{"boss": ["manage_users", "read"], "staff": ["read", "write"], "guest": []}'
    srv = make_server(env={"BASTION_ROLES": roles, "BASTION_DEFAULT_ROLE": "guest"})
    r = srv.cli("create-user", "--email", unique_email(), "--role", "admin", "--password-stdin")
    assert r.returncode == 2
    boss_id, boss_email = create_user(srv, "boss")
    with srv.client() as c:
        user = register(c).json()["user"]
        assert user["role"] == "guest" and user["permissions"] == []
        assert c.get("/api/admin/users").status_code == 403
    with closing(signed_in(srv, boss_email)) as boss:
        me = boss.get("/api/auth/session").json()["user"]
        assert me["permissions"] == ["manage_users", "read"]
        r = boss.patch(f"/api/admin/users/{user['id']}", json={"role": "editor"})
        assert r.status_code == 422
        r = boss.patch(f"/api/admin/users/{user['id']}", json={"role": "staff"})
        assert r.status_code == 200 and r.json()["user"]["permissions"] == ["read", "write"]
        r = boss.patch(f"/api/admin/users/{boss_id}", json={"role": "staff"})
        assert r.status_code == 409 and r.json()["error"] == "last_admin"


def test_admin_api_with_bearer_access_tokens(server: Server) -> None:
    """API clients use access tokens: same permission check, no CSRF token needed."""
    _, admin_email = create_user(server, "admin")
    target, viewer_email = create_user(server, "viewer")
    with server.client() as c:

        def bearer(email: str) -> dict[str, str]:
            r = c.post(
                "/api/auth/token",
                data={"grant_type": "password", "username": email, "password": STRONG},
            )
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        admin, viewer = bearer(admin_email), bearer(viewer_email)
        assert c.get("/api/admin/users", headers=viewer).status_code == 403
        assert c.get("/api/admin/users", headers=admin).status_code == 200
        r = c.patch(f"/api/admin/users/{target}", json={"role": "editor"}, headers=admin)
        assert r.status_code == 200 and r.json()["user"]["role"] == "editor"
        # The role change bumped the token version: the target's old token is dead.
        assert c.get("/api/auth/session", headers=viewer).status_code == 401
