"""A corpus of bad input applied to every endpoint of the OpenAPI document (issue 11).

Oversized bodies and headers, deep JSON, NUL bytes, invalid UTF-8 and lone surrogates,
overlong strings, CRLF, SQL and template injection strings, wrong types, in every field
of every body, anonymous and with an admin's cookie session (so that authenticated
endpoints get past authentication to their input). Every answer is a 4xx in the
``{"error", "message"}`` envelope, or the normal success where the input is legitimately
acceptable (a name like ``{{7*7}}`` is a name); never a 5xx; an endpoint that rejected
everything changed nothing; and Unicode lookalike emails never reach another account.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PG_UP
from tests.support import (
    STRONG,
    TLS,
    Server,
    database,
    db_query,
    login,
    register,
    unique_email,
)

HTML_ROUTES = ("/api/auth/oauth/{provider}/authorize", "/api/auth/oauth/{provider}/callback")
# Operations that end the caller's session whatever the body (they take none).
NO_BODY_SESSION_ENDERS = {
    ("POST", "/api/auth/logout"),
    ("POST", "/api/auth/sessions/revoke-all"),
    ("POST", "/api/auth/sessions/revoke-others"),
}
BIG = 1_100_000  # over the 1 MiB body limit

STRINGS: dict[str, str] = {
    "nul": "abc\x00def",
    "overlong": "A" * 100_000,
    "crlf": "x@example.com\r\nBcc: victim@example.com",
    "crlf_name": "Mallory\r\nSet-Cookie: bastion_session=x",
    "sql_or": "' OR '1'='1' --",
    "sql_drop": "'; DROP TABLE users; --",
    "sql_union": "x@example.com' UNION SELECT password_hash FROM users --",
    "jinja": "{{7*7}}{% for x in range(9**9) %}{% endfor %}",
    "dollar": "${7*7}#{7*7}<%= 7*7 %>",
    "html": "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "format": "%s%s%s%n%x{0}{1}",
    "traversal": "../../../../etc/passwd",
    "rtl": "\u202eexample.com@evil.com",
    "zero_width": "a\u200b\u200d@example.com",
    "emoji": "\U0001f600" * 300,
    "control": "a\x1b[31mred\x07",
    "unicode_max": "\U0010ffff\ufffe\uffff",
}
# Raw JSON (lone surrogates cannot be encoded by json.dumps into valid UTF-8).
RAW_VALUES = {"surrogate": '"a\\ud800b"', "surrogate_pair_half": '"\\udfff"'}
WRONG_TYPES: dict[str, Any] = {
    "number": 1e308,
    "bigint": 10**400,
    "list": ["a"],
    "object": {"$ne": None},
    "null": None,
    "bool": True,
}


@dataclass
class Operation:
    method: str
    path: str
    fields: dict[str, str]  # field -> a valid-looking value
    media: list[str]  # request body media types

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def baseline_value(field: str) -> str:
    return {
        "email": unique_email("bad"),
        "password": STRONG,
        "current_password": "Wrong-Password-1!",
        "new_password": STRONG,
        "name": "Bad Input",
        "role": "viewer",
        "grant_type": "password",
        "username": "nobody@example.com",
        "code": "123456",
    }.get(field, "not-a-real-token")


def operations(server: Server) -> list[Operation]:
    doc = httpx.get(server.url + "/api/openapi.json", verify=TLS).json()
    components = doc.get("components", {}).get("schemas", {})
    found = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            media: list[str] = []
            fields: dict[str, str] = {}
            content = op.get("requestBody", {}).get("content", {})
            for mtype, spec in content.items():
                media.append(mtype)
                schema = spec.get("schema", {})
                if "$ref" in schema:
                    schema = components[schema["$ref"].rsplit("/", 1)[1]]
                for name in schema.get("properties", {}):
                    fields[name] = baseline_value(name)
            found.append(Operation(method.upper(), path, fields, media))
    return found


@pytest.fixture(scope="module")
def bad_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("bad")
    backend = "postgres" if PG_UP else "sqlite"
    with database(backend, tmp) as url:
        srv = Server(url, tmp).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def people(bad_server: Server) -> dict[str, str]:
    admin = unique_email("bad-admin")
    done = bad_server.cli(
        "create-user", "--email", admin, "--role", "admin", "--password-stdin", stdin=STRONG
    )
    assert done.returncode == 0, done.stderr
    victim = f"victim-{unique_email('i')}"
    with bad_server.client() as c:
        r = register(c, victim)
        assert r.status_code == 201, r.text
        victim_id = r.json()["user"]["id"]
    return {
        "admin": admin,
        "admin_id": done.stdout.strip(),
        "victim": victim,
        "victim_id": victim_id,
    }


def snapshot(server: Server, people: dict[str, str]) -> dict[str, Any]:
    """What a rejected request must not change (lockout counters and rate limits aside)."""
    counts = {}
    for table in (
        "users",
        "sessions",
        "outbox",
        "one_time_tokens",
        "refresh_tokens",
        "backup_codes",
        "oauth_accounts",
    ):
        counts[table] = db_query(server.database_url, f"SELECT count(*) FROM {table}")[0][0]
    rows = db_query(
        server.database_url,
        "SELECT id, email, name, password_hash, role, email_verified, mfa_enabled, "
        "token_version FROM users WHERE id IN ($1, $2) ORDER BY id",
        people["admin_id"],
        people["victim_id"],
    )
    return {"counts": counts, "people": rows}


def fill_path(path: str, people: dict[str, str]) -> str:
    return (
        path.replace("{user_id}", people["victim_id"])
        .replace("{session_id}", "no-such-session")
        .replace("{provider}", "github")
    )


def attacks(op: Operation) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, httpx request kwargs) for one operation."""
    json_ok = not op.media or "application/json" in op.media
    yield (
        "oversized_body",
        {
            "content": b'{"x": "' + b"a" * BIG + b'"}',
            "headers": {"content-type": "application/json"},
        },
    )
    yield "oversized_header", {"headers": {"X-Padding": "p" * 60_000}}
    yield "many_headers", {"headers": [(f"X-H{i}", "v") for i in range(500)]}
    yield (
        "deep_json_array",
        {"content": "[" * 50_000 + "]" * 50_000, "headers": {"content-type": "application/json"}},
    )
    yield (
        "deep_json_object",
        {
            "content": '{"a":' * 20_000 + "1" + "}" * 20_000,
            "headers": {"content-type": "application/json"},
        },
    )
    yield (
        "invalid_utf8",
        {
            "content": b'{"email": "\xff\xfe\xfd", "token": "\xc3\x28"}',
            "headers": {"content-type": "application/json"},
        },
    )
    yield (
        "not_json",
        {"content": b"\x00\x01garbage{", "headers": {"content-type": "application/json"}},
    )
    yield "json_array", {"json": [1, 2, 3]}
    yield (
        "xml_body",
        {
            "content": b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM "
            b"'file:///etc/passwd'>]><x>&e;</x>",
            "headers": {"content-type": "application/xml"},
        },
    )
    yield "nul_in_query", {"params": {"q": "a\x00b", "callbackUrl": "/\x00", "limit": "1\x00"}}
    yield "bad_cookie", {"headers": {"Cookie": "bastion_session=" + "%ff" * 100 + '; x="\\'}}
    yield "bad_bearer", {"headers": {"Authorization": "Bearer " + "e30." * 3000}}
    for field in op.fields:
        for kind, value in STRINGS.items():
            body = {**op.fields, field: value}
            if json_ok:
                yield f"{field}:{kind}", {"json": body}
            if "application/x-www-form-urlencoded" in op.media:
                yield f"{field}:{kind}:form", {"data": body}
        for kind, raw in RAW_VALUES.items():
            others = ", ".join(
                f'"{k}": {json.dumps(v)}' for k, v in op.fields.items() if k != field
            )
            text = "{" + (others + ", " if others else "") + f'"{field}": {raw}' + "}"
            yield (
                f"{field}:{kind}",
                {"content": text.encode(), "headers": {"content-type": "application/json"}},
            )
        for kind, wrong in WRONG_TYPES.items():
            if kind == "bigint":
                others = ", ".join(
                    f'"{k}": {json.dumps(v)}' for k, v in op.fields.items() if k != field
                )
                text = "{" + (others + ", " if others else "") + f'"{field}": {wrong}' + "}"
                yield (
                    f"{field}:{kind}",
                    {"content": text.encode(), "headers": {"content-type": "application/json"}},
                )
            else:
                yield f"{field}:{kind}", {"json": {**op.fields, field: wrong}}
    if op.fields:
        yield "fields_missing", {"json": {}}
        yield (
            "fields_repeated_form",
            {
                "content": b"&".join(f"{k}=a&{k}=b".encode() for k in op.fields),
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
        )


def check_answer(op: Operation, name: str, r: httpx.Response) -> str | None:
    where = f"{op.label} [{name}] -> {r.status_code}: {r.text[:200]!r}"
    if r.status_code >= 500:
        return where
    if r.status_code >= 400 and op.path not in HTML_ROUTES:
        try:
            body = r.json()
        except ValueError:
            return "not JSON: " + where
        if not isinstance(body, dict) or not {"error", "message"} <= body.keys():
            return "not the error envelope: " + where
    return None


_local = threading.local()


def client_for_thread(server: Server) -> httpx.Client:
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None or str(client.base_url).rstrip("/") != server.url:
        client = _local.client = server.client()
    return client


def send_attack(
    server: Server,
    method: str,
    path: str,
    mine: dict[str, str],
    item: tuple[str, dict[str, Any]],
) -> tuple[str, httpx.Response | str]:
    name, kw = item
    extra = kw.pop("headers", {})
    if isinstance(extra, dict):
        extra = {**mine, **extra}
    else:
        extra = list(mine.items()) + extra
    one = client_for_thread(server)
    one.cookies.clear()  # only the Cookie header of ``mine``, never a stored one
    try:
        return name, one.request(method, path, headers=extra, **kw)
    except httpx.RemoteProtocolError as exc:  # the server closed on us
        return name, f"connection dropped: {exc}"


def run_corpus(
    server: Server, people: dict[str, str], authenticated: bool
) -> tuple[int, list[str]]:
    problems: list[str] = []
    sent = 0
    for op in operations(server):
        if authenticated and (op.method, op.path) in NO_BODY_SESSION_ENDERS:
            continue
        with server.client() as c:
            headers: dict[str, str] = {}
            if authenticated:
                assert login(c, people["admin"]).status_code == 200
                headers = {"X-CSRF-Token": c.cookies["bastion_csrf"]}
            before = snapshot(server, people)
            accepted = []

            cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())

            mine = {**headers, "Cookie": cookie} if cookie else dict(headers)
            send = partial(send_attack, server, op.method, fill_path(op.path, people), mine)
            with ThreadPoolExecutor(4) as pool:
                for name, r in pool.map(send, attacks(op)):
                    if isinstance(r, str):
                        problems.append(f"{op.label} [{name}] {r}")
                        continue
                    sent += 1
                    if (problem := check_answer(op, name, r)) is not None:
                        problems.append(problem)
                    if r.status_code < 400:
                        accepted.append(name)
            after = snapshot(server, people)
        if not accepted and before != after:
            problems.append(
                f"{op.label}: state changed although every input was rejected: {before} -> {after}"
            )
        if before["people"] != after["people"] and "{user_id}" not in op.path:
            problems.append(f"{op.label}: admin or victim row changed: {before} -> {after}")
    return sent, problems


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "admin-cookie"])
def test_bad_input_corpus_gets_4xx_envelope_never_5xx_and_changes_nothing(
    bad_server: Server, people: dict[str, str], authenticated: bool
) -> None:
    sent, problems = run_corpus(bad_server, people, authenticated)
    print(f"bad input ({'admin' if authenticated else 'anonymous'}): {sent} requests")
    assert not problems, "\n".join(problems[:60])
    assert sent > 1000
    with bad_server.client() as c:
        assert login(c, people["victim"]).status_code == 200
    assert "Traceback" not in bad_server.logs()


LOOKALIKES = {
    "dotless_i": "ı",  # U+0131, the 2019 GitHub takeover
    "dotted_capital_i": "İ",  # U+0130, lowercases to i + combining dot
    "fullwidth_i": "ｉ",  # U+FF49, NFKC folds it to i
    "cyrillic_i": "і",  # U+0456
    "roman_numeral_one": "ⅰ",  # U+2170, NFKC folds it to i
}


@pytest.mark.parametrize("kind", list(LOOKALIKES))
def test_unicode_lookalike_email_never_collides_with_existing_account(
    bad_server: Server, people: dict[str, str], kind: str
) -> None:
    victim = people["victim"]
    lookalike = victim.replace("i", LOOKALIKES[kind], 1)
    assert lookalike != victim
    mails_before = db_query(
        bad_server.database_url, "SELECT count(*) FROM outbox WHERE recipient = $1", victim
    )[0][0]
    with bad_server.client() as c:
        # Registering it is either refused as invalid or creates a *different* account.
        r = register(c, lookalike, password="Other-Secret-77!")
        assert r.status_code in (201, 422), r.text
        if r.status_code == 201:
            assert r.json()["user"]["id"] != people["victim_id"]
            assert r.json()["user"]["email"] != victim
    with bad_server.client() as c:
        # The victim's password does not open anything through the lookalike.
        r = login(c, lookalike)
        assert r.status_code in (401, 422), r.text
        # A reset asked for the lookalike never mails (or resets) the victim.
        r = c.post("/api/auth/password/forgot", json={"email": lookalike})
        assert r.status_code in (202, 422), r.text
    mails_after = db_query(
        bad_server.database_url, "SELECT count(*) FROM outbox WHERE recipient = $1", victim
    )[0][0]
    assert mails_after == mails_before
    rows = db_query(
        bad_server.database_url, "SELECT email FROM users WHERE id = $1", people["victim_id"]
    )
    assert rows == [(victim,)]
    with bad_server.client() as c:
        assert login(c, victim).status_code == 200


def test_upper_case_email_is_the_same_account_not_a_new_one(
    bad_server: Server, people: dict[str, str]
) -> None:
    with bad_server.client() as c:
        assert register(c, people["victim"].upper()).status_code == 409
        assert login(c, people["victim"].upper()).status_code == 200


def test_crlf_in_email_and_name_rejected_and_no_mail_queued(
    bad_server: Server, people: dict[str, str]
) -> None:
    outbox = "SELECT count(*) FROM outbox"
    before = db_query(bad_server.database_url, outbox)[0][0]
    with bad_server.client() as c:
        for email in (
            f"{people['victim']}\r\nBcc: evil@example.com",
            f"evil@example.com\nTo: {people['victim']}",
            f"{people['victim']}%0d%0aBcc:evil@example.com",
        ):
            r = c.post("/api/auth/password/forgot", json={"email": email})
            assert r.status_code == 422, (email, r.text)
            assert register(c, email).status_code == 422
        r = register(c, unique_email(), name="Eve\r\nBcc: evil@example.com")
        assert r.status_code == 422, r.text
    assert db_query(bad_server.database_url, outbox)[0][0] == before


def test_malformed_http_is_refused_by_the_protocol_layer_and_server_stays_up(
    bad_server: Server,
) -> None:
    """Bytes no HTTP parser accepts (a DEL in a header, a bare CR, a bad request line)
    are refused with 400 before the application; the server keeps serving."""
    import socket

    host, port = "127.0.0.1", bad_server.port
    for raw in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: a=\x7f\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\nzz\r\n",
    ):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(raw)
            answer = sock.recv(200)
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line[:9] == b"HTTP/1.1 " and status_line[9:10] == b"4", (raw[:60], answer)
    assert httpx.get(bad_server.url + "/healthz", verify=TLS).status_code == 200
