"""SPEC §10 "for apps": the integrations library, exercised through examples/notes_app.py
running as its own server next to a real Bastion, in-process (sharing Bastion's
database) and remote (asking Bastion over HTTP, JWTs checked against its JWKS); and
the JWKS verifier against a key set served from a key pair made here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.integrations import JwksVerifier
from tests.admin_helpers import create_user
from tests.support import BIN, ROOT, STRONG, TLS, Server, free_port, register, unique_email

MODES = ["in-process", "remote"]


class NotesApp:
    def __init__(self, server: Server, mode: str, workdir: Path) -> None:
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "NOTES_"))}
        if mode == "in-process":  # same database and secret as the Bastion server
            env |= {k: v for k, v in server.env.items() if k.startswith("BASTION_")}
        env |= {"NOTES_MODE": mode, "NOTES_BASTION_URL": server.url, "NOTES_CACHE_TTL": "0.5"}
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"notes-{self.port}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "uvicorn"), "--app-dir", str(ROOT / "examples"), "notes_app:app"]
                + ["--port", str(self.port), "--log-level", "warning"],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-3000:])
            try:
                httpx.get(self.url + "/", timeout=1, verify=TLS)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("notes app did not start: " + self.log.read_text()[-3000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module", params=MODES)
def notes(
    request: pytest.FixtureRequest, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NotesApp]:
    app = NotesApp(server, request.param, tmp_path_factory.mktemp("notes"))
    try:
        yield app
    finally:
        app.stop()


def browser(base_url: str = "") -> httpx.Client:
    """One cookie jar for both servers: cookies are per host, not per port."""
    return httpx.Client(base_url=base_url, timeout=30, follow_redirects=False, verify=TLS)


def sign_in(server: Server, role: str | None = None) -> tuple[httpx.Client, str]:
    c = browser(server.url)
    if role is None:
        email = unique_email("notes")
        assert register(c, email).status_code == 201  # a viewer
    else:
        _, email = create_user(server, role)
    r = c.post(f"{server.url}/api/auth/login", json={"email": email, "password": STRONG})
    assert r.status_code == 200, r.text
    return c, email


def csrf_header(c: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": c.cookies.get("bastion_csrf") or ""}


def test_protected_route_redirects_to_login_with_callback(notes: NotesApp) -> None:
    with browser() as c:
        r = c.get(f"{notes.url}/notes/mine?x=1")
        assert r.status_code == 302
        assert r.headers["location"] == "/login?callbackUrl=/notes/mine%3Fx%3D1"
        assert c.get(f"{notes.url}/notesx").status_code == 404  # not under /notes
        assert c.get(f"{notes.url}/login").status_code == 200
        r = c.get(f"{notes.url}/api/notes")
        assert r.status_code == 401 and r.json()["error"] == "unauthenticated"


def test_callback_url_is_never_off_site(notes: NotesApp) -> None:
    with browser() as c:
        r = c.get(f"{notes.url}/notes/%2F%2Fevil.example")
        location = r.headers["location"]
        assert location.startswith("/login?callbackUrl=/")
        assert not location.split("callbackUrl=", 1)[1].startswith("//")


def test_signed_in_user_passes_and_is_sent_home_from_login(notes: NotesApp, server: Server) -> None:
    c, email = sign_in(server)
    with closing(c):
        r = c.get(f"{notes.url}/notes")
        assert r.status_code == 200 and email in r.text
        r = c.get(f"{notes.url}/login")
        assert r.status_code == 302 and r.headers["location"] == "/notes"
        me = c.get(f"{notes.url}/api/me").json()
        assert me["email"] == email and me["role"] == "viewer" and me["via"] == "cookie"


def test_viewer_may_read_but_not_write_or_delete(notes: NotesApp, server: Server) -> None:
    c, _ = sign_in(server)
    with closing(c):
        assert c.get(f"{notes.url}/api/notes").status_code == 200
        r = c.post(f"{notes.url}/api/notes", json={"text": "x"}, headers=csrf_header(c))
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        r = c.delete(f"{notes.url}/api/notes/1", headers=csrf_header(c))
        assert r.status_code == 403
        assert c.get(f"{notes.url}/api/admin/stats").status_code == 403


def test_editor_writes_need_the_csrf_token(notes: NotesApp, server: Server) -> None:
    c, _ = sign_in(server, "editor")
    with closing(c):
        r = c.post(f"{notes.url}/api/notes", json={"text": "hello"})
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
        r = c.post(
            f"{notes.url}/api/notes", json={"text": "hello"}, headers={"X-CSRF-Token": "forged"}
        )
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
        r = c.post(f"{notes.url}/api/notes", json={"text": "hello"}, headers=csrf_header(c))
        assert r.status_code == 201, r.text
        note = r.json()["id"]
        assert any(n["id"] == note for n in c.get(f"{notes.url}/api/notes").json()["notes"])
        r = c.delete(f"{notes.url}/api/notes/{note}", headers=csrf_header(c))
        assert r.status_code == 204
        assert c.get(f"{notes.url}/api/admin/stats").status_code == 403


def test_require_role_admin(notes: NotesApp, server: Server) -> None:
    c, _ = sign_in(server, "admin")
    with closing(c):
        assert c.get(f"{notes.url}/api/admin/stats").status_code == 200


def test_signed_out_session_stops_working(notes: NotesApp, server: Server) -> None:
    """In-process sees the logout at once; remote within its cache time (0.5 s here)."""
    c, _ = sign_in(server)
    with closing(c):
        token = c.cookies.get("bastion_session")
        assert c.get(f"{notes.url}/api/me").status_code == 200
        assert c.post(f"{server.url}/api/auth/logout", headers=csrf_header(c)).status_code == 204
    if notes.mode == "remote":
        time.sleep(0.6)
    with browser() as stale:
        r = stale.get(f"{notes.url}/api/me", headers={"Cookie": f"bastion_session={token}"})
        assert r.status_code == 401
        r = stale.get(f"{notes.url}/notes", headers={"Cookie": f"bastion_session={token}"})
        assert r.status_code == 302


def test_bearer_access_token_from_bastion(notes: NotesApp, server: Server) -> None:
    _, email = create_user(server, "editor")
    with browser() as c:
        r = c.post(
            f"{server.url}/api/auth/token",
            data={"grant_type": "password", "username": email, "password": STRONG},
        )
        if r.status_code == 404:
            pytest.skip("this Bastion issues no access tokens")
        assert r.status_code == 200, r.text
        bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
        me = c.get(f"{notes.url}/api/me", headers=bearer).json()
        assert me["via"] == "bearer" and me["role"] == "editor"
        # Bearer requests carry no ambient credential: no CSRF token needed.
        r = c.post(f"{notes.url}/api/notes", json={"text": "via api"}, headers=bearer)
        assert r.status_code == 201, r.text
        forged = r.request.headers["authorization"][:-4] + "AAAA"
        r = c.get(f"{notes.url}/api/me", headers={"Authorization": forged})
        assert r.status_code == 401


# The JWKS verifier on its own, with keys made here -----------------------------------


class JwksServer:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, public_key: Any, kid: str, alg: str) -> None:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(public_key))
        self.keys.append(jwk | {"kid": kid, "alg": alg, "use": "sig"})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    srv = JwksServer()
    try:
        yield srv
    finally:
        srv.close()


ISS = "https://auth.example"


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISS, "aud": "bastion", "sub": "u1", "iat": now, "exp": now + 60}
    base |= {"role": "editor", "sid": "s1", "ver": 0, "jti": "j1"}
    return {k: v for k, v in (base | over).items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_jwks_verifier_accepts_valid_and_refuses_forged_tokens(jwks: JwksServer) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    jwks.add(key.public_key(), "k1", "EdDSA")
    v = JwksVerifier(jwks.url, issuer=ISS)
    sign = lambda c, **h: jwt.encode(c, key, algorithm="EdDSA", headers={"kid": "k1"} | h)  # noqa: E731
    assert v.verify(sign(claims()))["sub"] == "u1"  # type: ignore[index]
    assert v.verify(sign(claims(exp=int(time.time()) - 5))) is None  # expired
    assert v.verify(sign(claims(exp=None))) is None  # no exp
    assert v.verify(sign(claims(aud="other"))) is None
    assert v.verify(sign(claims(iss="https://evil.example"))) is None
    assert v.verify(sign(claims(), kid="unknown")) is None
    good = sign(claims())
    assert v.verify(good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")) is None
    # alg=none and HMAC with the public key as the secret (algorithm confusion).
    header = b64(json.dumps({"alg": "none", "kid": "k1", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    assert v.verify(f"{header}.{payload}.") is None
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert v.verify(f"{header}.{payload}.{b64(mac)}") is None
    assert v.verify("not.a.jwt") is None


def test_jwks_verifier_follows_key_rotation_but_limits_refetches(jwks: JwksServer) -> None:
    old = ed25519.Ed25519PrivateKey.generate()
    jwks.add(old.public_key(), "old", "EdDSA")
    v = JwksVerifier(jwks.url, issuer=ISS, min_refresh=0)
    assert v.verify(jwt.encode(claims(), old, algorithm="EdDSA", headers={"kid": "old"}))
    new = ec.generate_private_key(ec.SECP256R1())
    jwks.add(new.public_key(), "new", "ES256")
    token = jwt.encode(claims(), new, algorithm="ES256", headers={"kid": "new"})
    assert v.verify(token) is not None  # unknown kid: one refetch finds the new key
    slow = JwksVerifier(jwks.url, issuer=ISS, min_refresh=60)
    assert slow.verify(token) is not None
    hits = jwks.hits
    for i in range(5):
        forged = jwt.encode(claims(), new, algorithm="ES256", headers={"kid": f"x{i}"})
        assert slow.verify(forged) is None
    assert jwks.hits - hits <= 1  # forged kids cannot make every request hit Bastion


def test_jwks_verifier_fails_closed_when_keys_cannot_be_fetched() -> None:
    from bastion.integrations import BastionUnavailable

    v = JwksVerifier(f"http://127.0.0.1:{free_port()}/jwks.json", issuer=ISS, timeout=1)
    key = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(claims(), key, algorithm="EdDSA", headers={"kid": "k1"})
    with pytest.raises(BastionUnavailable):
        v.verify(token)


def test_remote_mode_fails_closed_when_bastion_is_down(tmp_path: Path) -> None:
    """A protected page must not open (nor look anonymous) when Bastion cannot answer."""
    dead = Server("sqlite:///unused.db", tmp_path)  # never started: nothing listens
    app = NotesApp(dead, "remote", tmp_path / "notes")
    try:
        with browser() as c:
            r = c.get(f"{app.url}/notes", headers={"Cookie": "bastion_session=abc"})
            assert r.status_code == 503
            r = c.get(f"{app.url}/api/notes", headers={"Cookie": "bastion_session=abc"})
            assert r.status_code == 503
    finally:
        app.stop()
