"""SPEC §8 over HTTP, on SQLite and PostgreSQL: the token endpoint's grants, JWT access
tokens and the JWKS, refresh rotation with reuse detection, revocation, introspection
and key rotation. Tokens are checked with PyJWT and the published JWKS, not with
Bastion's own code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt as pyjwt
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization

from bastion.core.secrets import Encryptor
from tests.conftest import ServerFactory
from tests.support import STRONG, Server, csrf, db_query, register, unique_email


def grant(c: httpx.Client, as_json: bool = False, **params: str) -> httpx.Response:
    if as_json:
        return c.post("/api/auth/token", json=params)
    return c.post("/api/auth/token", data=params)


def password_grant(
    c: httpx.Client, email: str, password: str = STRONG, **kw: Any
) -> httpx.Response:
    return grant(c, grant_type="password", username=email, password=password, **kw)


def refresh(c: httpx.Client, token: str, as_json: bool = False) -> httpx.Response:
    return grant(c, as_json, grant_type="refresh_token", refresh_token=token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_user(server: Server, email: str | None = None) -> tuple[str, str]:
    """Register a user; (email, user id)."""
    email = email or unique_email("tok")
    with server.client() as c:
        r = register(c, email)
        assert r.status_code == 201, r.text
        return email, r.json()["user"]["id"]


def tokens_for(server: Server, email: str) -> dict[str, Any]:
    with server.client() as c:
        r = password_grant(c, email)
        assert r.status_code == 200, r.text
        return dict(r.json())


def session_status(server: Server, access_token: str) -> int:
    with server.client() as c:
        return c.get("/api/auth/session", headers=bearer(access_token)).status_code


def jwks(server: Server) -> dict[str, Any]:
    with server.client() as c:
        r = c.get("/.well-known/jwks.json")
        assert r.status_code == 200
        return dict(r.json())


def kids_soon(server: Server, *wanted: str) -> set[str]:
    """The JWKS key ids once they include ``wanted``, or after 3 s. A key made by another
    process (``bastion keys rotate``) is published at the next reload, which a JWKS
    request forces at most once a second (flows/keys.py FORCED_RELOAD_INTERVAL)."""
    deadline = time.monotonic() + 3
    while True:
        kids = {k["kid"] for k in jwks(server)["keys"]}
        if set(wanted) <= kids or time.monotonic() > deadline:
            return kids
        time.sleep(0.2)


def decode_with_jwks(server: Server, token: str) -> dict[str, Any]:
    """What a resource server does: pick the published key by kid, pin its alg."""
    kid = pyjwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks(server)["keys"] if k["kid"] == kid)
    return dict(
        pyjwt.decode(
            token,
            pyjwt.PyJWK(jwk).key,
            algorithms=[jwk["alg"]],
            audience="bastion",
            issuer=server.url,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None = None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{b64(sig)}"


def server_signing_key(server: Server) -> tuple[str, str, Any]:
    """(kid, alg, private key) of the server's signing key, decrypted the way the server
    does it: this simulates a token minted with the real key but without a claim."""
    rows = db_query(
        server.database_url,
        "SELECT kid, alg, private_key FROM signing_keys WHERE retired_at IS NULL",
    )
    kid, alg, cipher = rows[0]
    pem = Encryptor([server.env["BASTION_SECRET_KEY"]], "signing-keys").decrypt(cipher)
    assert pem is not None
    return kid, alg, serialization.load_pem_private_key(pem.encode(), password=None)


def audit_actions(server: Server, user_id: str) -> list[str]:
    rows = db_query(
        server.database_url,
        "SELECT action FROM audit_events WHERE user_id = $1 ORDER BY id",
        user_id,
    )
    return [r[0] for r in rows]


# --- grants ----------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_password_grant_returns_bearer_pair_and_session_bound_token(
    server: Server, as_json: bool
) -> None:
    email, user_id = new_user(server)
    with server.client() as c:
        r = password_grant(c, email, as_json=as_json)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
        assert body["token_type"] == "Bearer" and body["expires_in"] == 900
        assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
        assert "set-cookie" not in r.headers
        me = c.get("/api/auth/session", headers=bearer(body["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json()["user"]["id"] == user_id
        claims = decode_with_jwks(server, body["access_token"])
        assert me.json()["session"]["id"] == claims["sid"]
        # The grant is a device of the user like a browser session.
        listed = c.get("/api/auth/sessions", headers=bearer(body["access_token"])).json()
        assert any(s["id"] == claims["sid"] and s["current"] for s in listed["sessions"])


def test_access_token_claims_kid_and_jwks_verification(server: Server) -> None:
    email, user_id = new_user(server)
    token = tokens_for(server, email)["access_token"]
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] in {k["kid"] for k in jwks(server)["keys"]}
    claims = decode_with_jwks(server, token)
    assert set(claims) == {"iss", "sub", "aud", "iat", "exp", "jti", "role", "sid", "ver"}
    assert claims["iss"] == server.url and claims["aud"] == "bastion"
    assert claims["sub"] == user_id and claims["role"] == "viewer" and claims["ver"] == 0
    assert claims["exp"] - claims["iat"] == 900 and abs(claims["iat"] - time.time()) < 60
    other = decode_with_jwks(server, tokens_for(server, email)["access_token"])
    assert other["jti"] != claims["jti"] and other["sid"] != claims["sid"]
    for jwk in jwks(server)["keys"]:
        assert "d" not in jwk and jwk["use"] == "sig"


def test_token_endpoint_errors_follow_rfc6749(server: Server) -> None:
    email, _ = new_user(server)
    cases: list[tuple[Any, str]] = [
        ({}, "invalid_request"),
        ({"grant_type": "password", "username": email}, "invalid_request"),
        ({"grant_type": "password", "password": STRONG}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "mfa", "mfa_token": "x"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        (
            {"grant_type": "password", "username": email, "password": "Wrong-pass-1!"},
            "invalid_grant",
        ),
        (
            {"grant_type": "password", "username": unique_email(), "password": STRONG},
            "invalid_grant",
        ),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, "invalid_grant"),
        ({"grant_type": "mfa", "mfa_token": "nope", "code": "123456"}, "invalid_grant"),
    ]
    with server.client() as c:
        for params, error in cases:
            for as_json in (False, True):
                r = grant(c, as_json, **params)
                assert r.status_code == 400, (params, r.text)
                assert r.json()["error"] == error, (params, r.text)
                assert r.json()["error_description"]
        odd = [
            c.post(
                "/api/auth/token", json={"grant_type": "password", "username": email, "password": 1}
            ),
            c.post("/api/auth/token", json=["grant_type"]),
            c.post(
                "/api/auth/token",
                content=b"{not json",
                headers={"content-type": "application/json"},
            ),
            c.post(
                "/api/auth/token",
                content=b"grant_type=password",
                headers={"content-type": "text/plain"},
            ),
            c.post(
                "/api/auth/token",
                content=b"grant_type=password&grant_type=refresh_token",
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
        ]
        for r in odd:
            assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


def test_mfa_user_gets_mfa_required_then_mfa_grant(server: Server) -> None:
    email, _ = new_user(server)
    with server.client() as c:
        assert (
            c.post("/api/auth/login", json={"email": email, "password": STRONG}).status_code == 200
        )
        setup = c.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(c)).json()
        code = pyotp.TOTP(setup["secret"]).now()
        r = c.post("/api/auth/mfa/enable", json={"code": code}, headers=csrf(c))
        assert r.status_code == 200, r.text
    with server.client() as c:
        for as_json in (False, True):
            r = password_grant(c, email, as_json=as_json)
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "mfa_required" and r.json()["mfa_token"]
            assert "access_token" not in r.json()
        mfa_token = r.json()["mfa_token"]
        wrong = grant(c, grant_type="mfa", mfa_token=mfa_token, code="000000")
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        ok = grant(c, True, grant_type="mfa", mfa_token=mfa_token, code=setup["backup_codes"][0])
        assert ok.status_code == 200, ok.text
        assert session_status(server, ok.json()["access_token"]) == 200
        # The MFA-step token is single use: a dead one is invalid_grant.
        again = grant(c, grant_type="mfa", mfa_token=mfa_token, code=setup["backup_codes"][1])
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_password_grant_lockout_and_ip_limit_use_login_status_codes(
    make_server: ServerFactory,
) -> None:
    srv = make_server(env={"BASTION_LOCKOUT_THRESHOLD": "2", "BASTION_IP_FAILURE_LIMIT": "4"})
    a, _ = new_user(srv)
    b, _ = new_user(srv)
    with srv.client() as c:
        for _ in range(2):
            assert password_grant(c, a, "Wrong-pass-1!").json()["error"] == "invalid_grant"
        locked = password_grant(c, a)  # even the right password while locked
        assert locked.status_code == 423, locked.text
        assert locked.json()["error"] == "account_locked" and locked.json()["retry_after"] > 0
        for _ in range(2):
            assert password_grant(c, b, "Wrong-pass-1!").status_code == 400
        limited = password_grant(c, b)
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"] == "rate_limited" and int(limited.headers["retry-after"]) > 0


# --- forged and stale access tokens ------------------------------------------------------


def test_forged_access_tokens_refused(server: Server) -> None:
    email, _ = new_user(server)
    real = tokens_for(server, email)["access_token"]
    claims = decode_with_jwks(server, real)
    kid, alg, private = server_signing_key(server)
    jwk = next(k for k in jwks(server)["keys"] if k["kid"] == kid)
    public = pyjwt.PyJWK(jwk).key
    hdr = {"kid": kid, "typ": "at+jwt"}

    def mint(payload: dict[str, Any], **headers: Any) -> str:
        return pyjwt.encode(payload, private, algorithm=alg, headers={**hdr, **headers})

    # Control: a token minted with the real key and every claim is accepted.
    assert session_status(server, mint(claims)) == 200
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    expired = {**claims, "iat": claims["iat"] - 2000, "exp": int(time.time()) - 5}
    hmac_secrets = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        json.dumps(jwk).encode(),
        jwk["x"].encode(),
    ]
    head, _, sig = real.split(".")
    forged = [
        forge({"alg": "none", **hdr}, claims),
        forge({"alg": "none", **hdr}, claims)[:-1],
        *[forge({"alg": "HS256", **hdr}, claims, s) for s in hmac_secrets],
        mint(no_exp),
        mint(expired),
        mint({**claims, "aud": "another-service"}),
        mint({**claims, "iss": "https://evil.example"}),
        mint(claims, kid="unknown-kid"),
        f"{head}.{b64(json.dumps({**claims, 'role': 'admin'}).encode())}.{sig}",
        real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB"),
        "not-a-jwt",
    ]
    for token in forged:
        assert session_status(server, token) == 401, token


def test_stale_token_version_refused_after_password_change(server: Server) -> None:
    email, _ = new_user(server)
    pair = tokens_for(server, email)
    with server.client() as c:
        r = c.post(
            "/api/auth/password/change",
            json={"current_password": STRONG, "new_password": "Another-Horse-7?"},
            headers=bearer(pair["access_token"]),
        )
        assert r.status_code == 200, r.text
        assert c.get("/api/auth/session", headers=bearer(pair["access_token"])).status_code == 401
        # Every refresh token of the user was revoked too (SPEC §4).
        assert refresh(c, pair["refresh_token"]).json()["error"] == "invalid_grant"
        fresh = password_grant(c, email, "Another-Horse-7?").json()
        assert decode_with_jwks(server, fresh["access_token"])["ver"] == 1
        assert session_status(server, fresh["access_token"]) == 200


def test_ended_session_refuses_its_access_token(server: Server) -> None:
    email, _ = new_user(server)
    pair = tokens_for(server, email)
    sid = decode_with_jwks(server, pair["access_token"])["sid"]
    with server.client() as c:
        r = c.delete(f"/api/auth/sessions/{sid}", headers=bearer(pair["access_token"]))
        assert r.status_code == 204, r.text
        assert c.get("/api/auth/session", headers=bearer(pair["access_token"])).status_code == 401
        assert refresh(c, pair["refresh_token"]).json()["error"] == "invalid_grant"


# --- refresh rotation --------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_refresh_rotation_kills_the_used_token(server: Server, as_json: bool) -> None:
    email, _ = new_user(server)
    first = tokens_for(server, email)
    with server.client() as c:
        r = refresh(c, first["refresh_token"], as_json)
        assert r.status_code == 200, r.text
        second = r.json()
        assert (
            second["token_type"] == "Bearer" and second["refresh_token"] != first["refresh_token"]
        )
        a, b = (decode_with_jwks(server, t["access_token"]) for t in (first, second))
        assert a["sid"] == b["sid"] and a["jti"] != b["jti"]
        assert session_status(server, second["access_token"]) == 200
        third = refresh(c, second["refresh_token"], as_json)
        assert third.status_code == 200, third.text


def test_refresh_token_reuse_revokes_family_and_is_audited(server: Server) -> None:
    email, user_id = new_user(server)
    first = tokens_for(server, email)
    with server.client() as c:
        second = refresh(c, first["refresh_token"]).json()
        replay = refresh(c, first["refresh_token"])
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        # The newest token of the family is dead too, and so is its session.
        newest = refresh(c, second["refresh_token"])
        assert newest.status_code == 400 and newest.json()["error"] == "invalid_grant"
    assert session_status(server, second["access_token"]) == 401
    assert audit_actions(server, user_id).count("refresh_token_reused") == 1
    # Other grants of the same user are untouched.
    assert session_status(server, tokens_for(server, email)["access_token"]) == 200


def test_parallel_refreshes_with_one_token_yield_exactly_one_pair(server: Server) -> None:
    email, user_id = new_user(server)
    first = tokens_for(server, email)

    def attempt(_: int) -> httpx.Response:
        with server.client() as c:
            return refresh(c, first["refresh_token"])

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(attempt, range(10)))
    assert sorted(r.status_code for r in results) == [200] + [400] * 9
    assert all(r.json()["error"] == "invalid_grant" for r in results if r.status_code == 400)
    # With no grace, the losers are replays: the family is revoked and audited once.
    assert audit_actions(server, user_id).count("refresh_token_reused") == 1


def test_refresh_reuse_grace_window_gives_a_new_pair_of_the_same_family(
    make_server: ServerFactory,
) -> None:
    srv = make_server(env={"BASTION_REFRESH_REUSE_GRACE": "5"})
    email, user_id = new_user(srv)
    first = tokens_for(srv, email)
    with srv.client() as c:
        second = refresh(c, first["refresh_token"]).json()
        again = refresh(c, first["refresh_token"])  # the client lost the first answer
        assert again.status_code == 200, again.text
        third = again.json()
        sids = {decode_with_jwks(srv, t["access_token"])["sid"] for t in (first, second, third)}
        assert len(sids) == 1
        assert refresh(c, second["refresh_token"]).status_code == 200
        assert refresh(c, third["refresh_token"]).status_code == 200
    assert "refresh_token_reused" not in audit_actions(srv, user_id)

    # Parallel presentations within the grace all succeed.
    fresh = tokens_for(srv, email)
    with srv.client() as c:
        assert refresh(c, fresh["refresh_token"]).status_code == 200

    def attempt(_: int) -> int:
        with srv.client() as c:
            return refresh(c, fresh["refresh_token"]).status_code

    with ThreadPoolExecutor(5) as pool:
        assert list(pool.map(attempt, range(5))) == [200] * 5


def test_two_processes_share_keys_and_refresh_rotation(make_server: ServerFactory) -> None:
    a = make_server()
    # Two processes behind one public URL (the token issuer), on one database.
    b = make_server(env={"BASTION_BASE_URL": a.url}, database_url=a.database_url)
    assert jwks(a) == jwks(b)
    email, _ = new_user(a)
    pair = tokens_for(a, email)
    assert session_status(b, pair["access_token"]) == 200

    def attempt(i: int) -> httpx.Response:
        with (a if i % 2 else b).client() as c:
            return refresh(c, pair["refresh_token"])

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(attempt, range(10)))
    assert sorted(r.status_code for r in results) == [200] + [400] * 9

    # A rotation made by the CLI is seen by both processes.
    pair = tokens_for(b, email)
    out = a.cli("keys", "rotate")
    assert out.returncode == 0, out.stderr
    new_kid = out.stdout.strip()
    for srv in (a, b):
        assert new_kid in kids_soon(srv, new_kid)
        assert session_status(srv, pair["access_token"]) == 200
        assert pyjwt.get_unverified_header(tokens_for(srv, email)["access_token"])["kid"] == new_kid


def test_refresh_chains_across_two_processes_lose_no_token(make_server: ServerFactory) -> None:
    """Many token families refreshed at once, each step on the other process: every
    successor works (SQLite: the writer threads of both processes queue on one lock
    file, store/direct.py; PostgreSQL: the one-statement rotation)."""
    a = make_server()
    b = make_server(env={"BASTION_BASE_URL": a.url}, database_url=a.database_url)
    email, _ = new_user(a)
    starts = [tokens_for(a, email)["refresh_token"] for _ in range(6)]

    def chain(token: str) -> list[int]:
        statuses = []
        with a.client() as ca, b.client() as cb:
            for step in range(12):
                r = refresh(cb if step % 2 else ca, token)
                statuses.append(r.status_code)
                if r.status_code != 200:
                    break
                token = r.json()["refresh_token"]
        assert session_status(a, r.json()["access_token"]) == 200
        return statuses

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(chain, starts)) == [[200] * 12] * 6
    rows = db_query(
        a.database_url,
        "SELECT count(*), count(used_at) FROM refresh_tokens WHERE user_id = "
        "(SELECT id FROM users WHERE email = $1)",
        email,
    )
    assert [int(x) for x in rows[0]] == [6 * 13, 6 * 12]


def test_two_workers_starting_together_create_one_signing_key(make_server: ServerFactory) -> None:
    srv = make_server(workers=2)
    assert len(db_query(srv.database_url, "SELECT kid FROM signing_keys")) == 1
    assert len(jwks(srv)["keys"]) == 1


# --- key rotation ------------------------------------------------------------------------


def test_keys_rotate_keeps_old_tokens_valid_and_publishes_both(make_server: ServerFactory) -> None:
    srv = make_server()
    email, _ = new_user(srv)
    old = tokens_for(srv, email)
    old_kid = pyjwt.get_unverified_header(old["access_token"])["kid"]
    out = srv.cli("keys", "rotate")
    assert out.returncode == 0, out.stderr
    new_kid = out.stdout.strip()
    assert new_kid and new_kid != old_kid
    assert kids_soon(srv, old_kid, new_kid) == {old_kid, new_kid}
    new = tokens_for(srv, email)
    assert pyjwt.get_unverified_header(new["access_token"])["kid"] == new_kid
    for pair in (old, new):
        assert session_status(srv, pair["access_token"]) == 200
        decode_with_jwks(srv, pair["access_token"])
    listed = srv.cli("keys", "list")
    assert listed.returncode == 0 and "signing" in listed.stdout and "published" in listed.stdout
    bad = srv.cli("keys", "rotate", "--alg", "HS256")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    es = srv.cli("keys", "rotate", "--alg", "ES256")
    assert es.returncode == 0, es.stderr
    kids_soon(srv, es.stdout.strip())  # JWKS requests reload the key set early
    latest = tokens_for(srv, email)["access_token"]
    assert pyjwt.get_unverified_header(latest)["alg"] == "ES256"
    assert decode_with_jwks(srv, latest)["sub"]
    assert session_status(srv, old["access_token"]) == 200


# --- revocation and introspection ----------------------------------------------------------


def test_revoke_refresh_token_ends_the_grant(server: Server) -> None:
    email, _ = new_user(server)
    pair = tokens_for(server, email)
    with server.client() as c:
        r = c.post("/api/auth/revoke", data={"token": pair["refresh_token"]})
        assert r.status_code == 200, r.text
        assert refresh(c, pair["refresh_token"]).json()["error"] == "invalid_grant"
        assert c.get("/api/auth/session", headers=bearer(pair["access_token"])).status_code == 401
        for body in ({"token": "unknown"}, {"token": pair["refresh_token"]}):
            assert c.post("/api/auth/revoke", json=body).status_code == 200
        missing = c.post("/api/auth/revoke", json={})
        assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


def test_revoke_access_token_ends_its_session(server: Server) -> None:
    email, user_id = new_user(server)
    pair = tokens_for(server, email)
    other = tokens_for(server, email)
    with server.client() as c:
        assert c.post("/api/auth/revoke", json={"token": pair["access_token"]}).status_code == 200
        assert c.get("/api/auth/session", headers=bearer(pair["access_token"])).status_code == 401
        assert refresh(c, pair["refresh_token"]).json()["error"] == "invalid_grant"
    assert session_status(server, other["access_token"]) == 200
    assert "session_revoked" in audit_actions(server, user_id)


def test_introspection(make_server: ServerFactory) -> None:
    secret = "introspection-secret-" + "y" * 20
    srv = make_server(env={"BASTION_INTROSPECTION_TOKEN": secret})
    email, user_id = new_user(srv)
    pair = tokens_for(srv, email)
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
    admin = tokens_for(srv, admin_email)
    with srv.client() as c:

        def inspect(token: str, caller: str = secret, as_json: bool = False) -> httpx.Response:
            if as_json:
                return c.post("/api/auth/introspect", json={"token": token}, headers=bearer(caller))
            return c.post("/api/auth/introspect", data={"token": token}, headers=bearer(caller))

        for caller in ("", "wrong-secret"):
            r = c.post(
                "/api/auth/introspect",
                data={"token": pair["access_token"]},
                headers=bearer(caller) if caller else {},
            )
            assert r.status_code == 401, r.text
        # A valid token without manage_users: authenticated but not allowed.
        r = c.post(
            "/api/auth/introspect",
            data={"token": pair["access_token"]},
            headers=bearer(pair["access_token"]),
        )
        assert r.status_code == 403 and r.json()["error"] == "insufficient_scope", r.text
        for caller in (secret, admin["access_token"]):
            body = inspect(pair["access_token"], caller).json()
            claims = decode_with_jwks(srv, pair["access_token"])
            assert body["active"] is True and body["token_type"] == "Bearer"
            for name in ("sub", "exp", "iat", "aud", "iss", "jti", "sid", "role"):
                assert body[name] == claims[name], name
            assert body["sub"] == user_id
        r = inspect(pair["refresh_token"], as_json=True).json()
        assert r["active"] is True and r["token_type"] == "refresh_token" and r["sub"] == user_id
        assert inspect("garbage").json() == {"active": False}
        # A browser session cookie value is not a token for resource servers.
        with srv.client() as browser:
            browser.post("/api/auth/login", json={"email": email, "password": STRONG})
            cookie = browser.cookies.get("bastion_session") or ""
        assert cookie and inspect(cookie).json() == {"active": False}
        missing = c.post("/api/auth/introspect", json={}, headers=bearer(secret))
        assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
        c.post("/api/auth/revoke", data={"token": pair["access_token"]})
        assert inspect(pair["access_token"]).json() == {"active": False}
        assert inspect(pair["refresh_token"]).json() == {"active": False}


def test_access_and_refresh_tokens_expire(make_server: ServerFactory) -> None:
    secret = "introspection-secret-" + "z" * 20
    srv = make_server(
        env={
            "BASTION_ACCESS_TOKEN_TTL": "1",
            "BASTION_REFRESH_TOKEN_TTL": "2",
            "BASTION_INTROSPECTION_TOKEN": secret,
        }
    )
    email, _ = new_user(srv)
    pair = tokens_for(srv, email)
    assert pair["expires_in"] == 1
    # Unverified on purpose: under load the one second may already be over.
    claims = pyjwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 1
    time.sleep(2.2)
    assert session_status(srv, pair["access_token"]) == 401
    with srv.client() as c:
        r = refresh(c, pair["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        for token in (pair["access_token"], pair["refresh_token"]):
            body = c.post("/api/auth/introspect", data={"token": token}, headers=bearer(secret))
            assert body.json() == {"active": False}


# --- the token:ip budget -----------------------------------------------------------------


def test_refresh_grants_count_only_failures_against_the_ip_budget(
    make_server: ServerFactory,
) -> None:
    """A valid refresh is no guess: any number pass; failed ones spend ``token:ip`` and,
    once it is spent, refresh grants from that IP get 429 with Retry-After. Password
    grants count every request."""
    srv = make_server(env={"BASTION_RATE_LIMITS": json.dumps({"token:ip": [3, 60]})})
    email, user_id = new_user(srv)
    pair = tokens_for(srv, email)  # one password grant: 1 of 3
    with srv.client() as c:
        token = pair["refresh_token"]
        for _ in range(6):  # well past the budget, all valid
            r = refresh(c, token)
            assert r.status_code == 200, r.text
            token = r.json()["refresh_token"]
        assert refresh(c, "not-a-token").status_code == 400  # 2 of 3
        assert refresh(c, "not-a-token").status_code == 400  # 3 of 3
        over = refresh(c, "not-a-token")
        assert over.status_code == 429, over.text
        assert over.json()["error"] == "rate_limited"
        assert int(over.headers["Retry-After"]) > 0
        # Blocked now, valid token or not; the live token stays unused.
        blocked = refresh(c, token)
        assert blocked.status_code == 429
        assert password_grant(c, email).status_code == 429
    rows = db_query(
        srv.database_url,
        f"SELECT count(*) FROM refresh_tokens WHERE user_id = '{user_id}' AND used_at IS NULL",
    )
    assert rows[0][0] == 1


def test_refresh_rotation_with_an_ended_session_revokes_the_family(server: Server) -> None:
    """The one-statement rotation leaves a token whose session has ended to the full path:
    the grant fails, the family is revoked, and it is not reported as reuse."""
    email, user_id = new_user(server)
    pair = tokens_for(server, email)
    with server.client() as c:
        assert c.post("/api/auth/login", json={"email": email, "password": STRONG}).status_code
        r = c.post("/api/auth/sessions/revoke-all", headers=csrf(c))
        assert r.status_code == 204, r.text
        dead = refresh(c, pair["refresh_token"])
        assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    rows = db_query(
        server.database_url,
        f"SELECT count(*) FROM refresh_tokens WHERE user_id = '{user_id}' AND revoked_at IS NULL",
    )
    assert rows[0][0] == 0
    assert "refresh_token_reused" not in audit_actions(server, user_id)
