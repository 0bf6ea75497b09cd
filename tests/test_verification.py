"""SPEC §3 email verification and resend over HTTP and SMTP, and
BASTION_REQUIRE_VERIFIED_EMAIL, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.mailsink import MailSink, link_token, mail_server
from tests.support import STRONG, Server, csrf, login, register, unique_email


@pytest.fixture(scope="module")
def mailed(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, MailSink]]:
    with mail_server(backend, tmp_path_factory.mktemp(f"verify-{backend}")) as pair:
        yield pair


def verify(c: httpx.Client, token: str) -> httpx.Response:
    return c.post("/api/auth/email/verify", json={"token": token})


def resend(c: httpx.Client) -> httpx.Response:
    return c.post("/api/auth/email/resend", headers=csrf(c))


def verification_token(sink: MailSink, email: str, nth: int = 1) -> str:
    msg = sink.wait_for(email, "email_verification", count=nth)[nth - 1]
    return link_token(msg, "/verify-email")


def test_registration_mails_a_verification_link_that_works_once(
    mailed: tuple[Server, MailSink],
) -> None:
    srv, sink = mailed
    email = unique_email("ver")
    with srv.client() as c:
        assert register(c, email).status_code == 201
        token = verification_token(sink, email)
        assert c.get("/api/auth/session").json()["user"]["email_verified"] is False
    with srv.client() as other:  # the link works without a session (another device)
        r = verify(other, token)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        user = r.json()["user"]
        assert user["email"] == email and user["email_verified"] is True
        again = verify(other, token)
        assert again.status_code == 400 and again.json()["error"] == "invalid_token"
    with srv.client() as c:
        assert login(c, email).json()["user"]["email_verified"] is True


def test_resend_voids_older_verification_link(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = unique_email("ver")
    with srv.client() as c:
        assert register(c, email).status_code == 201
        first = verification_token(sink, email)
        r = resend(c)
        assert r.status_code == 202, r.text
        second = verification_token(sink, email, nth=2)
        assert first != second
        assert verify(c, first).json()["error"] == "invalid_token"
        assert verify(c, second).status_code == 200


def test_resend_409_when_already_verified(mailed: tuple[Server, MailSink]) -> None:
    srv, sink = mailed
    email = unique_email("ver")
    with srv.client() as c:
        assert register(c, email).status_code == 201
        assert verify(c, verification_token(sink, email)).status_code == 200
        r = resend(c)
        assert r.status_code == 409 and r.json()["error"] == "already_verified"
    assert len(sink.to(email, "email_verification")) == 1


def test_resend_needs_sign_in_and_csrf(mailed: tuple[Server, MailSink]) -> None:
    srv, _ = mailed
    with srv.client() as c:
        assert c.post("/api/auth/email/resend").status_code == 401
        assert register(c, unique_email("ver")).status_code == 201
        r = c.post("/api/auth/email/resend")
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
        assert resend(c).status_code == 202


@pytest.mark.parametrize("token", ["nope", "B" * 43])
def test_verify_unknown_token_is_400(mailed: tuple[Server, MailSink], token: str) -> None:
    srv, _ = mailed
    with srv.client() as c:
        r = verify(c, token)
        assert r.status_code == 400 and r.json()["error"] == "invalid_token"


def test_reset_link_cannot_verify_email(mailed: tuple[Server, MailSink]) -> None:
    """Tokens are bound to their purpose: a reset token is not a verification token."""
    srv, sink = mailed
    email = unique_email("ver")
    with srv.client() as c:
        assert register(c, email).status_code == 201
        assert c.post("/api/auth/password/forgot", json={"email": email}).status_code == 202
    reset_token = link_token(sink.wait_for(email, "password_reset")[0], "/reset-password")
    with srv.client() as c:
        assert verify(c, reset_token).status_code == 400


def test_resend_rate_limited_per_user(backend: str, tmp_path: Path) -> None:
    env = {"BASTION_RATE_LIMITS": '{"*": [100000, 60], "resend:user": [2, 60]}'}
    with mail_server(backend, tmp_path, env) as (srv, _):
        with srv.client() as c:
            assert register(c, unique_email("ver")).status_code == 201
            assert [resend(c).status_code for _ in range(3)] == [202, 202, 429]


def test_require_verified_email_refuses_password_login_until_verified(
    backend: str, tmp_path: Path
) -> None:
    env = {"BASTION_REQUIRE_VERIFIED_EMAIL": "true"}
    with mail_server(backend, tmp_path, env) as (srv, sink):
        email = unique_email("ver")
        with srv.client() as c:
            assert register(c, email).status_code == 201
        with srv.client() as c:
            wrong = login(c, email, "Wrong-Horse-1!")
            assert wrong.status_code == 401  # a wrong password says nothing more
            r = login(c, email)
            assert r.status_code == 403 and r.json()["error"] == "email_not_verified"
            assert "bastion_session" not in c.cookies
            assert verify(c, verification_token(sink, email)).status_code == 200
            assert login(c, email, STRONG).status_code == 200
