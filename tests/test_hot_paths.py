"""The hot paths of issue 10 (docs/performance.md) keep SPEC behaviour: the session
check answered from the ASGI layer equals the router's answer, sees revocation at once,
and the direct session reader returns the engine's rows, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.support import Server, csrf, register, run_async

VOLATILE = {"date"}


def test_session_fast_path_answers_exactly_like_the_router(server: Server) -> None:
    with server.client() as c:
        assert register(c).status_code == 201
        fast = c.get("/api/auth/session")
        slow = c.get("/api/auth/session?via=router")  # a query string takes the router
    assert fast.status_code == slow.status_code == 200
    assert fast.json() == slow.json()
    fast_headers = {k: v for k, v in fast.headers.items() if k not in VOLATILE}
    slow_headers = {k: v for k, v in slow.headers.items() if k not in VOLATILE}
    assert fast_headers == slow_headers
    assert fast.headers["cache-control"] == "no-store"
    assert fast.headers["x-content-type-options"] == "nosniff"


def test_session_fast_path_refuses_unknown_and_revoked_sessions_immediately(
    server: Server,
) -> None:
    with server.client() as c:
        assert register(c).status_code == 201
        assert c.get("/api/auth/session").status_code == 200
        assert c.post("/api/auth/logout", headers=csrf(c)).status_code == 204
    with server.client() as c:
        c.cookies.set("bastion_session", "not-a-session")
        r = c.get("/api/auth/session")
        assert r.status_code == 401
        assert r.json()["error"] == "unauthenticated"
        assert r.headers["x-content-type-options"] == "nosniff"


def test_direct_session_reader_returns_the_engines_row(server: Server) -> None:
    from bastion.core.secrets import token_hash
    from bastion.store import sessions as session_store
    from bastion.store.db import Database
    from bastion.store.direct import close_direct

    with server.client() as c:
        assert register(c).status_code == 201
        token = c.cookies.get("bastion_session") or ""

    async def rows() -> tuple[dict[str, object], dict[str, object], object]:
        db = Database(server.database_url)
        try:
            async with db.read() as conn:
                engine_row = await session_store.lookup(conn, token_hash(token))
            direct = await session_store.lookup_direct(db, token_hash(token))
            missing = await session_store.lookup_direct(db, token_hash("nope"))
            assert engine_row is not None and direct is not None
            return dict(engine_row), dict(direct), missing
        finally:
            await close_direct(db)
            await db.dispose()

    engine_row, direct, missing = run_async(rows())
    assert direct == engine_row
    assert {k: type(v) for k, v in direct.items()} == {k: type(v) for k, v in engine_row.items()}
    assert missing is None


def test_session_fast_path_reads_the_caller_as_the_router_does(server: Server) -> None:
    """The fast path reads the Authorization and Cookie headers from the raw scope: for
    every shape of them it must find the same caller as the router (a bearer token
    wins over the cookie, the first of repeated headers counts, other cookies around)."""
    from tests.support import STRONG, unique_email

    email = unique_email("shapes")
    with server.client() as c:
        assert register(c, email).status_code == 201
        session = c.cookies.get("bastion_session") or ""
        grant = c.post(
            "/api/auth/token",
            data={"grant_type": "password", "username": email, "password": STRONG},
        )
        assert grant.status_code == 200, grant.text
        access = grant.json()["access_token"]
    shapes: list[list[tuple[str, str]]] = [
        [("Cookie", f"bastion_session={session}")],
        [("Cookie", f'theme=dark; bastion_session={session}; lang="en"')],
        [("Cookie", f"bastion_session={session}"), ("Cookie", "bastion_session=stale")],
        [("Cookie", "bastion_session=stale"), ("Cookie", f"bastion_session={session}")],
        [("Authorization", f"Bearer {access}")],
        [("Authorization", f"bearer   {access}")],
        [("Authorization", "Bearer not-a-token"), ("Cookie", f"bastion_session={session}")],
        [("Authorization", f"Basic {access}"), ("Cookie", f"bastion_session={session}")],
        [("Authorization", f"Bearer {access}"), ("Authorization", "Bearer not-a-token")],
        [("Cookie", "bastion_session=")],
        [],
    ]
    with server.client() as c:
        for headers in shapes:
            fast = c.get("/api/auth/session", headers=headers)
            slow = c.get("/api/auth/session?via=router", headers=headers)
            assert (fast.status_code, fast.json()) == (slow.status_code, slow.json()), headers
            assert fast.headers["x-content-type-options"] == "nosniff"
    with server.client() as c:  # the shapes cover both answers
        assert c.get("/api/auth/session", headers=shapes[0]).status_code == 200
        assert c.get("/api/auth/session", headers=shapes[4]).status_code == 200
        assert c.get("/api/auth/session", headers=shapes[6]).status_code == 401


def test_session_answers_follow_every_change_of_the_row(server: Server) -> None:
    """The fast path builds a caller's body once per row (web/deps.py session_answer):
    repeated checks give the router's answer byte for byte, and a change to the user
    (a new role from the admin API) shows in the very next answer, on both the cookie
    and the bearer token."""
    from contextlib import closing

    from tests.admin_helpers import admin_client, create_user, signed_in
    from tests.support import STRONG

    user_id, email = create_user(server, "viewer")
    admin, _ = admin_client(server)
    with closing(admin), closing(signed_in(server, email)) as c:
        for role in ("viewer", "editor", "admin"):
            if role != "viewer":
                r = admin.patch(f"/api/admin/users/{user_id}", json={"role": role})
                assert r.status_code == 200, r.text
            # A role change ends the access tokens already issued (token version): the
            # bearer side gets a new one each time.
            grant = c.post(
                "/api/auth/token",
                data={"grant_type": "password", "username": email, "password": STRONG},
            )
            assert grant.status_code == 200, grant.text
            bearer = {"Authorization": f"Bearer {grant.json()['access_token']}"}
            for headers in ({}, bearer):
                answers = [c.get("/api/auth/session", headers=headers) for _ in range(3)]
                router = c.get("/api/auth/session?via=router", headers=headers)
                assert router.status_code == 200 and router.json()["user"]["role"] == role
                for fast in answers:
                    assert fast.status_code == 200
                    assert fast.content == router.content, (role, headers)
                    assert {k: v for k, v in fast.headers.items() if k not in VOLATILE} == {
                        k: v for k, v in router.headers.items() if k not in VOLATILE
                    }
        assert c.post("/api/auth/logout").status_code == 204
        assert c.get("/api/auth/session").status_code == 401
