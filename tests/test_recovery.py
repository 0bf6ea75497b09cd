"""SPEC §5 password reset over HTTP and SMTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.mailsink import MailSink, link_token, mail_server, text_part
from tests.support import STRONG, Server, login, register, unique_email

NEW = "Another-Horse-7?"


@pytest.fixture(scope="module")
def mailed(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, MailSink]]:
    with mail_server(backend, tmp_path_factory.mktemp(f"recovery-{backend}")) as pair:
        yield pair


def forgot(c: httpx.Client, email: str, **kw: object) -> httpx.Response:
    return c.post("/api/auth/password/forgot", json={"email": email}, **kw)  # type: ignore[arg-type]


def reset(c: httpx.Client, token: str, password: str = NEW) -> httpx.Response:
    return c.post("/api/auth/password/reset", json={"token": token, "password": password})


def new_user(srv: Server) -> str:
    email = unique_email("rec")
    with srv.client() as c:
        assert register(c, email).status_code == 201
    return email


def reset_token(srv: Server, sink: MailSink, email: str, nth: int = 1) -> str:
    with srv.client() as c:
        r = forgot(c, email)
        assert r.status_code == 202, r.text
    msg = sink.wait_for(email, "password_reset", count=nth)[nth - 1]
    return link_token(msg, "/reset-password")


def test_reset_link_arrives_and_works_once(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = new_user(srv)
    token = reset_token(srv, sink, email)
    msg = sink.to(email, "password_reset")[0]
    assert f"{srv.url}/reset-password?token={token}" in text_part(msg)
    with srv.client() as c:
        r = reset(c, token)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok"}
        assert r.headers["cache-control"] == "no-store"
        assert login(c, email, STRONG).status_code == 401
        assert login(c, email, NEW).status_code == 200
        again = reset(c, token, "Third-Horse-5%")
        assert again.status_code == 400 and again.json()["error"] == "invalid_token"
    changed = sink.wait_for(email, "password_changed")
    assert len(changed) == 1


def test_reset_token_single_use_under_20_parallel_requests(
    mailed: tuple[Server, MailSink],
) -> None:
    srv, sink = mailed
    email = new_user(srv)
    token = reset_token(srv, sink, email)

    def attempt(i: int) -> int:
        with srv.client() as c:
            return reset(c, token, f"Parallel-Horse-{i}!").status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(attempt, range(20)))
    assert sorted(codes) == [200] + [400] * 19, codes


def test_weak_password_does_not_consume_reset_token(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = new_user(srv)
    token = reset_token(srv, sink, email)
    with srv.client() as c:
        weak = reset(c, token, "password")
        assert weak.status_code == 422
        assert weak.json()["error"] == "weak_password" and weak.json()["details"]
        assert reset(c, token).status_code == 200


def test_new_forgot_request_voids_older_reset_links(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = new_user(srv)
    first = reset_token(srv, sink, email, nth=1)
    second = reset_token(srv, sink, email, nth=2)
    assert first != second
    with srv.client() as c:
        assert reset(c, first).json()["error"] == "invalid_token"
        assert reset(c, second).status_code == 200


def test_reset_ends_every_session(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = new_user(srv)
    clients = [srv.client() for _ in range(2)]
    try:
        for c in clients:
            assert login(c, email).status_code == 200
            assert c.get("/api/auth/session").status_code == 200
        token = reset_token(srv, sink, email)
        with srv.client() as c:
            assert reset(c, token).status_code == 200
        for c in clients:
            assert c.get("/api/auth/session").status_code == 401
    finally:
        for c in clients:
            c.close()


def test_reset_revokes_refresh_tokens(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = new_user(srv)
    with srv.client() as c:
        grant = c.post(
            "/api/auth/token",
            data={"grant_type": "password", "username": email, "password": STRONG},
        )
    if grant.status_code == 404:
        pytest.skip("token endpoint (SPEC §8) not in this build")
    assert grant.status_code == 200, grant.text
    refresh = grant.json()["refresh_token"]
    token = reset_token(srv, sink, email)
    with srv.client() as c:
        assert reset(c, token).status_code == 200
        r = c.post(
            "/api/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_reset_clears_lockout(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = new_user(srv)
    with srv.client() as c:
        for _ in range(5):
            assert login(c, email, "Wrong-Horse-1!").status_code == 401
        assert login(c, email, STRONG).status_code == 423
    token = reset_token(srv, sink, email)
    with srv.client() as c:
        assert reset(c, token).status_code == 200
        assert login(c, email, NEW).status_code == 200


def test_forgot_password_same_answer_for_unknown_email(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    known = new_user(srv)

    def answer(email: str) -> tuple[int, list[tuple[str, str]], bytes, float]:
        with srv.client() as c:
            start = time.perf_counter()
            r = forgot(c, email)
            took = time.perf_counter() - start
        headers = [(k, v) for k, v in r.headers.multi_items() if k.lower() != "date"]
        return r.status_code, headers, r.content, took

    k = answer(known)
    u = answer(unique_email("nobody"))
    assert k[:3] == u[:3]
    assert k[0] == 202 and k[2] == b'{"status":"ok"}'
    # About the same time: compare medians of a few more rounds, generously (shared CPU).
    known_times = [answer(known)[3] for _ in range(4)]
    unknown_times = [answer(unique_email("nobody"))[3] for _ in range(4)]
    assert abs(statistics.median(known_times) - statistics.median(unknown_times)) < 0.15
    assert sink.wait_for(known, "password_reset", count=5)


def test_forgot_refuses_cross_site_origin(mailed: tuple[Server, MailSink]) -> None:
    srv, _ = mailed
    with srv.client() as c:
        r = forgot(c, unique_email(), headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert forgot(c, unique_email(), headers={"Origin": srv.url}).status_code == 202


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "x" * 300 + "@example.com"])
def test_forgot_invalid_email_is_422(mailed: tuple[Server, MailSink], email: str) -> None:
    srv, _ = mailed
    with srv.client() as c:
        r = forgot(c, email)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("token", ["nope", "A" * 43, "x" * 512])
def test_reset_with_unknown_token_is_400(mailed: tuple[Server, MailSink], token: str) -> None:
    srv, _ = mailed
    with srv.client() as c:
        r = reset(c, token)
        assert r.status_code == 400 and r.json()["error"] == "invalid_token"


def test_reset_and_forgot_are_audited(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    admin_email = unique_email("admin")
    out = srv.cli(
        "create-user",
        "--email",
        admin_email,
        "--role",
        "admin",
        "--password-stdin",
        stdin=STRONG + "\n",
    )
    assert out.returncode == 0, out.stderr
    email = new_user(srv)
    token = reset_token(srv, sink, email)
    with srv.client() as c:
        user_id = login(c, email).json()["user"]["id"]
        assert reset(c, token).status_code == 200
    with srv.client() as admin:
        assert login(admin, admin_email).status_code == 200
        for action in ("password_reset_requested", "password_reset"):
            r = admin.get("/api/admin/audit-log", params={"action": action, "user_id": user_id})
            assert r.status_code == 200, r.text
            assert len(r.json()["events"]) == 1, r.json()


def test_expired_reset_token_fails(backend: str, tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with mail_server(backend, tmp_path, {"BASTION_RESET_TOKEN_TTL": "1"}) as (srv, sink):
        email = new_user(srv)
        token = reset_token(srv, sink, email)
        time.sleep(2.1)
        with srv.client() as c:
            r = reset(c, token)
            assert r.status_code == 400 and r.json()["error"] == "invalid_token"
            assert login(c, email, STRONG).status_code == 200


def test_forgot_and_reset_are_rate_limited(make_server: ServerFactory) -> None:
    srv = make_server(
        env={
            "BASTION_RATE_LIMITS": '{"*": [100000, 60], "forgot:email": [2, 60], '
            '"reset:ip": [3, 60]}'
        }
    )
    email = unique_email()
    with srv.client() as c:
        assert [forgot(c, email).status_code for _ in range(2)] == [202, 202]
        r = forgot(c, email.upper())
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        assert forgot(c, unique_email()).status_code == 202  # another target is fine
        codes = [reset(c, "bogus-token").status_code for _ in range(4)]
        assert codes == [400, 400, 400, 429]
