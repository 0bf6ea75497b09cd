"""Helpers of the admin, audit and integration tests: admins made with the CLI, and
SQL run straight against a server's database (sqlite3 or psql), as an attacker with
database access or an operator would."""

from __future__ import annotations

import sqlite3
import subprocess
from urllib.parse import urlsplit

import httpx

from tests.support import PG_HOST, STRONG, Server, csrf, login, unique_email


def create_user(server: Server, role: str = "admin", email: str | None = None) -> tuple[str, str]:
    """``bastion create-user --role R --password-stdin``; returns (id, email)."""
    email = email or unique_email(role)
    r = server.cli(
        "create-user", "--email", email, "--role", role, "--password-stdin", stdin=STRONG + "\n"
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip(), email


def signed_in(server: Server, email: str) -> httpx.Client:
    """A client signed in as ``email`` that sends its CSRF token on every request."""
    c = server.client()
    r = login(c, email)
    assert r.status_code == 200, r.text
    c.headers.update(csrf(c))
    return c


def admin_client(server: Server) -> tuple[httpx.Client, str]:
    user_id, email = create_user(server, "admin")
    return signed_in(server, email), user_id


def sql(server: Server, statement: str, params: tuple[object, ...] = ()) -> list[tuple[str, ...]]:
    """Run one statement on the server's database; rows as strings. ``?`` placeholders
    on both backends (literal-quoted for psql)."""
    url = server.database_url
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        with sqlite3.connect(path, timeout=15) as conn:
            rows = conn.execute(statement, params).fetchall()
        return [tuple("" if v is None else str(v) for v in row) for row in rows]
    for p in params:
        literal = "NULL" if p is None else "'" + str(p).replace("'", "''") + "'"
        statement = statement.replace("?", literal, 1)
    db = urlsplit(url).path.lstrip("/")
    out = subprocess.run(
        ["psql", "-h", PG_HOST, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qAtF", "\t"]
        + ["-c", statement],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [tuple(line.split("\t")) for line in out.splitlines() if line]


def is_sqlite(server: Server) -> bool:
    return server.database_url.startswith("sqlite")
