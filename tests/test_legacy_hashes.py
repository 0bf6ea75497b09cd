"""A bcrypt hash imported from an older system signs in and is upgraded (SPEC §4)."""

from __future__ import annotations

import bcrypt

from tests.support import STRONG, Server, db_query, login, unique_email


def test_bcrypt_user_logs_in_and_is_rehashed_to_argon2id(server: Server) -> None:
    email = unique_email("legacy")
    out = server.cli("create-user", "--email", email, "--password-stdin", stdin=STRONG + "\n")
    assert out.returncode == 0, out.stderr
    user_id = out.stdout.strip()
    legacy = bcrypt.hashpw(b"Legacy-Pass-1!", bcrypt.gensalt(rounds=4)).decode()
    param = "$1" if server.database_url.startswith("postgres") else "?"
    db_query(
        server.database_url,
        f"UPDATE users SET password_hash = {param} WHERE id = {'$2' if param == '$1' else '?'}",
        legacy,
        user_id,
    )
    with server.client() as c:
        assert login(c, email, "Wrong-Pass-1!").status_code == 401
        r = login(c, email, "Legacy-Pass-1!")
        assert r.status_code == 200, r.text
    (stored,) = db_query(
        server.database_url,
        f"SELECT password_hash FROM users WHERE id = {param}",
        user_id,
    )[0]
    assert stored.startswith("$argon2id$")
    with server.client() as c:
        assert login(c, email, "Legacy-Pass-1!").status_code == 200
