"""Social login (SPEC §9) against a real OpenID provider (panva/oidc-provider, started
by the suite with Bastion registered through dynamic client registration) and a local
server speaking GitHub's documented OAuth and REST endpoints. No mocks: every test
walks the browser round trip authorize → provider sign-in/consent → callback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from tests.oauth_harness import Browser, GitHub, github_emulator, oidc_provider, register_client
from tests.support import STRONG, Server, database, db_query, free_port, login, unique_email


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with oidc_provider(tmp_path_factory.mktemp("oidc")) as url:
        yield url


@pytest.fixture(scope="session")
def github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHub]:
    with github_emulator(tmp_path_factory.mktemp("github")) as gh:
        yield gh


@pytest.fixture(scope="module")
def srv(
    backend: str, issuer: str, github: GitHub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Bastion with three providers: ``local`` (generic OpenID Connect), ``corp`` (the
    same provider, limited to corp.example) and ``github`` (GitHub Enterprise layout)."""
    tmp = tmp_path_factory.mktemp(f"oauth-{backend}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    providers: dict[str, dict[str, object]] = {}
    for name, extra in (("local", {}), ("corp", {"allowed_domains": ["corp.example"]})):
        client_id, secret = register_client(issuer, f"{base}/api/auth/oauth/{name}/callback")
        providers[name] = {"issuer": issuer, "client_id": client_id, "client_secret": secret}
        providers[name].update(extra)
    providers["github"] = {
        "client_id": github.client_id,
        "client_secret": github.client_secret,
        "base_url": github.base_url,
        "api_url": github.api_url,
    }
    env = {"BASTION_OAUTH_PROVIDERS": json.dumps(providers)}
    with database(backend, tmp) as url:
        server = Server(url, tmp, env=env, port=port).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def browser(srv: Server) -> Iterator[Browser]:
    b = Browser(srv.url)
    try:
        yield b
    finally:
        b.close()


def assert_refused(response: httpx.Response, status: int, browser: Browser, text: str) -> None:
    """An HTML error page with a 4xx status, and nobody signed in."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert "Sign-in failed" in response.text and text in response.text
    assert "bastion_session" not in response.headers.get("set-cookie", "")
    assert browser.session().status_code == 401


def create_verified_user(srv: Server, email: str) -> str:
    done = srv.cli("create-user", "--email", email, "--password-stdin", stdin=STRONG + "\n")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def audit_actions(srv: Server, user_id: str) -> list[str]:
    rows = db_query(
        srv.database_url, "SELECT action FROM audit_events WHERE user_id = $1 ORDER BY id", user_id
    )
    return [r[0] for r in rows]


# Authorization request -----------------------------------------------------------------


def test_authorize_sends_state_pkce_s256_nonce_and_binds_them_in_a_cookie(
    srv: Server, browser: Browser, issuer: str
) -> None:
    response = browser.authorize("local", "/dashboard")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(issuer + "/auth?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert q["response_type"] == "code"
    assert q["redirect_uri"] == f"{srv.url}/api/auth/oauth/local/callback"
    assert q["scope"] == "openid email profile"
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert len(q["state"]) >= 32 and len(q["nonce"]) >= 32
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("bastion_oauth=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/api/auth/oauth" in cookie and "Max-Age=600" in cookie
    # Nothing secret leaks into the URL the browser carries to the provider.
    assert "code_verifier" not in location


def test_github_authorize_uses_only_its_scopes_and_no_nonce(
    srv: Server, browser: Browser, github: GitHub
) -> None:
    response = browser.authorize("github")
    location = response.headers["location"]
    assert location.startswith(github.base_url + "/login/oauth/authorize?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert q["scope"] == "read:user user:email"
    assert q["code_challenge_method"] == "S256" and "nonce" not in q
    assert q["redirect_uri"] == f"{srv.url}/api/auth/oauth/github/callback"


def test_unknown_provider_is_a_404_page(srv: Server, browser: Browser) -> None:
    response = browser.authorize("nope")
    assert_refused(response, 404, browser, "not configured")


# Sign-in rules ---------------------------------------------------------------------------


def test_first_sign_in_creates_verified_viewer_without_password(
    srv: Server, browser: Browser
) -> None:
    email = unique_email("new")
    response = browser.sign_in(email=email.upper(), name="Ada Social")
    assert response.status_code == 302 and response.headers["location"] == "/p"
    assert "bastion_session=" in response.headers["set-cookie"]
    assert 'bastion_oauth=""' in response.headers["set-cookie"]  # state cookie cleared
    user = browser.session().json()["user"]
    assert user["email"] == email and user["email_verified"] is True
    assert user["role"] == "viewer" and user["name"] == "Ada Social"
    linked = browser.http.get(srv.url + "/api/auth/oauth/accounts").json()["accounts"]
    assert [(a["provider"], a["email"]) for a in linked] == [("local", email)]
    assert audit_actions(srv, user["id"])[:3] == ["registered", "oauth_linked", "login_succeeded"]
    with srv.client() as other:  # no password was set: password login is impossible
        assert login(other, email, STRONG).status_code == 401
    # Signing in again with the same provider account reuses the link.
    again = Browser(srv.url)
    sub = db_query(srv.database_url, "SELECT subject FROM oauth_accounts WHERE user_id = $1",
                   user["id"])[0][0]  # fmt: skip
    assert again.sign_in(email=email, sub=sub).status_code == 302
    assert again.session().json()["user"]["id"] == user["id"]
    again.close()


def test_existing_verified_account_is_linked_and_audited(srv: Server, browser: Browser) -> None:
    email = unique_email("link")
    user_id = create_verified_user(srv, email)
    response = browser.sign_in(email=email)
    assert response.status_code == 302
    assert browser.session().json()["user"]["id"] == user_id
    assert "oauth_linked" in audit_actions(srv, user_id)
    with srv.client() as other:  # a verified local account keeps its password
        assert login(other, email).status_code == 200


def test_linking_pre_registered_unverified_account_removes_attacker_password(
    srv: Server, browser: Browser
) -> None:
    email = unique_email("prehijack")
    attacker = srv.client()
    assert (
        attacker.post("/api/auth/register", json={"email": email, "password": STRONG}).status_code
        == 201
    )
    user_id = attacker.get("/api/auth/session").json()["user"]["id"]
    response = browser.sign_in(email=email)
    assert response.status_code == 302
    me = browser.session().json()["user"]
    assert me["id"] == user_id and me["email_verified"] is True
    assert attacker.get("/api/auth/session").status_code == 401  # their session is gone
    assert login(attacker, email).status_code == 401  # and their password
    attacker.close()


def test_unverified_provider_email_never_links_existing_account(
    srv: Server, browser: Browser
) -> None:
    email = unique_email("unverified")
    user_id = create_verified_user(srv, email)
    response = browser.sign_in(email=email, verified=False)
    assert_refused(response, 403, browser, "has not verified the email address")
    assert "oauth_linked" not in audit_actions(srv, user_id)
    rows = db_query(srv.database_url, "SELECT id FROM oauth_accounts WHERE user_id = $1", user_id)
    assert rows == []


def test_unverified_provider_email_creates_no_account(srv: Server, browser: Browser) -> None:
    email = unique_email("unverified-new")
    response = browser.sign_in(email=email, verified=False)
    assert_refused(response, 403, browser, "has not verified")
    assert db_query(srv.database_url, "SELECT id FROM users WHERE email = $1", email) == []


def test_allowed_domains_refuses_other_domains(srv: Server, browser: Browser) -> None:
    response = browser.sign_in("corp", email=unique_email("outsider"))
    assert_refused(response, 403, browser, "limited to accounts of corp.example")
    inside = Browser(srv.url)
    email = f"staff-{unique_email()[5:17]}@corp.example"
    assert inside.sign_in("corp", email=email).status_code == 302
    assert inside.session().json()["user"]["email"] == email
    inside.close()


def test_mfa_user_gets_the_mfa_step_not_a_session(srv: Server, browser: Browser) -> None:
    import pyotp

    email = unique_email("mfa")
    create_verified_user(srv, email)
    with srv.client() as owner:
        assert login(owner, email).status_code == 200
        csrf = {"X-CSRF-Token": owner.cookies["bastion_csrf"]}
        setup = owner.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf).json()
        code = pyotp.TOTP(setup["secret"]).now()
        assert (
            owner.post("/api/auth/mfa/enable", json={"code": code}, headers=csrf).status_code == 200
        )
    response = browser.sign_in(email=email, callback="/after")
    assert response.status_code == 302
    assert response.headers["location"] == "/mfa?callbackUrl=%2Fafter"
    assert "bastion_session" not in response.headers["set-cookie"]
    assert "mfa_token" not in response.headers["location"]
    assert browser.session().status_code == 401
    # The step token sits in the /mfa cookie; finishing the step signs in.
    token = browser.http.cookies["bastion_mfa"]
    page = browser.http.get(srv.url + "/mfa?callbackUrl=/after")
    assert page.status_code == 200
    done = browser.http.post(
        srv.url + "/api/auth/mfa/verify",
        json={"mfa_token": token, "code": setup["backup_codes"][0]},
    )
    assert done.status_code == 200 and done.json()["user"]["email"] == email


def test_unsafe_callback_url_is_not_followed(srv: Server, browser: Browser) -> None:
    response = browser.sign_in(callback="//evil.example/x", email=unique_email("cb"))
    assert response.status_code == 302 and response.headers["location"] == "/"
    other = Browser(srv.url)
    response = other.sign_in(callback="https://evil.example/", email=unique_email("cb"))
    assert response.headers["location"] == "/"
    other.close()


# Broken or forged callbacks --------------------------------------------------------------


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q.update(changes)
    return urlunsplit(parts._replace(query=urlencode(q)))


def test_wrong_state_is_refused_and_signs_no_one_in(srv: Server, browser: Browser) -> None:
    start = browser.authorize("local")
    url = browser.provider_round(start.headers["location"], email=unique_email("state"))
    response = browser.http.get(with_query(url, state="forged-state"))
    assert_refused(response, 400, browser, "state mismatch")


def test_callback_in_another_browser_is_refused_login_csrf(srv: Server, browser: Browser) -> None:
    """An attacker's own callback URL planted in a victim's browser (no state cookie)."""
    start = browser.authorize("local")
    url = browser.provider_round(start.headers["location"], email=unique_email("csrf"))
    victim = Browser(srv.url)
    response = victim.http.get(url)
    assert_refused(response, 400, victim, "another browser")
    victim.close()


def test_replayed_callback_is_refused(srv: Server, browser: Browser) -> None:
    start = browser.authorize("local")
    state_cookie = browser.http.cookies["bastion_oauth"]
    url = browser.provider_round(start.headers["location"], email=unique_email("replay"))
    assert browser.http.get(url).status_code == 302  # first use signs in
    replay = Browser(srv.url)  # the same URL and cookie, captured and played again
    replay.http.cookies.set(
        "bastion_oauth", state_cookie, domain="127.0.0.1", path="/api/auth/oauth"
    )
    response = replay.http.get(url)
    assert_refused(response, 400, replay, "used already")
    replay.close()


def test_nonce_mismatch_is_refused(srv: Server, browser: Browser) -> None:
    start = browser.authorize("local")
    tampered = with_query(start.headers["location"], nonce="attacker-chosen-nonce-0123456789")
    url = browser.provider_round(tampered, email=unique_email("nonce"))
    response = browser.http.get(url)
    assert_refused(response, 400, browser, "identity token could not be verified")


def test_denied_consent_is_an_error_page(srv: Server, browser: Browser) -> None:
    response = browser.sign_in(email=unique_email("deny"), consent=False)
    assert_refused(response, 403, browser, "did not allow")


def test_garbage_code_missing_code_and_missing_iss_are_refused(
    srv: Server, browser: Browser, issuer: str
) -> None:
    start = browser.authorize("local")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    callback = f"{srv.url}/api/auth/oauth/local/callback"
    cases = [
        ({"state": state, "iss": issuer, "code": "x" * 40}, "refused by the provider"),
        ({"state": state, "iss": issuer}, "no sign-in code"),
        # The provider announces RFC 9207, so a response without iss is a mix-up risk.
        ({"state": state, "code": "x" * 40}, "another issuer"),
        ({"state": state, "iss": "http://127.0.0.1:1", "code": "x" * 40}, "another issuer"),
    ]
    for params, text in cases:
        browser.http.cookies.set(
            "bastion_oauth", start.cookies["bastion_oauth"], domain="127.0.0.1",
            path="/api/auth/oauth",
        )  # fmt: skip
        response = browser.http.get(callback, params=params)
        assert_refused(response, 400, browser, text)


# GitHub ------------------------------------------------------------------------------------


def test_github_signs_in_with_verified_primary_email(srv: Server, browser: Browser) -> None:
    email = unique_email("gh")
    emails = [
        {
            "email": unique_email("secondary"),
            "primary": False,
            "verified": True,
            "visibility": None,
        },
        {"email": email, "primary": True, "verified": True, "visibility": "private"},
    ]
    response = browser.sign_in(
        "github", callback="/gh", user_id=4242001, login="octo", emails=emails
    )
    assert response.status_code == 302 and response.headers["location"] == "/gh"
    user = browser.session().json()["user"]
    assert user["email"] == email and user["email_verified"] is True and user["role"] == "viewer"
    sql = "SELECT provider, subject FROM oauth_accounts WHERE user_id = $1"
    rows = db_query(srv.database_url, sql, user["id"])
    assert rows == [("github", "4242001")]


def test_github_unverified_primary_email_is_refused(srv: Server, browser: Browser) -> None:
    emails = [
        {"email": unique_email("verified-other"), "primary": False, "verified": True},
        {"email": unique_email("primary"), "primary": True, "verified": False},
    ]
    response = browser.sign_in("github", user_id=4242002, login="mallory", emails=emails)
    assert_refused(response, 403, browser, "has not verified")


def test_github_cancelled_authorization_is_an_error_page(srv: Server, browser: Browser) -> None:
    response = browser.sign_in("github", user_id=4242003, login="x", emails=[], allow=False)
    assert_refused(response, 403, browser, "did not allow GitHub")


# Configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        ({"okta": {"issuer": "http://idp.example.com", "client_id": "a", "client_secret": "b"}},
         "http:// only on loopback"),
        ({"okta": {"client_id": "a", "client_secret": "b"}}, "needs an issuer"),
        ({"google": {"client_secret": "b"}}, "client_id must be a non-empty string"),
        ({"github": {"client_id": "a", "client_secret": "b", "base_url": "ftp://x"}}, "https://"),
        ({"Bad Name": {"issuer": "https://x.example", "client_id": "a", "client_secret": "b"}},
         "provider name"),
    ],
)  # fmt: skip
def test_bad_provider_config_stops_the_server_with_one_line(
    tmp_path: Path, providers: dict[str, object], message: str
) -> None:
    env = {"BASTION_OAUTH_PROVIDERS": json.dumps(providers)}
    server = Server(f"sqlite:///{tmp_path / 'b.db'}", tmp_path, env=env)
    done = server.cli("serve", "--port", str(free_port()))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "BASTION_OAUTH_PROVIDERS" in lines[0] and message in lines[0]


def test_loopback_http_issuer_and_google_defaults_are_accepted() -> None:
    from bastion.core.oauth_config import parse_providers

    parsed = parse_providers(
        {
            "google": {"client_id": "a", "client_secret": "b"},
            "dev": {"issuer": "http://localhost:8080/r", "client_id": "a", "client_secret": "b"},
            "github": {"client_id": "a", "client_secret": "b", "base_url": "https://ghe.example.com"},
        }
    )  # fmt: skip
    assert parsed["google"].issuer == "https://accounts.google.com"
    assert parsed["dev"].kind == "oidc"
    assert parsed["github"].api_url == "https://ghe.example.com/api/v3"


def test_state_cookie_is_refused_when_expired_foreign_or_tampered() -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from bastion.core.secrets import Signer
    from bastion.flows import oauth
    from bastion.flows.oauth_clients import OAuthFailed

    bx = SimpleNamespace(cookies=Signer(["k" * 32], "cookies"))
    now = int(datetime.now(UTC).timestamp())
    pending = oauth.Pending("local", "s", "v", "n", "/p", now + 600)
    cookie = oauth._encode(bx, pending)  # type: ignore[arg-type]
    assert oauth._decode(bx, cookie, "local", now) == pending  # type: ignore[arg-type]
    for raw, name, at in (
        (cookie, "local", now + 601),  # expired
        (cookie, "github", now),  # started for another provider
        (cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), "local", now),  # bad signature
        (Signer(["other" * 8], "cookies").sign(cookie.rpartition(".")[0]), "local", now),
    ):
        with pytest.raises(OAuthFailed):
            oauth._decode(bx, raw, name, at)  # type: ignore[arg-type]
