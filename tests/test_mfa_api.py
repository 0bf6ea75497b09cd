"""SPEC §6 (and the MFA parts of §3, §4, §11) over HTTP, on SQLite and PostgreSQL.

Codes are computed with pyotp (and oathtool where installed), not with Bastion's own
core, so the server is checked against independent implementations."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp

from bastion.core.secrets import Encryptor
from tests.conftest import ServerFactory
from tests.qr_decode import OATHTOOL, decode_svg, require_tool
from tests.support import STRONG, Server, csrf, db_query, login, register, unique_email


@dataclass
class Enrolled:
    client: httpx.Client  # signed in, holds the device cookie of the account
    email: str
    user_id: str
    secret: str
    backup_codes: list[str]
    setup: dict[str, Any]


def code_at(secret: str, steps_ahead: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def enroll(server: Server, email: str | None = None) -> Enrolled:
    """Register, set up and enable MFA with the code of the current step."""
    c = server.client()
    email = email or unique_email("mfa")
    r = register(c, email)
    assert r.status_code == 201, r.text
    user_id = r.json()["user"]["id"]
    r = c.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(c))
    assert r.status_code == 200, r.text
    body = r.json()
    r = c.post("/api/auth/mfa/enable", json={"code": code_at(body["secret"])}, headers=csrf(c))
    assert r.status_code == 200, r.text
    assert r.json()["user"]["mfa_enabled"] is True
    return Enrolled(c, email, user_id, body["secret"], body["backup_codes"], body)


def mfa_token(server: Server, email: str, client: httpx.Client | None = None) -> str:
    """Password step from a fresh client (no device cookie) unless one is given."""
    own = client is None
    c = client or server.client()
    try:
        r = login(c, email)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["mfa_required"] is True and "user" not in body
        assert "bastion_session" not in r.cookies
        return str(body["mfa_token"])
    finally:
        if own:
            c.close()


def verify(c: httpx.Client, token: str, code: str) -> httpx.Response:
    return c.post("/api/auth/mfa/verify", json={"mfa_token": token, "code": code})


def outbox_events(server: Server, email: str) -> list[str]:
    rows = db_query(
        server.database_url, "SELECT event FROM outbox WHERE recipient = $1 ORDER BY id", email
    )
    return [r[0] for r in rows]


def audit_actions(server: Server, user_id: str) -> list[str]:
    rows = db_query(
        server.database_url,
        "SELECT action FROM audit_events WHERE user_id = $1 ORDER BY id",
        user_id,
    )
    return [r[0] for r in rows]


# --- setup and enable ------------------------------------------------------------


def test_setup_returns_secret_uri_qr_and_ten_backup_codes(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        email = unique_email("setup")
        assert register(c, email).status_code == 201
        r = c.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(c))
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert set(body) == {"secret", "otpauth_uri", "qr_svg", "backup_codes"}
        parsed = pyotp.parse_uri(body["otpauth_uri"])
        assert parsed.secret == body["secret"] and parsed.issuer == "Bastion"
        assert parsed.name == email.lower()
        assert len(body["backup_codes"]) == 10 and len(set(body["backup_codes"])) == 10
        assert decode_svg(body["qr_svg"], tmp_path) == body["otpauth_uri"]
        # not active until enabled
        assert c.get("/api/auth/session").json()["user"]["mfa_enabled"] is False
    with server.client() as c2:
        r = login(c2, email)
        assert r.status_code == 200 and "user" in r.json()


def test_setup_wrong_password_401_and_csrf_required(server: Server) -> None:
    with server.client() as c:
        assert register(c).status_code == 201
        r = c.post("/api/auth/mfa/setup", json={"password": "Wrong-Horse-9!"}, headers=csrf(c))
        assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
        r = c.post("/api/auth/mfa/setup", json={"password": STRONG})
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
    with server.client() as anon:
        r = anon.post("/api/auth/mfa/setup", json={"password": STRONG})
        assert r.status_code == 401


def test_enable_wrong_code_401_and_without_setup_409(server: Server) -> None:
    with server.client() as c:
        assert register(c).status_code == 201
        r = c.post("/api/auth/mfa/enable", json={"code": "123456"}, headers=csrf(c))
        assert r.status_code == 409 and r.json()["error"] == "mfa_setup_required"
        secret = c.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(c)).json()[
            "secret"
        ]
        wrong = f"{(int(code_at(secret)) + 1) % 1_000_000:06d}"
        r = c.post("/api/auth/mfa/enable", json={"code": wrong}, headers=csrf(c))
        assert r.status_code == 401 and r.json()["error"] == "invalid_code"
        assert c.get("/api/auth/session").json()["user"]["mfa_enabled"] is False


def test_enable_accepts_oathtool_code_and_mails(server: Server) -> None:
    require_tool(OATHTOOL, "oathtool")
    with server.client() as c:
        email = unique_email("oath")
        user_id = register(c, email).json()["user"]["id"]
        secret = c.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(c)).json()[
            "secret"
        ]
        code = subprocess.run(
            [OATHTOOL, "--totp", "-b", secret], capture_output=True, text=True, check=True
        ).stdout.strip()
        r = c.post("/api/auth/mfa/enable", json={"code": code}, headers=csrf(c))
        assert r.status_code == 200, r.text
    assert "mfa_enabled" in outbox_events(server, email.lower())
    assert "mfa_enabled" in audit_actions(server, user_id)


def test_setup_while_enabled_409(server: Server) -> None:
    e = enroll(server)
    r = e.client.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(e.client))
    assert r.status_code == 409 and r.json()["error"] == "mfa_already_enabled"
    r = e.client.post("/api/auth/mfa/enable", json={"code": "000000"}, headers=csrf(e.client))
    assert r.status_code == 409
    e.client.close()


def test_totp_secret_never_stored_in_plaintext(server: Server) -> None:
    with server.client() as c:
        email = unique_email("enc")
        assert register(c, email).status_code == 201
        setup = c.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=csrf(c)).json()
        secret, codes = setup["secret"], setup["backup_codes"]

        def stored() -> str:
            rows = db_query(
                server.database_url,
                "SELECT mfa_secret, mfa_pending_secret FROM users WHERE email = $1",
                email.lower(),
            )
            return " ".join(str(v) for v in rows[0])

        pending = stored()
        assert "None" not in pending.split(" ")[1]
        assert secret not in pending and secret.lower() not in pending
        c.post("/api/auth/mfa/enable", json={"code": code_at(secret)}, headers=csrf(c))
        active = stored()
        assert secret not in active and secret.lower() not in active
        assert active.split(" ")[0] != "None"
        hashes = db_query(
            server.database_url,
            "SELECT b.code_hash FROM backup_codes b JOIN users u ON u.id = b.user_id "
            "WHERE u.email = $1",
            email.lower(),
        )
        assert len(hashes) == 10
        dump = " ".join(h[0] for h in hashes)
        for code in codes:
            assert code not in dump and code.replace("-", "") not in dump


# --- the sign-in step ------------------------------------------------------------------


def test_verify_signs_in_like_login(server: Server) -> None:
    e = enroll(server)
    token = mfa_token(server, e.email)
    with server.client() as c:
        r = verify(c, token, code_at(e.secret, 1))
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"user", "session", "csrf_token"}
        assert body["user"]["id"] == e.user_id and body["user"]["mfa_enabled"] is True
        assert r.headers["cache-control"] == "no-store"
        for name in ("bastion_session", "bastion_csrf", "bastion_device"):
            assert name in r.cookies
        me = c.get("/api/auth/session")
        assert me.status_code == 200 and me.json()["session"]["id"] == body["session"]["id"]
        # the token was consumed by the success
        again = verify(c, token, e.backup_codes[0])
        assert again.status_code == 401 and again.json()["error"] == "invalid_token"
    e.client.close()


def test_totp_code_cannot_be_replayed(server: Server) -> None:
    e = enroll(server)
    code = code_at(e.secret, 1)
    with server.client() as c:
        assert verify(c, mfa_token(server, e.email), code).status_code == 200
    with server.client() as c:
        r = verify(c, mfa_token(server, e.email), code)
        assert r.status_code == 401 and r.json()["error"] == "invalid_code"
        # the enable step and anything older is refused too
        r = verify(c, mfa_token(server, e.email), code_at(e.secret, 0))
        assert r.status_code == 401 and r.json()["error"] == "invalid_code"
    e.client.close()


def test_totp_step_accepted_once_under_parallel_requests(server: Server) -> None:
    e = enroll(server)
    code = code_at(e.secret, 1)
    tokens = [mfa_token(server, e.email, e.client) for _ in range(6)]
    statuses = _parallel_verify(server, tokens, [code] * len(tokens))
    assert statuses.count(200) == 1, statuses
    assert all(s in (401, 423) for s in statuses if s != 200)
    e.client.close()


def test_backup_code_single_use_under_parallel_requests(server: Server) -> None:
    e = enroll(server)
    code = e.backup_codes[3]
    tokens = [mfa_token(server, e.email) for _ in range(10)]  # separate logins
    statuses = _parallel_verify(server, tokens, [code] * 10)
    assert statuses.count(200) == 1, statuses
    assert all(s in (401, 423) for s in statuses if s != 200), statuses
    used = db_query(
        server.database_url,
        "SELECT COUNT(*) FROM backup_codes WHERE user_id = $1 AND used_at IS NOT NULL",
        e.user_id,
    )
    assert used[0][0] == 1
    assert outbox_events(server, e.email.lower()).count("backup_code_used") == 1
    assert audit_actions(server, e.user_id).count("backup_code_used") == 1
    e.client.close()


def _parallel_verify(server: Server, tokens: list[str], codes: list[str]) -> list[int]:
    barrier = threading.Barrier(len(tokens))

    def one(i: int) -> int:
        with server.client() as c:
            barrier.wait()
            return verify(c, tokens[i], codes[i]).status_code

    with ThreadPoolExecutor(len(tokens)) as pool:
        return list(pool.map(one, range(len(tokens))))


def test_backup_code_case_dash_space_insensitive_and_mailed(server: Server) -> None:
    e = enroll(server)
    raw = e.backup_codes[0]
    variant = " " + raw.upper().replace("-", " - ") + " "
    with server.client() as c:
        r = verify(c, mfa_token(server, e.email), variant)
        assert r.status_code == 200, r.text
    with server.client() as c:
        r = verify(c, mfa_token(server, e.email), raw.replace("-", ""))
        assert r.status_code == 401 and r.json()["error"] == "invalid_code"
        second = e.backup_codes[1].replace("-", "")
        assert verify(c, mfa_token(server, e.email), second).status_code == 200
    assert outbox_events(server, e.email.lower()).count("backup_code_used") == 2
    body = db_query(
        server.database_url,
        "SELECT text_body FROM outbox WHERE recipient = $1 AND event = 'backup_code_used' "
        "ORDER BY id",
        e.email.lower(),
    )
    assert "9 codes remain" in body[0][0] and "8 codes remain" in body[1][0]
    e.client.close()


def test_mfa_token_gives_no_session(server: Server) -> None:
    e = enroll(server)
    token = mfa_token(server, e.email)
    with server.client() as c:
        c.cookies.set("bastion_session", token)
        assert c.get("/api/auth/session").status_code == 401
    with server.client() as c:
        r = c.get("/api/auth/session", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    with server.client() as c:  # the token still works for its purpose
        assert verify(c, token, e.backup_codes[0]).status_code == 200
    e.client.close()


def test_mfa_token_dead_after_five_wrong_codes(server: Server) -> None:
    e = enroll(server)
    token = mfa_token(server, e.email)
    good = e.backup_codes[0]
    with server.client() as c:
        for i in range(5):
            r = verify(c, token, f"zzzz-zzz{i + 2}")
            assert r.status_code == 401 and r.json()["error"] == "invalid_code", r.text
        r = verify(c, token, good)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    e.client.close()


def test_unknown_and_malformed_mfa_token(server: Server) -> None:
    with server.client() as c:
        r = verify(c, "not-a-token", "123456")
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        r = c.post("/api/auth/mfa/verify", json={"mfa_token": "x"})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_wrong_mfa_codes_count_toward_lockout(server: Server) -> None:
    """Re-entering the right password does not reset the count; the owner's browser
    (device cookie) keeps working while anonymous clients are locked out."""
    e = enroll(server)
    token = mfa_token(server, e.email)
    with server.client() as c:
        for _ in range(4):
            assert verify(c, token, "zzzz-zzzz").status_code == 401
        token2 = mfa_token(server, e.email)  # right password: count stays at 4
        assert verify(c, token2, "zzzz-zzzz").status_code == 401  # 5th failure locks
        r = verify(c, token2, e.backup_codes[0])
        assert r.status_code == 423 and r.json()["error"] == "account_locked"
        r = login(c, e.email)
        assert r.status_code == 423
    assert "account_locked" in outbox_events(server, e.email.lower())
    # the owner's browser holds a device cookie: counted separately, still signs in
    r = login(e.client, e.email)
    assert r.status_code == 200 and r.json()["mfa_required"] is True
    assert verify(e.client, r.json()["mfa_token"], e.backup_codes[0]).status_code == 200
    e.client.close()


def test_expired_mfa_token(make_server: ServerFactory) -> None:
    srv = make_server(env={"BASTION_MFA_TOKEN_TTL": "1"})
    e = enroll(srv)
    token = mfa_token(srv, e.email)
    time.sleep(1.5)
    with srv.client() as c:
        r = verify(c, token, e.backup_codes[0])
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    e.client.close()


def test_mfa_verify_rate_limited_per_ip(make_server: ServerFactory) -> None:
    srv = make_server(env={"BASTION_RATE_LIMITS": '{"mfa:ip": [3, 60], "mfa:user": [100, 60]}'})
    with srv.client() as c:
        statuses = [verify(c, "unknown-token", "123456").status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        r = verify(c, "unknown-token", "123456")
        assert r.json()["error"] == "rate_limited" and "retry-after" in r.headers


# --- disable and regenerate ---------------------------------------------------------------


def test_disable_needs_password_and_code(server: Server) -> None:
    e = enroll(server)
    c, h = e.client, csrf(e.client)
    r = c.post("/api/auth/mfa/disable", json={"password": "Wrong-Horse-9!", "code": "x"}, headers=h)
    assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
    r = c.post("/api/auth/mfa/disable", json={"password": STRONG, "code": "zzzz-zzzz"}, headers=h)
    assert r.status_code == 401 and r.json()["error"] == "invalid_code"
    pending = mfa_token(server, e.email)
    r = c.post(
        "/api/auth/mfa/disable", json={"password": STRONG, "code": code_at(e.secret, 1)}, headers=h
    )
    assert r.status_code == 200, r.text
    assert r.json()["user"]["mfa_enabled"] is False
    assert "mfa_disabled" in outbox_events(server, e.email.lower())
    assert "mfa_disabled" in audit_actions(server, e.user_id)
    row = db_query(
        server.database_url,
        "SELECT mfa_secret, mfa_pending_secret FROM users WHERE id = $1",
        e.user_id,
    )
    assert row[0] == (None, None)
    # pending MFA steps die with it; login no longer asks for a code
    with server.client() as other:
        assert verify(other, pending, e.backup_codes[0]).json()["error"] == "invalid_token"
        r = login(other, e.email)
        assert r.status_code == 200 and "user" in r.json()
    r = c.post("/api/auth/mfa/disable", json={"password": STRONG, "code": "1"}, headers=h)
    assert r.status_code == 409 and r.json()["error"] == "mfa_not_enabled"
    # and it can be set up again
    r = c.post("/api/auth/mfa/setup", json={"password": STRONG}, headers=h)
    assert r.status_code == 200
    c.close()


def test_regenerate_backup_codes_voids_old_ones(server: Server) -> None:
    e = enroll(server)
    c, h = e.client, csrf(e.client)
    r = c.post("/api/auth/mfa/backup-codes", json={"password": "Wrong-Horse-9!"}, headers=h)
    assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
    r = c.post("/api/auth/mfa/backup-codes", json={"password": STRONG}, headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    fresh = r.json()["backup_codes"]
    assert len(fresh) == 10 and not set(fresh) & set(e.backup_codes)
    with server.client() as other:
        r = verify(other, mfa_token(server, e.email), e.backup_codes[0])
        assert r.status_code == 401 and r.json()["error"] == "invalid_code"
        assert verify(other, mfa_token(server, e.email), fresh[0]).status_code == 200
    assert "backup_codes_regenerated" in audit_actions(server, e.user_id)
    c.close()


def test_regenerate_without_mfa_409(server: Server) -> None:
    with server.client() as c:
        assert register(c).status_code == 201
        r = c.post("/api/auth/mfa/backup-codes", json={"password": STRONG}, headers=csrf(c))
        assert r.status_code == 409 and r.json()["error"] == "mfa_not_enabled"


# --- key rotation ------------------------------------------------------------------------


def test_secret_key_rotation_keeps_mfa_working(make_server: ServerFactory) -> None:
    """SPEC §6: the secret is encrypted under a key derived from SECRET_KEY; with the old
    key in OLD_SECRET_KEYS it still decrypts, and a sign-in re-encrypts it."""
    old_key, new_key = "old-secret-key-" + "a" * 32, "new-secret-key-" + "b" * 32
    first = make_server(env={"BASTION_SECRET_KEY": old_key})
    e = enroll(first)
    e.client.close()
    url = first.database_url
    before = db_query(url, "SELECT mfa_secret FROM users WHERE id = $1", e.user_id)[0][0]
    first.stop()
    second = make_server(
        env={"BASTION_SECRET_KEY": new_key, "BASTION_OLD_SECRET_KEYS": old_key},
        database_url=url,
    )
    with second.client() as c:
        r = verify(c, mfa_token(second, e.email), code_at(e.secret, 1))
        assert r.status_code == 200, r.text
    after = db_query(url, "SELECT mfa_secret FROM users WHERE id = $1", e.user_id)[0][0]
    assert after != before and e.secret not in after
    # re-encrypted under the newest key: the old key is no longer needed
    assert Encryptor([new_key], "mfa-secrets").decrypt(after) == e.secret
    assert Encryptor([old_key], "mfa-secrets").decrypt(after) is None
    assert Encryptor([old_key], "mfa-secrets").decrypt(before) == e.secret
