"""The server-rendered pages over plain HTTP (SPEC §12, §2): redirects, CSRF on every
form, 303 after a POST, no asset or inline code from anywhere but Bastion. The browser
suite (tests/browser) drives the same pages in chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest

from tests.conftest import ServerFactory
from tests.support import STRONG, TLS, Server, csrf, register, unique_email

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
PAGES = [
    "/login",
    "/register",
    "/forgot-password",
    "/reset-password?token=t",
    "/verify-email?token=t",
]


def form_token(client: httpx.Client, path: str = "/login") -> str:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    found = TOKEN.findall(answer.text)
    assert found, answer.text
    return str(found[-1])  # the page's own form (the header's sign-out form comes first)


@pytest.fixture
def member(server: Server) -> Iterator[tuple[httpx.Client, str]]:
    """A browser-like client signed in to a new account."""
    with server.client() as client:
        email = unique_email("pages")
        assert register(client, email).status_code == 201
        yield client, email


@pytest.mark.parametrize("path", ["/account", "/admin"])
def test_unauthenticated_visit_redirects_to_login_with_callback(server: Server, path: str) -> None:
    with server.client() as client:
        answer = client.get(path + "?x=1")
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["callbackUrl"] == [path + "?x=1"]


@pytest.mark.parametrize("path", ["/login", "/register"])
def test_signed_in_visit_to_login_or_register_redirects_to_account(
    member: tuple[httpx.Client, str], path: str
) -> None:
    client, _ = member
    answer = client.get(path)
    assert answer.status_code == 302
    assert answer.headers["location"] == "/account"


def test_login_form_signs_in_with_303_to_the_callback(server: Server) -> None:
    with server.client() as client:
        email = unique_email()
        assert register(client, email).status_code == 201
        client.cookies.clear()
        token = form_token(client)
        answer = client.post(
            "/login",
            data={"csrf_token": token, "email": email, "password": STRONG, "callbackUrl": "/x?y=1"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/x?y=1"
        assert client.cookies.get("bastion_session")
        assert client.get("/api/auth/session").status_code == 200


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"]
)
def test_login_form_never_redirects_off_site(server: Server, target: str) -> None:
    with server.client() as client:
        email = unique_email()
        assert register(client, email).status_code == 201
        client.cookies.clear()
        answer = client.post(
            "/login",
            data={
                "csrf_token": form_token(client),
                "email": email,
                "password": STRONG,
                "callbackUrl": target,
            },
        )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"


@pytest.mark.parametrize("path", ["/login", "/register", "/forgot-password"])
def test_public_forms_refuse_missing_or_foreign_csrf_token(server: Server, path: str) -> None:
    data = {"email": unique_email(), "password": STRONG}
    with server.client() as client, server.client() as other:
        form_token(client, path)
        assert client.post(path, data=data).status_code == 403
        stolen = form_token(other, path)  # valid, but for another browser's cookie
        assert client.post(path, data={**data, "csrf_token": stolen}).status_code == 403
        assert client.post(path, data={**data, "csrf_token": "x" * 43}).status_code == 403


@pytest.mark.parametrize("path", ["/login", "/register", "/forgot-password"])
def test_public_forms_refuse_cross_site_origin(server: Server, path: str) -> None:
    with server.client() as client:
        token = form_token(client, path)
        answer = client.post(
            path,
            data={"csrf_token": token, "email": unique_email(), "password": STRONG},
            headers={"Origin": "https://evil.example"},
        )
    assert answer.status_code == 403


def test_wrong_password_rerenders_form_with_401_and_described_error(server: Server) -> None:
    with server.client() as client:
        email = unique_email()
        assert register(client, email).status_code == 201
        client.cookies.clear()
        answer = client.post(
            "/login",
            data={"csrf_token": form_token(client), "email": email, "password": "Wrong-pass-1!"},
        )
    assert answer.status_code == 401
    assert 'aria-describedby="f-password-error"' in answer.text
    assert 'id="f-password-error"' in answer.text
    assert "Wrong-pass-1!" not in answer.text  # a password is never echoed back


def test_register_form_weak_password_is_422_with_rules(server: Server) -> None:
    with server.client() as client:
        answer = client.post(
            "/register",
            data={
                "csrf_token": form_token(client, "/register"),
                "email": unique_email(),
                "password": "abc",
            },
        )
    assert answer.status_code == 422
    assert answer.text.count('class="unmet"') >= 3


def test_signed_in_forms_require_the_session_csrf_token(member: tuple[httpx.Client, str]) -> None:
    client, _ = member
    pre_session = form_token(client, "/forgot-password")  # a public-form token
    for path in ("/account/profile", "/account/password", "/logout"):
        assert client.post(path, data={"name": "x"}).status_code == 403
        answer = client.post(path, data={"name": "x", "csrf_token": pre_session})
        assert answer.status_code == 403
    answer = client.post(
        "/account/profile", data={"name": "Renamed", "csrf_token": csrf(client)["X-CSRF-Token"]}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/account?done=profile"
    assert client.get("/api/auth/session").json()["user"]["name"] == "Renamed"
    answer = client.post("/logout", data={"csrf_token": csrf(client)["X-CSRF-Token"]})
    assert answer.status_code == 303
    assert client.get("/api/auth/session").status_code == 401


def test_admin_page_is_403_without_manage_users(member: tuple[httpx.Client, str]) -> None:
    client, _ = member
    answer = client.get("/admin")
    assert answer.status_code == 403
    assert "text/html" in answer.headers["content-type"]
    token = csrf(client)["X-CSRF-Token"]
    me = client.get("/api/auth/session").json()["user"]["id"]
    answer = client.post(f"/admin/users/{me}/role", data={"role": "admin", "csrf_token": token})
    assert answer.status_code == 403
    assert client.get("/api/auth/session").json()["user"]["role"] == "viewer"


def test_mfa_step_token_travels_in_a_cookie_scoped_to_mfa(member: tuple[httpx.Client, str]) -> None:
    client, email = member
    setup = client.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(client))
    secret = setup.json()["secret"]
    enabled = client.post(
        "/api/auth/mfa/enable", json={"code": pyotp.TOTP(secret).now()}, headers=csrf(client)
    )
    assert enabled.status_code == 200
    client.cookies.clear()
    answer = client.post(
        "/login",
        data={
            "csrf_token": form_token(client),
            "email": email,
            "password": STRONG,
            "callbackUrl": "/after",
        },
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/mfa?callbackUrl=%2Fafter"
    cookie = answer.headers["set-cookie"]
    assert "bastion_mfa=" in cookie and "Path=/mfa" in cookie and "HttpOnly" in cookie
    assert "bastion_session" not in cookie


def test_social_login_mfa_redirect_moves_the_token_out_of_the_url(server: Server) -> None:
    with server.client() as client:
        answer = client.get("/mfa?mfa_token=abc123&callbackUrl=/p")
    assert answer.status_code == 302
    assert answer.headers["location"] == "/mfa?callbackUrl=%2Fp"
    assert "bastion_mfa=abc123" in answer.headers["set-cookie"]


def test_reset_and_verify_links_are_not_used_by_opening_them(server: Server) -> None:
    with server.client() as client:
        for path in ("/reset-password?token=abc", "/verify-email?token=abc"):
            answer = client.get(path)
            assert answer.status_code == 200
            assert 'name="token" value="abc"' in answer.text
        assert client.get("/reset-password").status_code == 400


@pytest.mark.parametrize("path", PAGES)
def test_pages_load_nothing_from_elsewhere_and_no_inline_code(server: Server, path: str) -> None:
    with server.client() as client:
        answer = client.get(path)
    html = answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    for url in re.findall(r'(?:src|href|action)="([^"]*)"', html):
        assert url.startswith(("/", "#", "data:")), url
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert "<style" not in html and " style=" not in html, "inline style"


def test_static_assets_are_served_by_bastion(server: Server) -> None:
    with server.client() as client:
        types = {
            "/static/bastion.css": "text/css",
            "/static/bastion.js": "text/javascript",
            "/static/icon.svg": "image/svg+xml",
        }
        for path, kind in types.items():
            answer = client.get(path)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        for path in ("/static/nope.css", "/static/..%2F..%2Fsettings.py", "/static/x.py"):
            assert client.get(path).status_code == 404
        css = client.get("/static/bastion.css").text
        assert "prefers-color-scheme: dark" in css and ":focus-visible" in css
        assert "@import" not in css and "url(http" not in css


def test_login_page_offers_configured_social_providers(make_server: ServerFactory) -> None:
    providers = {
        "github": {"client_id": "id", "client_secret": "secret"},
        "acme": {
            "issuer": "https://id.acme.example",
            "client_id": "id",
            "client_secret": "secret",
            "display_name": "Acme SSO",
        },
    }
    srv = make_server(env={"BASTION_OAUTH_PROVIDERS": json.dumps(providers)})
    with srv.client() as client:
        html = client.get("/login?callbackUrl=/after").text
    assert 'href="/api/auth/oauth/github/authorize?callbackUrl=%2Fafter"' in html
    assert "Continue with GitHub" in html
    assert 'href="/api/auth/oauth/acme/authorize?callbackUrl=%2Fafter"' in html
    assert "Continue with Acme SSO" in html


def test_admin_forms_require_the_session_csrf_token(server: Server) -> None:
    admin = unique_email("pages-admin")
    made = server.cli(
        "create-user", "--email", admin, "--role", "admin", "--password-stdin", stdin=STRONG
    )
    assert made.returncode == 0, made.stderr
    with server.client() as member, server.client() as client:
        member_email = unique_email("member")
        member_id = register(member, member_email).json()["user"]["id"]
        assert client.post("/api/auth/login", json={"email": admin, "password": STRONG}).is_success
        page = client.get("/admin", params={"q": member_email})
        assert page.status_code == 200 and member_email in page.text
        path = f"/admin/users/{member_id}/role"
        assert client.post(path, data={"role": "editor"}).status_code == 403
        answer = client.post(
            path, data={"role": "editor", "q": member_email, **_field(csrf(client))}
        )
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/admin?")
        assert member.get("/api/auth/session").json()["user"]["role"] == "editor"
        answer = client.post(path, data={"role": "no-such-role", **_field(csrf(client))})
        assert answer.status_code == 422
        assert "Unknown role" in answer.text


def _field(header: dict[str, str]) -> dict[str, str]:
    return {"csrf_token": header["X-CSRF-Token"]}


def test_account_mfa_forms_new_backup_codes_and_turn_off(
    member: tuple[httpx.Client, str],
) -> None:
    client, _ = member
    secret = client.post(
        "/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(client)
    ).json()["secret"]
    totp = pyotp.TOTP(secret)
    assert client.post(
        "/api/auth/mfa/enable", json={"code": totp.now()}, headers=csrf(client)
    ).is_success
    token = _field(csrf(client))

    answer = client.post("/account/mfa/backup-codes", data={"codes_password": "Wrong-1!x", **token})
    assert answer.status_code == 401
    assert re.search(r'aria-describedby="[^"]*\bf-codes_password-error"', answer.text)
    answer = client.post("/account/mfa/backup-codes", data={"codes_password": STRONG, **token})
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    codes = re.findall(r"<li>([a-z0-9]{4}-[a-z0-9]{4})</li>", answer.text)
    assert len(codes) == 10

    answer = client.post(
        "/account/mfa/disable",
        data={"disable_password": STRONG, "disable_code": "000000", **token},
    )
    assert answer.status_code == 401
    assert 'id="f-disable_code-error"' in answer.text
    answer = client.post(
        "/account/mfa/disable",
        data={"disable_password": STRONG, "disable_code": codes[0], **token},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/account?done=mfa_disabled"
    assert client.get("/api/auth/session").json()["user"]["mfa_enabled"] is False


def test_account_password_change_form(member: tuple[httpx.Client, str]) -> None:
    client, email = member
    token = _field(csrf(client))
    new = "Brand-New-Pass-5%"
    answer = client.post(
        "/account/password",
        data={"current_password": STRONG, "new_password": new, "confirm_password": "x", **token},
    )
    assert answer.status_code == 422 and 'id="f-confirm_password-error"' in answer.text
    answer = client.post(
        "/account/password",
        data={
            "current_password": "Nope-nope-1!",
            "new_password": new,
            "confirm_password": new,
            **token,
        },
    )
    assert answer.status_code == 401 and 'id="f-current_password-error"' in answer.text
    answer = client.post(
        "/account/password",
        data={"current_password": STRONG, "new_password": new, "confirm_password": new, **token},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/account?done=password"
    with httpx.Client(base_url=str(client.base_url), verify=TLS) as other:
        assert other.post("/api/auth/login", json={"email": email, "password": new}).is_success
